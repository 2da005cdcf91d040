"""Runs that fail loudly: divergence, the machine's faults (full disk, file-size limit, file names the
locale cannot hold), the last write of a run, and the files a run writes being strict JSON.

A run gives a result that is what it says, or stops with exit code 2 and one line naming the thing,
what was expected and what to do; nothing on disk is lost.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_RUN, cli, read_metrics, tiny_config
from multimix._io import json_safe, to_json, write_json
from multimix.train import checkpoint, train
from multimix.train.compare import aggregate, format_table, run_variants, write_csv
from multimix.train.config import FLOAT32_MAX
from multimix.train.errors import RunDiverged

TINY = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_RUN.items()]

#: On the toy problem, plain SGD at lr 5 ends its first epoch with a finite loss and diverges in the
#: second (checked by test_divergence_stops_the_run): a real divergence with a checkpoint to keep.
DIVERGES_IN_EPOCH_2 = ["--optimizer", "sgd", "--lr", "5", "--epochs", "4"]


def strict_json(text: str):
    """``json.loads`` that refuses the NaN/Infinity tokens Python's json writes by default."""

    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("multimix: error:")]


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single error line of a command that failed as it should: exit code 2, no traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- 1. divergence ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_divergence_stops_the_run(tmp_path):
    out = tmp_path / "run"
    result = cli("train", *TINY, *DIVERGES_IN_EPOCH_2, "--out", str(out))
    line = one_error_line(result)
    for said in ("diverged", "epoch 2 of 4", "method erm", "lr 5", "lower --lr", str(out)):
        assert said in line, line
    assert "test accuracy" not in result.stdout  # no figure is reported
    # The checkpoint of the last finite epoch is kept, and what is derived from it
    state = checkpoint.load(out / "checkpoint.pt")
    assert [r["epoch"] for r in state["history"]] == [1]
    assert all(math.isfinite(r["train_loss"]) for r in state["history"])
    assert [r["epoch"] for r in read_metrics(out)] == [1]
    summary = strict_json((out / "summary.json").read_text())
    assert summary["diverged"] == {"epoch": 2, "train_loss": "nan", "lr": 5.0}
    assert summary["best"] is None and summary["final"] is None
    assert summary["completed_epochs"] == 1
    # Resumed, the same settings diverge again in the same epoch: still no result
    again = cli("train", "--out", str(out), "--resume")
    assert "epoch 2 of 4" in one_error_line(again)


def test_divergence_in_the_first_epoch_leaves_no_checkpoint(tmp_path):
    config = tiny_config(optimizer="sgd", lr=1e30)
    with pytest.raises(RunDiverged, match="epoch 1 of 2") as caught:
        train(config, tmp_path / "run", progress=False)
    assert "holds no checkpoint" in str(caught.value)
    assert caught.value.epoch == 1
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert not (tmp_path / "run" / "best.pt").exists()
    summary = strict_json((tmp_path / "run" / "summary.json").read_text())
    assert summary == caught.value.summary
    assert summary["completed_epochs"] == 0 and summary["diverged"]["epoch"] == 1


def test_confmix_meeting_outputs_that_are_not_finite_is_a_divergence(tmp_path):
    """ConfMix reads the model's outputs to set α and refuses non-finite ones mid-epoch; the trainer
    records that as the divergence it is, not as a crash."""
    config = tiny_config(method="confmix", confmix_warmup=0, optimizer="sgd", lr=1e30)
    with pytest.raises(RunDiverged, match="method confmix") as caught:
        train(config, tmp_path / "run", progress=False)
    assert caught.value.summary["diverged"]["train_loss"] == "nan"


@pytest.mark.slow
def test_evaluate_refuses_a_run_that_diverged(tmp_path):
    """Its best.pt holds the weights of an epoch before the divergence: not a result."""
    out = tmp_path / "run"
    assert cli("train", *TINY, *DIVERGES_IN_EPOCH_2, "--out", str(out)).returncode == 2
    assert (out / "best.pt").is_file()
    line = one_error_line(cli("evaluate", str(out)))
    assert "diverged" in line and "epoch 2" in line and "nothing is evaluated" in line, line
    assert not (out / "eval.json").exists()


