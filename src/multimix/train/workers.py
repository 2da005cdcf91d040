"""Independent tasks in worker processes that end with their parent, however the parent ends.

``concurrent.futures`` and ``multiprocessing.Pool`` leave their workers running when the parent is
killed (SIGKILL, or SIGTERM from ``timeout``, a batch scheduler or ``docker stop``): they would go on
writing into run folders that a rerun then trains into too. Here each task gets its own spawned
process, which

- asks the kernel for SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``), and also watches its
  parent's pid (everywhere else), so no worker outlives its parent; SIGTERM ends it cleanly;
- ignores SIGINT: Ctrl-C reaches the parent, which stops the workers itself, so the terminal gets
  one message instead of a traceback per worker;
- sends its log records to the parent through the same pipe as its result; the parent emits them
  through its own handlers (above a progress bar, into the same log file).

When the parent leaves :func:`run_tasks` early — a task failed, Ctrl-C, SIGTERM turned into an
exception — every live worker is terminated before the exception goes on.
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, Literal

_PR_SET_PDEATHSIG = 1

# What a worker reports at its end: its task's return value, or the exception and its traceback text.
_Result = tuple[Literal["ok"], Any] | tuple[Literal["error"], BaseException, str]


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised in a worker (its ``__cause__``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)

    def __str__(self) -> str:
        return "\n" + self.args[0]


class WorkerDied(RuntimeError):
    """A worker process ended without reporting a result (killed, out of memory, crashed)."""


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the request above: nobody to work for
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


class _Channel:
    """The worker's end of its pipe: log records and the result, one message at a time."""

    def __init__(self, conn: Connection[tuple[Any, ...], Any]) -> None:
        self.conn = conn
        self.lock = threading.Lock()  # log records may come from other threads than the result

    def send(self, message: tuple[Any, ...]) -> None:
        with self.lock:
            self.conn.send(message)

    def put_nowait(self, record: logging.LogRecord) -> None:  # what QueueHandler calls
        self.send(("log", record))


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # An exception, not death on the spot: `finally` blocks and exit handlers run, so the run folder's
    # lock and the semaphores that tqdm and torch registered are released properly.
    raise SystemExit(128 + signum)


def _worker(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    conn: Connection[tuple[Any, ...], Any],
    level: int,
    parent_pid: int,
) -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    channel = _Channel(conn)
    root = logging.getLogger()
    # QueueHandler formats the record and drops what won't pickle. It only ever calls put_nowait;
    # typeshed's _QueueLike protocol also asks for get(), which only QueueListener uses.
    handler = logging.handlers.QueueHandler(channel)  # type: ignore[arg-type]
    root.handlers[:] = [handler]
    root.setLevel(level)
    result: _Result
    try:
        result = ("ok", fn(*args))
    except SystemExit:  # stopped by the parent (or its death): nobody is waiting for a result
        raise
    except BaseException as exc:
        result = ("error", exc, traceback.format_exc())
    try:
        channel.send(result)
    except Exception as exc:  # the result or the exception does not pickle: send what can be said
        text = result[2] if result[0] == "error" else traceback.format_exc()
        channel.send(
            ("error", RuntimeError(f"the worker could not send its result back ({exc})"), text)
        )


def run_tasks(
    fn: Callable[..., Any],
    tasks: Sequence[tuple[Any, ...]],
    *,
    jobs: int,
    on_done: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """``[fn(*task) for task in tasks]``, at most ``jobs`` at a time, each in its own process.

    ``fn`` must be importable by name (a module-level function) and its arguments and result
    picklable. ``on_done(i, result)`` runs in the parent as task i ends.
    The first task to raise stops the others; its exception is re-raised here, with the worker's
    traceback as its cause.
    """
    # A fresh interpreter: no forked torch or thread state
    ctx = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    results: dict[int, Any] = {}
    running: dict[
        int, tuple[BaseProcess, Connection[Any, Any]]
    ] = {}  # task index -> (process, connection)
    pending = list(range(len(tasks)))
    try:
        while pending or running:
            while pending and len(running) < jobs:
                i = pending.pop(0)
                receive, send = ctx.Pipe(duplex=False)
                process: BaseProcess = ctx.Process(
                    target=_worker,
                    args=(fn, tuple(tasks[i]), send, level, os.getpid()),
                    name=f"multimix-worker-{i}",
                    daemon=True,
                )
                process.start()
                send.close()  # the child holds its end; EOF on ours then means the child is gone
                running[i] = (process, receive)
            for ready in wait([conn for _, conn in running.values()]):
                i = next(i for i, (_, c) in running.items() if c is ready)
                process, conn = running[i]
                try:
                    message = conn.recv()
                except EOFError:
                    process.join()
                    raise WorkerDied(
                        f"task {i}: its worker process ended with exit code {process.exitcode} "
                        "without a result (killed, or out of memory?)"
                    ) from None
                if message[0] == "log":
                    record = message[1]
                    logging.getLogger(record.name).handle(record)
                    continue
                process.join()
                conn.close()
                del running[i]
                if message[0] == "error":
                    _, exc, text = message
                    raise exc from RemoteTraceback(text)
                results[i] = message[1]
                if on_done is not None:
                    on_done(i, message[1])
    finally:
        _stop(process for process, _ in running.values())
    return [results[i] for i in range(len(tasks))]


def _stop(processes: Iterable[BaseProcess]) -> None:
    alive = [p for p in processes if p.is_alive()]
    for p in alive:
        p.terminate()
    deadline = time.monotonic() + 10
    for p in alive:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


__all__ = ["run_tasks", "RemoteTraceback", "WorkerDied"]
