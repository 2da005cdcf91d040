"""One run per folder: an exclusive lock held on the folder for the lifetime of the process using it.

The lock is ``flock`` on ``<folder>/.lock``: the kernel releases it when the process ends, however it
ends (SIGKILL included), so a killed run never leaves a stale lock behind. The holder writes who it
is into the file, so a second run on the same folder can say which process to wait for.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from multimix.train.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs go unlocked there (said once, in the log)
    _HAVE_FLOCK = False
else:
    _HAVE_FLOCK = True

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class FolderInUse(RuntimeError):
    """Another live process holds the run folder; the message names it."""


class RunLock:
    """Exclusive use of a run folder, as a context manager::

        with RunLock(out):
            ...  # nobody else trains into, moves or resumes `out` meanwhile

    Entering creates the folder if needed (a bad path raises :class:`ConfigError` naming ``argument``)
    and removes temporary files a killed writer left in it. If the block fails before anything but
    the lock was written into a folder it created, the folder is removed again.
    """

    def __init__(self, folder: str | Path, *, argument: str = "out") -> None:
        self.folder = Path(folder)
        #: What named the folder, for messages. Either an option's key ("out", whose flag is --out) or
        #: a positional argument's metavar in capitals ("RUN_DIR"), which has no other to choose.
        self.argument = argument
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> RunLock:
        self._created = _make_folder(self.folder, self.argument)
        path = self.folder / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise ConfigError(
                f"invalid value for {self.argument}: cannot write into {self.folder} ({exc.strerror})"
            ) from None
        try:
            if not _HAVE_FLOCK:
                log.warning(
                    "this platform has no flock: %s is not protected from a second run", self.folder
                )
            else:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            other = f", or choose another --{self.argument}" if self.argument.islower() else ""
            raise FolderInUse(
                f"{self.folder} is in use by {holder}; wait for it to finish{other}"
            ) from None
        os.ftruncate(fd, 0)
        # A command line in a non-UTF-8 locale may hold undecodable bytes (as surrogates)
        os.write(fd, _whoami().encode(errors="backslashreplace"))
        self._fd = fd
        # Left by a writer killed mid-write; we are the only writer now
        for tmp in self.folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is None:
            return
        if (
            exc_type is not None
            and self._created
            and [p.name for p in self.folder.iterdir()] == [LOCK_NAME]
        ):
            (self.folder / LOCK_NAME).unlink(missing_ok=True)  # nothing of this run to keep
            self.folder.rmdir()
        os.close(self._fd)  # closing releases the lock
        self._fd = None


def _make_folder(folder: Path, argument: str) -> bool:
    """Create ``folder`` (and parents); True if it did not exist. Bad paths raise ConfigError."""
    if folder.is_dir():
        return False
    problem = None
    if folder.is_symlink() and not folder.exists():
        problem = f"it is a symbolic link to {os.readlink(folder)}, which does not exist"
    elif folder.exists():
        problem = "it is a file, not a folder"
    else:
        try:
            folder.mkdir(parents=True)
            return True
        except FileExistsError:
            if folder.is_dir():  # created by someone else meanwhile
                return False
            problem = _blocking_part(folder)
        except NotADirectoryError:
            problem = _blocking_part(folder)
        except OSError as exc:
            problem = exc.strerror or type(exc).__name__
    raise ConfigError(
        f"invalid value for {argument}: {str(folder)!r} cannot be used as a run folder ({problem})"
    )


def _blocking_part(folder: Path) -> str:
    """Why ``folder`` cannot be made: the first part of its path that is a file or a dangling link."""
    for part in [*reversed(folder.parents), folder]:
        if part.is_symlink() and not part.exists():
            return f"{part} is a symbolic link to {os.readlink(part)}, which does not exist"
        if part.exists() and not part.is_dir():
            return f"{part} is a file, not a folder"
    return "a part of that path is not a folder"


def _whoami() -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    # python -m multimix.cli
    program = "multimix" if program in ("cli.py", "__main__.py") else program
    command = shlex.join([program, *sys.argv[1:]])
    return f"process {os.getpid()} on {socket.gethostname()} (started {started}: {command})"


__all__ = ["RunLock", "FolderInUse", "LOCK_NAME"]
