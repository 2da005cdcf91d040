"""multimix.train.run_folder: every file a run writes, their order, the rank-0 rule, opening a folder."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
import yaml

from multimix.train import checkpoint
from multimix.train.checkpoint import CheckpointError
from multimix.train.config import ConfigError, TrainConfig
from multimix.train.distributed import Dist
from multimix.train.run_folder import RunFolder
from multimix.train.runlock import FolderInUse


def _state(config: TrainConfig, epochs: int) -> dict:
    """A checkpoint-shaped state (what RunState.state_dict returns) with ``epochs`` records."""
    return {
        "config": config.to_dict(),
        "world_size": 1,
        "model": {"w": torch.full((2,), float(epochs))},
        "history": [{"epoch": e, "val_acc": 0.5} for e in range(1, epochs + 1)],
    }


@pytest.fixture
def config() -> TrainConfig:
    return TrainConfig.from_dict({"dataset": "toy", "epochs": 3})


@pytest.fixture
def writes(monkeypatch) -> list[str]:
    """The names of the files written, in order (the writes themselves are real)."""
    names: list[str] = []
    for fn in ("save", "write_text", "write_json"):
        real = getattr(checkpoint, fn)

        def spy(path, *args, _real=real, **kwargs):
            names.append(str(path).rsplit("/", 1)[-1])
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(checkpoint, fn, spy)
    return names


def test_an_improving_epoch_writes_best_then_checkpoint_then_metrics(tmp_path, config, writes):
    folder = RunFolder(tmp_path, Dist())
    folder.save_epoch(_state(config, 1), improved=True)
    folder.save_epoch(_state(config, 2), improved=False)
    assert writes == ["best.pt", "checkpoint.pt", "metrics.jsonl", "checkpoint.pt", "metrics.jsonl"]
    # Not overwritten by the epoch that did not improve
    assert checkpoint.load(tmp_path / "best.pt")["epoch"] == 1
    assert torch.equal(
        checkpoint.load(tmp_path / "checkpoint.pt")["model"]["w"], torch.full((2,), 2.0)
    )
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_config_metrics_and_summary_are_written_where_and_as_documented(tmp_path, config):
    folder = RunFolder(tmp_path / "new", Dist())
    folder.write_config({**config.to_dict(), "alpha": 2.0})
    folder.write_summary({"best": {"epoch": 1}})
    assert yaml.safe_load((tmp_path / "new" / "config.yaml").read_text())["alpha"] == 2.0
    assert json.loads((tmp_path / "new" / "summary.json").read_text()) == {"best": {"epoch": 1}}


def test_only_rank_0_writes(tmp_path, config):
    folder = RunFolder(tmp_path, Dist(rank=1, world_size=2))
    folder.write_config(config.to_dict())
    folder.save_epoch(_state(config, 1), improved=True)
    folder.write_metrics([{"epoch": 1}])
    folder.write_summary({})
    assert list(tmp_path.iterdir()) == []


def _open(path, config, *, resume):
    with contextlib.ExitStack() as stack:
        return RunFolder(path, Dist()).open(config, resume=resume, stack=stack)


def test_opening_a_new_folder_starts_a_new_run_and_resuming_reads_its_checkpoint(tmp_path, config):
    assert _open(tmp_path / "run", config, resume=False) is None
    RunFolder(tmp_path / "run", Dist()).save_epoch(_state(config, 1), improved=True)
    saved = _open(tmp_path / "run", config, resume=True)
    assert [r["epoch"] for r in saved["history"]] == [1]
    assert RunFolder(tmp_path / "run", Dist()).read_best_weights()["w"].tolist() == [1.0, 1.0]


def test_opening_refuses_what_cannot_continue(tmp_path, config):
    with pytest.raises(ConfigError, match=r"nothing to resume in .*: it holds no checkpoint.pt"):
        _open(tmp_path / "empty", config, resume=True)
    RunFolder(tmp_path, Dist()).save_epoch(_state(config, 1), improved=True)
    with pytest.raises(ConfigError, match=r"already holds a run .*pass --resume"):
        _open(tmp_path, config, resume=False)
    other = TrainConfig.from_dict({"dataset": "toy", "epochs": 3, "lr": 0.5})
    with pytest.raises(
        CheckpointError, match=r"other settings \(given vs saved\): lr: 0.5 vs 0.001"
    ):
        _open(tmp_path, other, resume=True)
    longer = TrainConfig.from_dict({"dataset": "toy", "epochs": 5})
    with pytest.raises(
        ConfigError, match=r"cannot resume .* with epochs 5: it was started for 3 epochs"
    ):
        _open(tmp_path, longer, resume=True)


def test_a_folder_in_use_is_refused_while_its_run_holds_it(tmp_path, config):
    with contextlib.ExitStack() as stack:
        RunFolder(tmp_path, Dist()).open(config, resume=False, stack=stack)
        with pytest.raises(FolderInUse):
            _open(tmp_path, config, resume=False)
    assert _open(tmp_path, config, resume=False) is None  # released with the stack
