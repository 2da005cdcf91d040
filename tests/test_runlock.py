"""The run folder's lock (multimix.train.runlock), in this process. Two CLI runs on one folder, and a
killed run's lock: test_cli.py."""

from __future__ import annotations

import pytest

from multimix.train.runlock import FolderInUse, RunLock


def test_run_lock_in_process(tmp_path):
    # The second lock on a held folder is refused.
    with (
        RunLock(tmp_path / "a"),
        pytest.raises(FolderInUse, match=r"a is in use by process \d+ on .*; wait for it"),
        RunLock(tmp_path / "a"),
    ):
        pass
    with RunLock(tmp_path / "a"):  # released on leaving the block
        pass
    with pytest.raises(RuntimeError), RunLock(tmp_path / "b"):
        raise RuntimeError("failed before writing anything")
    assert not (tmp_path / "b").exists()  # the folder it created for nothing is gone again