def test_diverged_error_survives_pickling():
    """Raised in a compare worker process, it crosses to the parent whole."""
    import pickle

    error = RunDiverged("it diverged", epoch=3, summary={"diverged": {"epoch": 3}})
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.epoch, copy.summary) == (str(error), 3, error.summary)


def test_compare_marks_a_diverged_run_and_goes_on(tmp_path):
    variants = {
        "steady": tiny_config(),
        "wild": tiny_config(optimizer="sgd", lr=1e30),
    }
    rows = run_variants(variants, seeds=[0, 1], out=tmp_path / "cmp", progress=False)
    steady = [r for r in rows if r["method"] == "steady"]
    wild = [r for r in rows if r["method"] == "wild"]
    assert all(r["diverged"] is None and 0 <= r["test_acc"] <= 1 for r in steady)
    assert all(r["diverged"] == 1 and r["test_acc"] is None for r in wild)
    table = format_table(aggregate(rows))
    wild_line = next(line for line in table.splitlines() if line.startswith("| wild "))
    steady_line = next(line for line in table.splitlines() if line.startswith("| steady "))
    assert "diverged (2 of 2 runs)" in wild_line and "±" not in wild_line
    assert "diverged" not in steady_line and "±" in steady_line
    # The CSV leaves the diverged runs' figures empty and says in which epoch they diverged
    write_csv(tmp_path / "results.csv", rows)
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_lines[0].endswith(",diverged")
    assert any(line.startswith("wild,0,,,,,,,1") for line in csv_lines), csv_lines


@pytest.mark.slow
def test_compare_evaluate_measures_the_runs_that_finished(tmp_path):
    from multimix.cli import _evaluate_rows
    from multimix.train.compare import plot_results

    variants = {"steady": tiny_config(), "wild": tiny_config(optimizer="sgd", lr=1e30)}
    out = tmp_path / "cmp"
    rows = run_variants(variants, seeds=[0], out=out, progress=False)
    assert _evaluate_rows(out, rows, title="t")
    steady, wild = rows
    assert 0 <= steady["ece"] <= 1 and "ece" not in wild
    assert (out / "evaluation.png").stat().st_size > 0
    table = format_table(aggregate(rows))
    wild_line = next(line for line in table.splitlines() if line.startswith("| wild "))
    assert "ECE (%)" in table and wild_line.count("diverged (1 of 1 runs)") == 10
    plot_results(out / "results.png", rows, title="t")  # the finished runs only, no mean for wild
    assert not (out / "wild" / "seed0" / "eval.json").exists()


def test_a_method_with_one_diverged_seed_gets_no_mean():
    """The mean of the seeds that survived would flatter the method."""
    rows = [
        {"method": "m", "seed": 0, "val_acc": 0.9, "test_acc": 0.9, "time_per_epoch_s": 1.0},
        {"method": "m", "seed": 1, "val_acc": None, "test_acc": None, "time_per_epoch_s": None},
    ]
    rows[0]["diverged"], rows[1]["diverged"] = None, 4
    (summary,) = aggregate(rows)
    assert summary["diverged"] == 1 and summary["test_acc"] is None
    assert summary["time_per_epoch_s"] == 1.0  # of the run that finished
    assert "diverged (1 of 2 runs)" in format_table([summary])


