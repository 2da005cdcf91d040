"""The worker pool (multimix.train.workers): spawned processes, hence marked slow. Builtins as tasks:
spawned workers import them by name, as they would a module-level function. Workers ending with
their parent under `multimix compare`: test_cli.py."""

from __future__ import annotations

import os

import pytest


@pytest.mark.slow
def test_run_tasks_returns_in_order_and_relays_logs(caplog):
    import logging
    import math

    from multimix.train.workers import run_tasks

    done = []
    assert run_tasks(
        math.sqrt, [(16,), (9,), (4,)], jobs=2, on_done=lambda i, r: done.append(i)
    ) == [4.0, 3.0, 2.0]
    assert sorted(done) == [0, 1, 2]
    with caplog.at_level(logging.INFO):
        run_tasks(logging.warning, [("from a worker: %s", "hello")], jobs=1)
    assert "from a worker: hello" in caplog.text


@pytest.mark.slow
def test_run_tasks_errors():
    import math

    from multimix.train.workers import RemoteTraceback, WorkerDied, run_tasks

    with pytest.raises(ValueError, match="math domain error") as exc:
        run_tasks(math.sqrt, [(1,), (-1,)], jobs=1)
    assert isinstance(exc.value.__cause__, RemoteTraceback)  # the worker's traceback, for debugging
    assert "ValueError: math domain error" in str(exc.value.__cause__)
    with pytest.raises(WorkerDied, match="exit code 3 without a result"):
        run_tasks(os._exit, [(3,)], jobs=1)
