"""multimix.train.state (RunState: the checkpoint format), built by multimix.train.components and
stepped by multimix.train.step — in this process, no subprocess."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import tiny_config
from multimix.train import checkpoint, state
from multimix.train.checkpoint import CheckpointError
from multimix.train.components import build_run, load_splits
from multimix.train.config import ConfigError, TrainConfig
from multimix.train.distributed import Dist
from multimix.train.state import STATE_VERSION, check_same_data, upgrade
from multimix.train.step import TrainData, TrainStep, steps_per_epoch

CPU = torch.device("cpu")


def _config() -> TrainConfig:
    """A MultiMix run with a teacher: every part of the state (generators, teacher) is exercised."""
    return tiny_config(method="multimix", epochs=3, mix_rows=64, teacher_momentum=0.9)


def _built(config: TrainConfig):
    splits = load_splits(config)
    data = TrainData.on(splits.train, splits.num_classes, splits.augment, CPU)
    run = build_run(
        config, splits, Dist(), CPU, steps_per_epoch=steps_per_epoch(len(data.y), config.batch_size)
    )
    return run, data


def _epoch(run, data) -> float:
    step = TrainStep(run.state, net=run.nets.train, data=data, config=run.state.config, device=CPU)
    loss = step.epoch(run.mixer_at(run.state.epoch + 1))
    run.state.history.append({"epoch": run.state.epoch + 1, "train_loss": loss})
    return loss


def _equal(a, b) -> bool:
    """Deep equality of state dicts: tensors by value, the rest by ==."""
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and torch.equal(a, b)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_a_state_saved_and_loaded_into_a_fresh_run_is_equal_and_continues_alike(tmp_path):
    config = _config()
    run, data = _built(config)
    _epoch(run, data)
    saved = run.state.state_dict()
    # Through the file, as a resumed run reads it
    checkpoint.save(tmp_path / "checkpoint.pt", saved)

    fresh, fresh_data = _built(config)
    # A fresh run starts elsewhere
    assert not _equal(fresh.state.state_dict()["model"], saved["model"])
    fresh.state.load_state_dict(checkpoint.load(tmp_path / "checkpoint.pt"))
    assert _equal(fresh.state.state_dict(), run.state.state_dict())
    assert fresh.state.epoch == 1

    # The next epoch draws the same batches, mixing weights and teacher updates in both.
    assert _epoch(fresh, fresh_data) == _epoch(run, data)
    assert _equal(fresh.state.state_dict(), run.state.state_dict())


def test_the_checkpoint_keys_are_those_documented():
    run, _ = _built(_config())
    state = run.state.state_dict()
    assert set(state) == {
        "config",
        "world_size",
        "history",
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "teacher",
        "rng",
        "data",
    }
    assert set(state["rng"]) == {"torch", "data", "augment", "mix", "mix_host"}
    # The CPU draws them elsewhere
    assert state["rng"]["augment"] is None and state["rng"]["mix_host"] is None
    assert len(state["rng"]["mix"]) == state["world_size"] == 1
    assert TrainConfig.from_dict(state["config"], source="saved") == run.state.config


def test_a_state_from_another_number_of_processes_is_refused():
    run, _ = _built(_config())
    state = run.state.state_dict()
    state["world_size"] = 2
    state["rng"]["mix"] = state["rng"]["mix"] * 2
    with pytest.raises(
        ConfigError,
        match=r"trained with 2 process\(es\).*resume it with the command that started it",
    ):
        run.state.load_state_dict(state)


def test_a_version_1_checkpoint_is_read_as_the_current_layout():
    config = _config()
    run, data = _built(config)
    _epoch(run, data)
    current = run.state.state_dict()
    # Version 1 kept rank 0's mixing state under "mix" beside every rank's under "mix_ranks", and wrote no
    # "augment" key on the CPU.
    v1 = copy.deepcopy(current)
    v1["version"] = 1
    v1["rng"] = {
        "torch": current["rng"]["torch"],
        "data": current["rng"]["data"],
        "mix": current["rng"]["mix"][0],
        "mix_ranks": current["rng"]["mix"],
    }
    assert upgrade(v1)["version"] == STATE_VERSION

    fresh, _ = _built(config)
    fresh.state.load_state_dict(v1)
    assert _equal(fresh.state.state_dict(), current)


def test_a_state_whose_model_does_not_fit_raises_for_the_run_folder_to_name():
    run, _ = _built(_config())
    state = run.state.state_dict()
    state["model"] = {"no.such.weight": torch.zeros(1)}
    with pytest.raises(RuntimeError, match=r"no.such.weight"):
        run.state.load_state_dict(state)


@pytest.mark.parametrize("saved_as_tensor", [False, True])
def test_the_learning_rate_keeps_the_form_of_the_run_that_loads_it(saved_as_tensor):
    """A run saved with --cuda-graph holds its learning rate in a tensor; resumed without it (or the
    other way round), the optimiser holds it as the resuming run does."""
    run, _ = _built(_config())
    state = run.state.state_dict()
    for group in state["optimizer"]["param_groups"]:
        group["lr"] = torch.tensor(group["lr"]) if saved_as_tensor else float(group["lr"])
    run.state.load_state_dict(state)
    assert all(type(g["lr"]) is float for g in run.state.optimizer.param_groups)


def test_the_data_is_fingerprinted_and_a_state_of_other_data_is_refused(tmp_path):
    run, _ = _built(_config())
    saved = run.state.state_dict()
    data = saved["data"]
    assert data["dataset"] == "toy" and set(data["tensors"]) == {"train", "val", "test"}
    # The same data, generated again (as a resumed run does), is the same data
    assert _built(_config())[0].state.data == data
    run.state.load_state_dict(copy.deepcopy(saved), source=tmp_path / "checkpoint.pt")

    other = copy.deepcopy(saved)
    other["data"]["tensors"]["test"] = "0" * 64
    with pytest.raises(CheckpointError) as exc:
        run.state.load_state_dict(other, source=tmp_path / "checkpoint.pt")
    message = str(exc.value)
    assert message.startswith(f"cannot resume {tmp_path / 'checkpoint.pt'}: the toy data generated")
    assert "the generated test set: sha256 000000000000 vs" in message
    assert "train set" not in message and "another --out" in message


def test_a_checkpoint_without_a_fingerprint_resumes_unchecked():
    run, _ = _built(_config())
    saved = run.state.state_dict()
    del saved["data"]  # written before fingerprints
    run.state.load_state_dict(saved)
    saved["data"] = None
    run.state.load_state_dict(saved)
    # Nor is one of another layout compared
    saved["data"] = {"version": 99, "dataset": "toy", "tensors": {}}
    run.state.load_state_dict(saved)


def test_every_process_must_read_the_same_data(monkeypatch):
    from multimix.data import fingerprint
    from multimix.train.distributed import Dist

    files = {"train.bin": {"name": "train.bin", "bytes": 9, "sha256": "a" * 64}}
    mine = {"version": fingerprint.VERSION, "dataset": "cifar100", "data_dir": "/a", "files": files}
    elsewhere = {**mine, "data_dir": "/b"}  # the same files in another folder: fine
    changed = {**mine, "files": {"train.bin": {**files["train.bin"], "sha256": "b" * 64}}}
    world = Dist(rank=0, world_size=3)
    monkeypatch.setattr(
        state.distributed, "all_gather_objects", lambda obj, d: [mine, elsewhere, mine]
    )
    check_same_data(mine, world)
    monkeypatch.setattr(
        state.distributed, "all_gather_objects", lambda obj, d: [mine, mine, changed]
    )
    with pytest.raises(
        ConfigError, match=r"process 2 reads other data than process 0 \(train.bin: "
    ):
        check_same_data(mine, world)