@pytest.mark.slow
def test_compare_cli_with_diverging_runs_tabulates_and_warns(tmp_path):
    out = tmp_path / "cmp"
    args = ("compare", *TINY, "--methods", "erm,mixup", "--seeds", "1", "--out", str(out))
    result = cli(*args, *DIVERGES_IN_EPOCH_2, "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stdout.count("diverged (1 of 1 runs)") == 6  # val, both tests; both methods
    assert "2 of 2 runs diverged" in result.stderr
    assert (out / "results.png").stat().st_size > 0
    # Run again, the diverged runs (which kept a checkpoint) are reused, not trained again
    before = (out / "erm" / "seed0" / "checkpoint.pt").stat().st_mtime_ns
    again = cli(*args, *DIVERGES_IN_EPOCH_2)
    assert again.returncode == 0 and "found so earlier" in again.stderr, again.stderr[-2000:]
    assert (out / "erm" / "seed0" / "checkpoint.pt").stat().st_mtime_ns == before


@pytest.mark.parametrize("damage", ["cut short", "empty", "not a summary", "not UTF-8"])
def test_compare_finishes_again_a_run_whose_summary_is_damaged(tmp_path, caplog, damage):
    variants = {"erm": tiny_config()}
    out = tmp_path / "cmp"
    (first,) = run_variants(variants, seeds=[0], out=out, progress=False)
    summary = out / "erm" / "seed0" / "summary.json"
    text = summary.read_text()
    summary.write_bytes(
        {
            "cut short": text[: len(text) // 2].encode(),
            "empty": b"",
            "not a summary": b"[1, 2]",
            "not UTF-8": b"\xff\xfe{",
        }[damage]
    )
    with caplog.at_level("WARNING"):
        (again,) = run_variants(variants, seeds=[0], out=out, progress=False)
    assert "summary.json is unreadable" in caplog.text and "from its checkpoint" in caplog.text
    assert again == first
    assert strict_json(summary.read_text()) == strict_json(text)


def test_compare_moves_aside_a_run_whose_best_pt_is_damaged_and_trains_it_again(tmp_path, caplog):
    variants = {"erm": tiny_config()}
    out = tmp_path / "cmp"
    (first,) = run_variants(variants, seeds=[0], out=out, progress=False)
    best = out / "erm" / "seed0" / "best.pt"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    with caplog.at_level("WARNING"):
        (again,) = run_variants(variants, seeds=[0], out=out, progress=False)
    assert "best.pt is damaged" in caplog.text and "training it again" in caplog.text
    assert {k: v for k, v in again.items() if k != "time_per_epoch_s"} == {
        k: v for k, v in first.items() if k != "time_per_epoch_s"
    }
    assert len(list(out.glob("erm/seed0.stale-*"))) == 1
    checkpoint.load(best)  # whole again


# -- strict JSON and float options -------------------------------------------------------------------


def test_json_written_is_strict(tmp_path):
    record = {
        "loss": float("nan"),
        "up": float("inf"),
        "down": -math.inf,
        "ok": 0.5,
        "n": [1.0, math.nan],
    }
    assert json_safe(record) == {
        "loss": None,
        "up": None,
        "down": None,
        "ok": 0.5,
        "n": [1.0, None],
    }
    assert strict_json(to_json(record)) == json_safe(record)
    write_json(tmp_path / "x.json", record)
    assert strict_json((tmp_path / "x.json").read_text())["ok"] == 0.5


def test_metrics_and_summary_of_a_run_are_strict_json(tmp_path):
    train(tiny_config(), tmp_path / "run", progress=False)
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        strict_json(line)
    strict_json((tmp_path / "run" / "summary.json").read_text())


FLOAT_OPTIONS = [
    "lr",
    "weight_decay",
    "alpha",
    "cutmix_alpha",
    "temperature",
    "distill_weight",
    "half_life",
    "confmix_scale",
]


@pytest.mark.parametrize("key", FLOAT_OPTIONS)
@pytest.mark.parametrize("value", ["1e300", "inf", "nan", "-inf"])
def test_float_options_must_be_finite_and_fit_float32(key, value):
    from multimix.train.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match=f"invalid value for {key}: "):
        TrainConfig.from_dict({"dataset": "toy", key: value})


def test_the_largest_float32_is_accepted_and_one_beyond_refused():
    from multimix.train.config import ConfigError, TrainConfig

    TrainConfig.from_dict({"dataset": "toy", "lr": FLOAT32_MAX})
    with pytest.raises(ConfigError, match="float32's range"):
        TrainConfig.from_dict({"dataset": "toy", "lr": 1e39})


def test_huge_lr_on_the_command_line_is_refused_before_any_work(tmp_path):
    result = cli("train", *TINY, "--lr", "1e300", "--out", str(tmp_path / "run"))
    assert "invalid value for lr: 1e+300" in one_error_line(result)
    assert not (tmp_path / "run").exists()


# -- 3. nothing lost at the last write -----------------------------------------------------------------


def test_files_derived_from_the_checkpoint_are_rewritten_when_a_finished_run_is_resumed(tmp_path):
    """The state on disk of a run killed after its last checkpoint and before its metrics line (and its
    summary): resumed, it loses nothing."""
    out = tmp_path / "run"
    config = tiny_config(epochs=3)
    finished = train(config, out, progress=False)
    lines = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
    (out / "metrics.jsonl").write_text("".join(lines[:-1]))  # the last epoch's line never written
    (out / "summary.json").unlink()
    again = train(config, out, resume=True, progress=False)
    assert (out / "metrics.jsonl").read_text() == "".join(lines)
    assert again == finished
    # A metrics file cut in the middle of a line, likewise
    (out / "metrics.jsonl").write_text("".join(lines)[:-25])
    train(config, out, resume=True, progress=False)
    assert (out / "metrics.jsonl").read_text() == "".join(lines)


def test_resumed_mid_run_the_metrics_are_the_checkpoints(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(epochs=2), out, progress=False)
    kept = (out / "metrics.jsonl").read_text()
    (out / "metrics.jsonl").write_text("")
    # (the run is finished: resuming it only rewrites what derives from the checkpoint)
    train(tiny_config(epochs=2), out, resume=True, progress=False)
    assert (out / "metrics.jsonl").read_text() == kept


def test_tensorboard_gets_the_checkpoints_last_epoch_again_on_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    config = tiny_config(epochs=2, tensorboard=True)
    train(config, out, progress=False)
    shutil.rmtree(out / "tensorboard")  # as if the kill came before the events were written
    train(config, out, resume=True, progress=False)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/val_acc")] == [2]


# -- 4. the machine's faults ----------------------------------------------------------------------


def _with_file_size_limit(limit: int):
    """A child's preexec_fn: writes beyond ``limit`` bytes fail with EFBIG (the kernel's own error, as
    from a quota), instead of killing the process with SIGXFSZ."""

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_files


def cli_limited(limit: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "multimix.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_with_file_size_limit(limit),
    )


@pytest.mark.slow
def test_a_write_that_fails_is_one_line_and_the_same_command_finishes_the_run(tmp_path):
    out = tmp_path / "run"
    args = ("train", *TINY, "--out", str(out))
    result = cli_limited(2000, *args)  # config.yaml fits, best.pt does not
    line = one_error_line(result)
    assert f"{out / 'best.pt'}: File too large [errno 27]" in line, line
    assert "free some space" in line and "--resume" not in line  # no checkpoint yet to resume
    assert not list(out.glob(".*.tmp"))  # no half-written file left behind
    assert not (out / "best.pt").exists()
    # Once the limit is gone, the command it names finishes the run as if nothing happened
    assert cli(*args).returncode == 0
    uninterrupted = tmp_path / "clean"
    assert cli("train", *TINY, "--out", str(uninterrupted)).returncode == 0
    timeless = [{k: v for k, v in r.items() if k != "time_s"} for r in read_metrics(out)]
    assert timeless == [
        {k: v for k, v in r.items() if k != "time_s"} for r in read_metrics(uninterrupted)
    ]


@pytest.mark.slow
def test_evaluate_that_cannot_write_is_one_line_without_out(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(), run, progress=False)
    result = cli_limited(200, "evaluate", str(run), "--attacks", "")  # eval.json is larger
    line = one_error_line(result)
    assert str(run) in line and "File too large" in line, line
    assert "--out" not in line and "run the command again" in line, line


@pytest.fixture
def tiny_disk(tmp_path):
    """A real file system of 32 MiB (tmpfs), where it can be mounted (root on Linux); else skip."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip("cannot mount a small file system here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` until ``leave`` bytes are free; returns the filler file."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


@pytest.mark.slow
def test_a_full_disk_mid_run_is_one_line_and_the_run_resumes_exactly(tmp_path, tiny_disk):
    """Epoch 1 fits (best.pt + checkpoint.pt); epoch 2 needs room for the new checkpoint beside the
    old one, and the disk is full. Space back, ``--resume`` ends as the run never interrupted."""
    clean = tmp_path / "clean"
    args = [*TINY, "--epochs", "3"]
    assert cli("train", *args, "--out", str(clean)).returncode == 0
    sizes = {name: (clean / name).stat().st_size for name in ("best.pt", "checkpoint.pt")}
    out = tiny_disk / "run"
    filler = _fill(tiny_disk, sizes["best.pt"] + int(1.5 * sizes["checkpoint.pt"]) + 16384)
    result = cli("train", *args, "--out", str(out))
    line = one_error_line(result)
    assert "No space left on device [errno 28]" in line and str(out) in line, line
    assert f"multimix train --out {out} --resume" in line, line
    assert len(checkpoint.load(out / "checkpoint.pt")["history"]) >= 1
    assert not list(out.glob(".*.tmp"))
    filler.unlink()
    assert cli("train", "--out", str(out), "--resume").returncode == 0
    strip = [{k: v for k, v in r.items() if k != "time_s"} for r in read_metrics(clean)]
    assert [{k: v for k, v in r.items() if k != "time_s"} for r in read_metrics(out)] == strip
    a = checkpoint.load(out / "checkpoint.pt")["model"]
    b = checkpoint.load(clean / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.slow
def test_a_non_ascii_folder_under_a_non_utf8_locale_trains(tmp_path):
    """Under LC_ALL=C without UTF-8 mode, undecodable bytes of the command line become surrogates: the
    lock file's note of the command, config.yaml and the outputs must take them."""
    out = tmp_path / "résumé"
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "multimix.cli", "train", *TINY, "--out", str(out)],
        capture_output=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "summary.json").is_file() and (out / "config.yaml").is_file()


