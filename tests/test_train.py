"""The trainer (multimix.train.trainer): its outputs, the test policy's figures, learning, exact resume
after SIGKILL. Config errors: test_config.py; checkpoints: test_checkpoint.py; the commands: test_cli.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY_RUN, cli
from multimix.train import TrainConfig, checkpoint, train


@pytest.mark.parametrize("method", ["erm", "mixup", "manifold", "multimix"])
def test_train_writes_its_outputs(tmp_path, method):
    summary = train(TrainConfig.from_dict({**TINY_RUN, "method": method}), tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert {"train_loss", "val_acc", "test_acc", "val_loss", "test_loss", "time_s", "lr"} <= set(
        lines[0]
    )
    assert all(r["train_loss"] == r["train_loss"] for r in lines)  # not NaN
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["best"]["val_acc"] == max(r["val_acc"] for r in lines)
    assert (tmp_path / "config.yaml").read_text().startswith("dataset: toy")
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert state["config"]["method"] == method and len(state["history"]) == 2
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_testing_only_at_improvements_reports_the_same_figures(tmp_path):
    config = {**TINY_RUN, "epochs": 6, "method": "mixup", "train_size": 200}
    every = train(TrainConfig.from_dict(config), tmp_path / "every")
    lean = train(TrainConfig.from_dict({**config, "test_every": "improvement"}), tmp_path / "lean")
    assert lean["best"] == every["best"] and lean["final"] == every["final"]
    full = [
        json.loads(line) for line in (tmp_path / "every" / "metrics.jsonl").read_text().splitlines()
    ]
    lines = [
        json.loads(line) for line in (tmp_path / "lean" / "metrics.jsonl").read_text().splitlines()
    ]
    # (−accuracy, loss): validation's choice, ties to the lower loss
    best_so_far = (
        1.0,
        float("inf"),
    )
    for f, r in zip(full, lines, strict=True):
        assert r["val_acc"] == f["val_acc"]
        improved = (-r["val_acc"], r["val_loss"]) < best_so_far
        best_so_far = min(best_so_far, (-r["val_acc"], r["val_loss"]))
        if improved or r["epoch"] == 6:
            assert r["test_acc"] == f["test_acc"]
        else:
            assert r["test_acc"] is None
    assert any(r["test_acc"] is None for r in lines)
    end = train(TrainConfig.from_dict({**config, "test_every": "end"}), tmp_path / "end")
    assert end["best"] == every["best"] and end["final"] == every["final"]
    tested = [
        r["epoch"]
        for r in map(json.loads, (tmp_path / "end" / "metrics.jsonl").read_text().splitlines())
        if r["test_acc"] is not None
    ]
    assert tested == sorted({every["best"]["epoch"], 6})
    # Resumed after its last epoch (killed before the summary), it tests best.pt's weights.
    state = checkpoint.load(tmp_path / "end" / "checkpoint.pt")
    assert all(r["test_acc"] is None for r in state["history"][:-1])
    (tmp_path / "end" / "summary.json").unlink()
    again = train(
        TrainConfig.from_dict({**config, "test_every": "end"}), tmp_path / "end", resume=True
    )
    assert again["best"] == every["best"]


@pytest.mark.slow
def test_training_learns_the_toy_problem(tmp_path):
    summary = train(
        TrainConfig.from_dict(
            {**TINY_RUN, "method": "multimix", "epochs": 15, "lr": 3e-3, "train_size": 1000}
        ),
        tmp_path,
    )
    assert summary["best"]["test_acc"] > 0.6  # 3 classes: chance is 1/3


def _state(path: Path) -> tuple[dict, list]:
    state = checkpoint.load(path / "checkpoint.pt")
    metrics = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    for r in metrics:
        r.pop("time_s")
    return state["model"], metrics


@pytest.mark.slow
def test_sigkill_and_resume_gives_the_uninterrupted_result(tmp_path):
    args = [
        "train",
        "--dataset",
        "toy",
        "--train-size",
        "2000",
        "--method",
        "multimix",
        "--epochs",
        "10",
        "--batch-size",
        "20",
        "--threads",
        "1",
        "--quiet",
    ]
    reference = tmp_path / "reference"
    assert cli(*args, "--out", str(reference)).returncode == 0

    killed = tmp_path / "killed"
    kills = 0
    for min_epochs, delay in ((2, 0.15), (5, 0.05)):  # two kills, at different moments
        resume = ["--resume"] if (killed / "checkpoint.pt").exists() else []
        proc = subprocess.Popen(
            [sys.executable, "-m", "multimix.cli", *args, "--out", str(killed), *resume],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        metrics = killed / "metrics.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= min_epochs:
                break
            time.sleep(0.02)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1, "the run finished before it could be killed; make it longer"
    done = len((killed / "metrics.jsonl").read_text().splitlines())
    assert done < 10
    assert cli(*args, "--out", str(killed), "--resume").returncode == 0

    ref_model, ref_metrics = _state(reference)
    got_model, got_metrics = _state(killed)
    assert got_metrics == ref_metrics
    assert ref_model.keys() == got_model.keys()
    assert all(torch.equal(ref_model[k], got_model[k]) for k in ref_model)


def test_summary_carries_the_best_test_accuracy_over_epochs_only_when_every_epoch_was_tested(
    tmp_path,
):
    """summary.json's best_test_over_epochs: the papers' figure (the maximum of the history's test
    accuracies, the earliest of equals, with its epoch) beside 'best', the epoch chosen on validation;
    null where the test set was not measured every epoch, so never a maximum over some epochs only."""
    config = {**TINY_RUN, "epochs": 3, "method": "mixup"}
    summary = train(TrainConfig.from_dict(config), tmp_path / "every")
    history = [
        json.loads(line) for line in (tmp_path / "every" / "metrics.jsonl").read_text().splitlines()
    ]
    top = max(r["test_acc"] for r in history)
    first_top = next(r["epoch"] for r in history if r["test_acc"] == top)
    entry = summary["best_test_over_epochs"]
    assert (entry["epoch"], entry["test_acc"]) == (first_top, top)
    assert "optimistic" in entry["note"] and entry["test_acc"] >= summary["best"]["test_acc"]
    saved = json.loads((tmp_path / "every" / "summary.json").read_text())
    assert saved["best_test_over_epochs"] == entry
    for policy in ("improvement", "end"):
        lean = train(TrainConfig.from_dict({**config, "test_every": policy}), tmp_path / policy)
        assert lean["best_test_over_epochs"] is None, policy
        assert lean["best"] == summary["best"]  # the result itself does not depend on the policy
        saved = json.loads((tmp_path / policy / "summary.json").read_text())
        assert "best_test_over_epochs" in saved and saved["best_test_over_epochs"] is None


def test_best_test_over_epochs_is_null_after_a_resume_from_a_run_not_tested_every_epoch():
    """test_every may change on resume; the epochs before it kept no test figures."""
    from multimix.train import distributed
    from multimix.train.trainer import _summary

    history = [
        {"epoch": 1, "val_acc": 0.5, "test_acc": None, "val_loss": 1.0, "test_loss": None},
        {"epoch": 2, "val_acc": 0.6, "test_acc": 0.7, "val_loss": 0.9, "test_loss": 0.8},
    ]
    for r in history:
        r["time_s"] = 1.0
    config = TrainConfig.from_dict(TINY_RUN)  # test_every "epoch"
    world = distributed.Dist(rank=0, world_size=1, local_rank=0)
    assert _summary(config, world, history, history[1])["best_test_over_epochs"] is None
    history[0] |= {"test_acc": 0.7, "test_loss": 0.85}  # equal accuracies: the earlier epoch
    assert _summary(config, world, history, history[1])["best_test_over_epochs"]["epoch"] == 1
