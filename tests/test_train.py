"""The trainer and the CLI: outputs, config errors, exact resume after SIGKILL, compare."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from multimix.cli import main
from multimix.train import CheckpointError, ConfigError, TrainConfig, train
from multimix.train import checkpoint

TINY = {"dataset": "toy", "train_size": 300, "epochs": 2, "batch_size": 50, "threads": 1}


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "multimix.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("method", ["erm", "mixup", "manifold", "multimix"])
def test_train_writes_its_outputs(tmp_path, method):
    summary = train(TrainConfig.from_dict({**TINY, "method": method}), tmp_path)
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert {"train_loss", "val_acc", "test_acc", "val_loss", "test_loss", "time_s", "lr"} <= set(lines[0])
    assert all(r["train_loss"] == r["train_loss"] for r in lines)  # not NaN
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["best"]["val_acc"] == max(r["val_acc"] for r in lines)
    assert (tmp_path / "config.yaml").read_text().startswith("dataset: toy")
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert state["config"]["method"] == method and len(state["history"]) == 2
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_testing_only_at_improvements_reports_the_same_figures(tmp_path):
    config = {**TINY, "epochs": 6, "method": "mixup", "train_size": 200}
    every = train(TrainConfig.from_dict(config), tmp_path / "every")
    lean = train(TrainConfig.from_dict({**config, "test_every": "improvement"}), tmp_path / "lean")
    assert lean["best"] == every["best"] and lean["final"] == every["final"]
    full = [json.loads(l) for l in (tmp_path / "every" / "metrics.jsonl").read_text().splitlines()]
    lines = [json.loads(l) for l in (tmp_path / "lean" / "metrics.jsonl").read_text().splitlines()]
    best_so_far = (1.0, float("inf"))  # (−accuracy, loss): validation's choice, ties to the lower loss
    for f, r in zip(full, lines):
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
    tested = [r["epoch"] for r in map(json.loads, (tmp_path / "end" / "metrics.jsonl").read_text().splitlines())
              if r["test_acc"] is not None]
    assert tested == sorted({every["best"]["epoch"], 6})
    # Resumed after its last epoch (killed before the summary), it tests best.pt's weights.
    state = checkpoint.load(tmp_path / "end" / "checkpoint.pt")
    assert all(r["test_acc"] is None for r in state["history"][:-1])
    (tmp_path / "end" / "summary.json").unlink()
    again = train(TrainConfig.from_dict({**config, "test_every": "end"}), tmp_path / "end", resume=True)
    assert again["best"] == every["best"]


@pytest.mark.slow
def test_training_learns_the_toy_problem(tmp_path):
    summary = train(TrainConfig.from_dict({**TINY, "method": "multimix", "epochs": 15, "lr": 3e-3, "train_size": 1000}), tmp_path)
    assert summary["best"]["test_acc"] > 0.6  # 3 classes: chance is 1/3


def test_config_errors_name_key_and_valid_values(tmp_path):
    with pytest.raises(ConfigError, match="unknown option key 'epoch'; valid keys: dataset, model, method, epochs"):
        TrainConfig.from_dict({"epoch": 3}, source="option")
    with pytest.raises(ConfigError, match="invalid value for method: 'puzzlemix'; valid values: erm, mixup, manifold, multimix"):
        TrainConfig.from_dict({"method": "puzzlemix"})
    with pytest.raises(ConfigError, match=r"invalid value for lr: -1.0; expected a finite number > 0"):
        TrainConfig.from_dict({"lr": -1})
    with pytest.raises(ConfigError, match=r"invalid value for epochs: 'ten'"):
        TrainConfig.from_dict({"epochs": "ten"})
    with pytest.raises(ConfigError, match=r"invalid value for alpha: 0.0; expected a finite number > 0"):
        TrainConfig.from_dict({"alpha": 0})
    with pytest.raises(ConfigError, match=r"invalid value for tuple_size: 0"):
        TrainConfig.from_dict({"tuple_size": 0})
    assert TrainConfig.from_dict({"tuple-size": "all", "batch-size": "64", "layers": "input,layer1"}).tuple_size is None


def test_cli_rejects_bad_input_with_exit_code_2(tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("epochs: 2\nlearning_rate: 0.1\n")
    for argv, message in [
        (["train", "--config", str(bad_yaml)], "unknown --config key 'learning_rate'; valid keys:"),
        (["train", "--method", "puzzlemix"], "valid values: erm, mixup, manifold, multimix"),
        (["train", "--epochs", "0"], "invalid value for epochs: 0"),
        (["train", "--nope"], "unrecognized arguments: --nope"),
        (["compare", "--methods", "erm,foo"], "invalid value for --methods: 'erm,foo'; valid methods:"),
        (["train", "--dataset", "cifar10", "--data-dir", str(tmp_path)], "cifar10 binary files not found"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("runs"))  # nothing written


def test_yaml_config_and_flags_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: toy\nepochs: 1\ntrain-size: 200\nthreads: 1\nmethod: mixup\nalpha: 0.4\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    saved = checkpoint.load(out / "checkpoint.pt")["config"]
    assert saved["epochs"] == 2 and saved["alpha"] == 0.4 and saved["train_size"] == 200


@pytest.mark.slow
def test_corrupt_and_mismatched_checkpoints_give_clear_errors(tmp_path):
    config = TrainConfig.from_dict(TINY)
    train(config, tmp_path)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(config, tmp_path)
    other = TrainConfig.from_dict({**TINY, "lr": 0.5})
    with pytest.raises(CheckpointError, match=rf"other settings \(given vs saved\): lr: 0.5 vs {config.lr}"):
        train(other, tmp_path, resume=True)
    data = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is not a readable checkpoint .*move it aside or delete it to start over"):
        train(config, tmp_path, resume=True)
    # A pickle that would run code when loaded is refused, and the code never runs.
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "multimix-checkpoint", "version": 1, "x": _Payload(str(marker))}, evil)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(evil)
    assert not marker.exists()
    result = cli("train", "--out", str(tmp_path), "--resume")
    assert result.returncode == 2 and "not a readable checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


class _Payload:
    """Unpickling this would create a file: what a malicious checkpoint could do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _state(path: Path) -> tuple[dict, list]:
    state = checkpoint.load(path / "checkpoint.pt")
    metrics = [json.loads(l) for l in (path / "metrics.jsonl").read_text().splitlines()]
    for r in metrics:
        r.pop("time_s")
    return state["model"], metrics