def test_a_config_file_is_read_as_utf8_whatever_the_locale(tmp_path):
    from multimix.train.config import ConfigError, TrainConfig

    path = tmp_path / "c.yaml"
    path.write_bytes("data_dir: /données\n".encode())
    assert TrainConfig.from_yaml(path) == {"data_dir": "/données"}
    path.write_bytes(b"data_dir: /donn\xe9es\n")  # Latin-1
    with pytest.raises(ConfigError, match="not UTF-8"):
        TrainConfig.from_yaml(path)


@pytest.mark.parametrize("kind", ["dangling link", "link in the path", "file in the path"])
def test_an_out_that_cannot_be_a_folder_says_why(tmp_path, kind):
    from multimix.train.config import ConfigError
    from multimix.train.runlock import RunLock

    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    folder = {
        "dangling link": link,
        "link in the path": link / "run",
        "file in the path": tmp_path / "file" / "run",
    }[kind]
    expected = "which does not exist" if "link" in kind else "is a file, not a folder"
    with pytest.raises(ConfigError, match=expected), RunLock(folder):
        pass
    assert not (tmp_path / "nowhere").exists()


def test_folder_in_use_advice_fits_the_command(tmp_path):
    from multimix.train.runlock import FolderInUse, RunLock

    with RunLock(tmp_path / "run"):
        with pytest.raises(FolderInUse, match="choose another --out"), RunLock(tmp_path / "run"):
            pass
        with pytest.raises(FolderInUse) as caught, RunLock(tmp_path / "run", argument="RUN_DIR"):
            pass
    assert "--" not in str(caught.value).split("wait for it to finish")[1]


@contextlib.contextmanager
def file_size_limit(limit: int):
    """In this process: writes beyond ``limit`` bytes fail with EFBIG (SIGXFSZ ignored meanwhile)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_failed_checkpoint_write_is_the_disks_oserror_naming_the_file(tmp_path):
    """torch.save turns a failed write into its own RuntimeError ("unexpected pos ..."); the error
    raised is the OSError of the file system, naming the file being written; the old one is kept."""
    target = tmp_path / "checkpoint.pt"
    checkpoint.save(target, {"w": torch.zeros(4)})
    before = target.read_bytes()
    with (
        file_size_limit(len(before) + 100),
        pytest.raises(OSError, match="File too large") as caught,
    ):
        checkpoint.save(target, {"w": torch.zeros(10_000)})
    assert caught.value.errno == 27 and caught.value.filename == str(target)
    assert target.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))