@pytest.mark.slow
def test_sigkill_and_resume_gives_the_uninterrupted_result(tmp_path):
    args = ["train", "--dataset", "toy", "--train-size", "2000", "--method", "multimix", "--epochs", "10",
            "--batch-size", "20", "--threads", "1", "--quiet"]
    reference = tmp_path / "reference"
    assert cli(*args, "--out", str(reference)).returncode == 0

    killed = tmp_path / "killed"
    kills = 0
    for min_epochs, delay in ((2, 0.15), (5, 0.05)):  # two kills, at different moments
        resume = ["--resume"] if (killed / "checkpoint.pt").exists() else []
        proc = subprocess.Popen([sys.executable, "-m", "multimix.cli", *args, "--out", str(killed), *resume],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def test_compare_on_a_tiny_budget(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--dataset", "toy", "--train-size", "300", "--epochs", "2", "--threads", "1",
            "--methods", "erm,multimix", "--seeds", "2", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| erm | 2 |" in printed and "| multimix | 2 |" in printed and "results.png" in printed
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["seed"]) for r in rows] == [("erm", "0"), ("erm", "1"), ("multimix", "0"), ("multimix", "1")]
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    first = (out / "erm" / "seed0" / "summary.json").stat().st_mtime_ns
    assert main(argv) == 0  # finished runs are reused, not retrained
    assert (out / "erm" / "seed0" / "summary.json").stat().st_mtime_ns == first
    assert main([*argv, "--lr", "0.002"]) == 0  # other settings: old runs moved aside, not lost
    assert len(list((out / "erm").glob("seed0.stale-*"))) == 1
    assert checkpoint.load(out / "erm" / "seed0" / "checkpoint.pt")["config"]["lr"] == 0.002


@pytest.mark.slow
def test_plot_boundary_writes_a_png(tmp_path, capsys):
    out = tmp_path / "pb"
    argv = ["plot-boundary", "--epochs", "2", "--train-size", "200", "--threads", "1", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert (out / "boundary.png").read_bytes()[:4] == b"\x89PNG"
    assert {p.name for p in out.iterdir()} >= {"erm", "mixup", "manifold", "boundary.png"}
    with pytest.raises(SystemExit) as exc:
        main(["plot-boundary", "--dataset", "digits", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "needs a 2-D dataset" in capsys.readouterr().err
