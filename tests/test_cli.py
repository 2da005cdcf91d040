"""The command line as users and operators meet it: processes, folders, resume, errors, output.

Each test here keeps fixed a defect found by an audit of the CLI (issue 9).
"""

from __future__ import annotations

import csv
import os
import signal
import stat
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
import torch

import multimix
from conftest import cli
from multimix.cli import build_parser, main, packaged_configs, resolve_config, version
from multimix.train import checkpoint
from multimix.train.compare import accuracy_axis
from multimix.train.runlock import RunLock

TINY = ["--dataset", "toy", "--train-size", "300", "--epochs", "1", "--threads", "1", "--quiet"]
# Long enough to be caught mid-run on a loaded machine, yet each epoch ends within a second or two.
LONG = ["--dataset", "toy", "--train-size", "20000", "--epochs", "200", "--threads", "1", "--quiet"]


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored across exec
    # (Python then installs no KeyboardInterrupt handler): give the CLI the Ctrl-C a terminal user has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "multimix.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
        **kw,
    )


def wait_for(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    return lines[0]


def last_line(err: str) -> str:
    """The closing message of a run that had been logging progress (no traceback anywhere)."""
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


# -- processes and folders ---------------------------------------------------------------------


@pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads the process table from /proc"
)
@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name
)
@pytest.mark.slow
def test_compare_workers_end_with_their_parent(tmp_path, sig):
    out = tmp_path / "cmp"
    argv = [
        "compare",
        *LONG,
        "--jobs",
        "2",
        "--methods",
        "erm,mixup",
        "--seeds",
        "1",
        "--out",
        str(out),
    ]
    parent = popen(*argv)
    wait_for(
        lambda: len(list(out.glob("*/seed0/metrics.jsonl"))) == 2,
        what="both workers to finish an epoch",
    )
    workers = children(parent.pid)
    workers = [pid for pid in workers if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == 2
    parent.send_signal(sig)
    try:
        _, err = parent.communicate(timeout=180)
    except subprocess.TimeoutExpired:  # say what was still running, for whoever debugs this
        states = {
            pid: (Path(f"/proc/{pid}/stat").read_text().split()[2] if alive(pid) else "gone")
            for pid in [parent.pid, *workers]
        }
        parent.kill()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        raise AssertionError(
            f"compare did not end within 180 s of {sig.name}; process states: {states}"
        ) from None
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=20, what="the workers to end")
    if sig != signal.SIGKILL:  # the parent stopped them itself and says how to go on
        assert parent.returncode == (130 if sig == signal.SIGINT else 143)
        line = last_line(err)
        assert line.startswith("multimix: interrupted; to continue: multimix compare ")
        assert "--resume" not in line and "finished runs are reused" in line
    # Nothing holds the folders now: the same command continues the runs where they stopped.
    with RunLock(out / "erm" / "seed0"):
        pass


@pytest.mark.slow
def test_two_runs_on_one_folder(tmp_path):
    out = tmp_path / "run"
    first = popen("train", *LONG, "--out", str(out))
    wait_for(lambda: (out / "checkpoint.pt").exists(), what="the first run's first epoch")
    second = cli("train", *TINY, "--out", str(out))
    assert second.returncode == 2
    line = one_error_line(second.stderr)
    assert f"{out} is in use by process {first.pid}" in line and "multimix train" in line
    first.send_signal(signal.SIGKILL)
    first.wait()
    # The kernel dropped the dead run's lock: the folder can be resumed at once.
    with RunLock(out):
        pass
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_resume_needs_something_to_resume(tmp_path):
    out = tmp_path / "typo"
    result = cli("train", *TINY, "--out", str(out), "--resume")
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert (
        f"nothing to resume in {out}: it holds no checkpoint.pt" in line
        and "leave out --resume" in line
    )
    assert not out.exists()


@pytest.mark.slow
def test_extending_a_finished_run_says_why_not(tmp_path):
    out = tmp_path / "run"
    assert cli("train", *TINY, "--out", str(out)).returncode == 0
    result = cli("train", "--out", str(out), "--resume", "--epochs", "2")
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert (
        "it was started for 1 epochs" in line
        and "cosine learning-rate schedule spans all its epochs" in line
    )
    assert "start a new run (same options, --epochs 2, another --out)" in line
    assert cli("train", "--out", str(out), "--resume").returncode == 0  # same settings: fine


def test_outputs_get_the_permissions_of_a_plain_write(tmp_path):
    previous = os.umask(0o022)
    try:
        assert (
            main(
                ["compare", *TINY, "--methods", "erm", "--seeds", "1", "--out", str(tmp_path / "c")]
            )
            == 0
        )
        written = [p for p in (tmp_path / "c").rglob("*") if p.is_file() and p.name != ".lock"]
        assert {p.name for p in written} >= {
            "checkpoint.pt",
            "summary.json",
            "metrics.jsonl",
            "config.yaml",
            "results.csv",
            "results.md",
            "results.png",
        }
        assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {"0o644"}
        os.umask(0o077)
        checkpoint.write_text(tmp_path / "private.txt", "x")
        assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600
    finally:
        os.umask(previous)
    target = tmp_path / "shared.txt"
    target.write_text("old")
    target.chmod(0o664)
    # Replacing a file keeps its mode, as writing into it would
    checkpoint.write_text(target, "new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o664 and target.read_text() == "new"


def _future_checkpoint(path: Path) -> None:
    state = checkpoint.load(path)
    state["config"]["option_of_a_later_version"] = 3
    checkpoint.save(path, state)


@pytest.mark.parametrize("damage", ["empty", "other-version"])
@pytest.mark.slow
def test_damaged_checkpoints(tmp_path, damage):
    out = tmp_path / "cmp"
    argv = ["compare", *TINY, "--methods", "erm", "--seeds", "1", "--out", str(out)]
    assert cli(*argv).returncode == 0
    ckpt = out / "erm" / "seed0" / "checkpoint.pt"
    if damage == "empty":
        ckpt.write_bytes(b"")
    else:
        _future_checkpoint(ckpt)
    resumed = cli("train", "--out", str(ckpt.parent), "--resume")
    assert resumed.returncode == 2
    line = one_error_line(resumed.stderr)
    expected = (
        "is empty (0 bytes)" if damage == "empty" else "written by another version of multimix"
    )
    assert expected in line and "move it aside" in line
    # The file is blamed, not a flag
    assert "option_of_a_later_version" not in line or "unknown saved key" in line
    # compare keeps the README's promise: a run it cannot continue is moved aside and trained again.
    again = cli(*argv)
    assert again.returncode == 0, again.stderr
    assert len(list((out / "erm").glob("seed0.stale-*"))) == 1
    assert checkpoint.load(ckpt)["config"]["epochs"] == 1


# -- one-line errors, before any work ----------------------------------------------------------

CUDA = torch.cuda.is_available()

#: flag -> bad values; each value is the argument list appended to a valid command. Every flag of
#: `train` and `compare` must be here: a new flag without an entry fails test_every_flag_is_covered.
BAD = {
    "--config": [
        ["--config", "{tmp}/missing.yaml"],
        ["--config", "{tmp}/bad.yaml"],
        ["--config", "{tmp}/list.yaml"],
    ],
    "--dataset": [["--dataset", "imagenet"], ["--dataset", "cifar10", "--data-dir", "{tmp}"]],
    "--model": [
        ["--model", "vgg"],
        ["--dataset", "digits", "--model", "cnn1d"],
        ["--dataset", "mnist1d", "--model", "convnet"],
    ],
    "--method": [["--method", "puzzlemix"]],
    "--epochs": [["--epochs", "0"], ["--epochs", "ten"], ["--epochs", "1.5"]],
    "--batch-size": [["--batch-size", "0"]],
    "--lr": [["--lr", "-1"], ["--lr", "nan"], ["--lr", "inf"]],
    "--optimizer": [["--optimizer", "rmsprop"]],
    "--weight-decay": [["--weight-decay", "-1"]],
    "--momentum": [["--momentum", "1"], ["--momentum", "-0.1"]],
    "--nesterov": [["--nesterov=yes"]],
    "--scheduler": [["--scheduler", "plateau"]],
    "--milestones": [
        ["--scheduler", "step", "--milestones", "0.5,0.2"],
        ["--milestones", "1.5"],
        ["--milestones", ","],
    ],
    "--lr-decay": [["--lr-decay", "0"], ["--lr-decay", "2"]],
    "--recipe": [
        ["--recipe", "imagenet-1k"],
        ["--dataset", "mnist1d", "--recipe", "alignmixup"],
    ],
    "--seed": [["--seed", "-1"], ["--seed", str(2**64)], ["--seed", "x"]],
    "--data-seed": [["--data-seed", "-1"], ["--data-seed", str(2**40)]],
    "--val-fraction": [
        ["--val-fraction", "0"],
        ["--val-fraction", "1"],
        ["--val-fraction", "0.999"],
        ["--val-fraction", "0.001"],
    ],
    "--data-dir": [
        ["--dataset", "cifar10", "--data-dir", "{tmp}/nowhere"],
        ["--dataset", "cifar100"],
        ["--dataset", "mnist", "--data-dir", "{tmp}/nowhere"],
        ["--dataset", "kmnist"],
    ],
    "--download": [["--download=sure"], ["--dataset", "mnist", "--download"]],
    "--toy-classes": [["--toy-classes", "1"]],
    "--toy-components": [["--toy-components", "0"]],
    "--toy-dim": [["--toy-dim", "0"]],
    "--train-size": [["--train-size", "0"], ["--train-size", "5"]],
    "--alpha": [["--alpha", "0"], ["--alpha", "-1"]],
    "--alpha-range": [
        ["--method", "multimix", "--alpha-range", "2,0.5"],
        ["--method", "multimix", "--alpha-range", "1"],
        ["--method", "mixup", "--alpha-range", "0.5,2"],
        ["--method", "multimix", "--alpha", "1", "--alpha-range", "0.5,2"],
    ],
    "--input-mixup-prob": [
        ["--method", "multimix", "--input-mixup-prob", "1.5"],
        ["--method", "cutmix", "--input-mixup-prob", "0.5"],
    ],
    "--input-mixup-alpha": [["--input-mixup-alpha", "0"]],
    "--per-sample": [["--per-sample=1"]],
    "--cutmix-alpha": [["--cutmix-alpha", "0"], ["--cutmix-alpha", "inf"]],
    "--switch-prob": [["--switch-prob", "1.5"], ["--switch-prob", "-0.5"]],
    "--label-smoothing": [["--label-smoothing", "1"], ["--label-smoothing", "-0.1"]],
    "--layers": [
        ["--method", "manifold", "--layers", "nope"],
        ["--method", "confmix", "--layers", "input,nope"],
        ["--method", "manifold", "--layers", ","],
    ],
    "--mix-rows": [["--mix-rows", "0"]],
    "--tuple-size": [["--tuple-size", "0"], ["--tuple-size", "two"]],
    "--mix-prob": [["--mix-prob", "1.5"]],
    # their deprecated names (still read)
    "--n": [["--n", "0"]],
    "--m": [["--m", "0"], ["--m", "two"]],
    "--p": [["--p", "1.5"]],
    "--keep-clean": [["--keep-clean=1"]],
    "--alpha-schedule": [
        ["--alpha-schedule", "cosine"],
        ["--method", "mixup", "--alpha-schedule", "linear"],
        ["--method", "erm", "--alpha-schedule", "linear", "--alpha-start", "0", "--alpha-end", "1"],
    ],
    "--alpha-start": [
        ["--method", "mixup", "--alpha-schedule", "exp", "--alpha-start", "-1", "--alpha-end", "1"]
    ],
    "--alpha-end": [
        ["--method", "mixup", "--alpha-schedule", "exp", "--alpha-start", "0", "--alpha-end", "nan"]
    ],
    "--half-life": [["--half-life", "0"]],
    "--confmix-scale": [["--confmix-scale", "0"]],
    "--confmix-warmup": [["--confmix-warmup", "-1"]],
    "--attention": [["--attention", "spatial"], ["--method", "dense-multimix", "--model", "mlp"]],
    "--teacher-momentum": [
        ["--method", "multimix", "--teacher-momentum", "2"],
        ["--teacher-momentum", "0.9"],
    ],
    "--distill-weight": [["--distill-weight", "-1"]],
    "--temperature": [["--temperature", "0"]],
    "--device": [["--device", "tpu9"], ["--device", "cuda:99"]]
    + ([] if CUDA else [["--device", "cuda"]]),
    "--threads": [["--threads", "0"], ["--threads", "100000"]],
    "--eval-batch-size": [["--eval-batch-size", "0"]],
    "--test-every": [["--test-every", "never"]],
    "--tensorboard": [["--tensorboard=yes"]],
    "--amp": [["--amp", "fp8"], ["--amp", "fp16"]] if not CUDA else [["--amp", "fp8"]],
    "--channels-last": [["--channels-last=1"], ["--dataset", "mnist1d", "--channels-last"]],
    "--compile": [["--compile=yes"]],
    "--sync-bn": [["--sync-bn=on"]],
    "--train-subset": [
        ["--train-subset", "-1"],
        ["--train-subset", "many"],
        ["--train-subset", "15"],
        ["--dataset", "fashion-mnist", "--train-subset", "70000"],
    ],
    "--cuda-graph": [["--cuda-graph=yes"]]
    + ([["--device", "cuda", "--amp", "fp16", "--cuda-graph"]] if CUDA else [["--cuda-graph"]]),
    "--mix-scope": [["--mix-scope", "world"], ["--method", "mixup", "--mix-scope", "global"]],
    "--out": [
        ["--out", "{tmp}/afile"],
        ["--out", "{tmp}/afile/run"],
        ["--out", "/proc/multimix-run"],
    ],
    "--quiet": [["--quiet=yes"]],
    "--verbose": [["--verbose=2"]],
    # train only
    "--resume": [["--resume", "--out", "{tmp}/empty"]],
    # compare only
    "--methods": [["--methods", "erm,foo"], ["--methods", ","]],
    "--seeds": [["--seeds", "0"], ["--seeds", "x"], ["--seed", str(2**31 - 2), "--seeds", "3"]],
    "--jobs": [["--jobs", "0"], ["--jobs", "many"]],
    "--evaluate": [["--evaluate=yes"]],
}


def _subcommand_flags(name: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[name]
    return {
        s for a in sub._actions for s in a.option_strings if s.startswith("--") and s != "--help"
    }


def test_every_flag_is_covered():
    flags = _subcommand_flags("train") | _subcommand_flags("compare")
    flags = {
        f for f in flags if not f.startswith("--no-")
    }  # the negative of a covered boolean flag
    assert flags <= set(BAD), f"flags without bad values in this table: {sorted(flags - set(BAD))}"


def _cases():
    train_flags, compare_flags = _subcommand_flags("train"), _subcommand_flags("compare")
    for flag, values in BAD.items():
        for value in values:
            for command, flags in (("train", train_flags), ("compare", compare_flags)):
                if flag in flags:
                    yield pytest.param(command, value, id=f"{command} {' '.join(value)}")


@pytest.fixture
def files(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "bad.yaml").write_text("epochs: [1\n")
    (tmp_path / "list.yaml").write_text("- epochs\n")
    return tmp_path


@pytest.mark.parametrize(("command", "bad"), list(_cases()))
def test_bad_flag_exits_2_with_one_line(files, capsys, command, bad):
    bad = [a.replace("{tmp}", str(files)) for a in bad]
    if command == "compare":  # compare takes its methods from --methods
        bad = ["--methods" if a == "--method" else a for a in bad]
        bad = bad if "--methods" in bad else ["--methods", "erm", *bad]
    argv = [command, *TINY, "--out", str(files / "run"), *bad]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("multimix")
    assert not (files / "run").exists()  # rejected before anything was written


def test_plain_sgd_is_possible(tmp_path):
    assert (
        main(
            [
                "train",
                *TINY,
                "--optimizer",
                "sgd",
                "--momentum",
                "0",
                "--lr",
                "0.1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    group = checkpoint.load(tmp_path / "checkpoint.pt")["optimizer"]["param_groups"][0]
    assert group["momentum"] == 0 and group["nesterov"] is False


# -- what a user sees ---------------------------------------------------------------------------


@pytest.mark.slow
def test_progress_lines_without_a_terminal(tmp_path):
    loud = [a for a in TINY if a != "--quiet"]
    quiet = cli("train", *TINY, "--epochs", "3", "--out", str(tmp_path / "q"))
    assert quiet.returncode == 0 and quiet.stderr == ""
    result = cli("train", *loud, "--epochs", "20", "--out", str(tmp_path / "r"))
    assert result.returncode == 0
    lines = result.stderr.strip().splitlines()
    epochs = [line for line in lines if ": epoch " in line]
    assert [line.split("epoch ")[1].split("/")[0] for line in epochs] == [
        str(e) for e in range(2, 21, 2)
    ]
    assert "toy erm s0: epoch 20/20 · train loss " in epochs[-1] and "{" not in result.stderr
    verbose = cli("train", "-v", *loud, "--epochs", "3", "--out", str(tmp_path / "v"))
    assert sum(": epoch " in line for line in verbose.stderr.splitlines()) == 3
    compared = cli(
        "compare", *loud, "--methods", "erm,mixup", "--seeds", "1", "--out", str(tmp_path / "c")
    )
    assert "[1/2 runs, " in compared.stderr and "[2/2 runs, " in compared.stderr
    assert "mixup seed 0: test " in compared.stderr


@pytest.mark.slow
def test_train_interrupted_says_how_to_continue(tmp_path):
    out = tmp_path / "r"
    proc = popen("train", *LONG, "--out", str(out))
    wait_for(lambda: (out / "checkpoint.pt").exists(), what="the first epoch")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert (
        last_line(err) == f"multimix: interrupted; to continue: multimix train --out {out} --resume"
    )


def test_help_shows_each_default_once():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["train"]
    for action in sub._actions:
        assert (action.help or "").count("default") <= 1, action.help
    text = sub.format_help()
    assert "(default: 0)" in text and "==SUPPRESS==" not in text  # --seed
    # The recipes, listed (argparse wraps the help: compare the words)
    flat = " ".join(text.split())
    assert "(default: the dataset's recipe)" in flat and "other datasets:" in flat


def test_accuracy_axis_never_magnifies_noise():
    low, high = accuracy_axis([95.3, 95.8, 96.1])
    assert high - low >= 3 and low <= 95.3 and high >= 96.1
    assert accuracy_axis([10.0, 99.5]) == (9.0, 100.0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="drives a pseudo-terminal")
@pytest.mark.slow
def test_on_a_terminal_log_lines_go_above_the_bar(tmp_path):
    import fcntl
    import pty
    import re
    import select
    import struct
    import termios

    argv = [
        sys.executable,
        "-m",
        "multimix.cli",
        "compare",
        *[a for a in TINY if a != "--quiet"],
        "--epochs",
        "3",
        "--methods",
        "erm,mixup",
        "--seeds",
        "1",
        "--jobs",
        "2",
        "--out",
        str(tmp_path / "c"),
    ]
    pid, fd = pty.fork()
    if pid == 0:  # the child: wait for the window size, then become the CLI
        _default_sigint()
        time.sleep(0.5)
        os.execv(sys.executable, argv)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    screen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 5)[0]:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    _, status = os.waitpid(pid, 0)
    text = screen.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "runs:" in text and "2/2" in text  # tqdm's bar over the two runs
    logged = [m.start() for m in re.finditer(r"toy \w+ s0: (epoch|training)", text)]
    assert len(logged) == 2 * (1 + 3)
    for start in logged:  # every log line starts on a cleared line, never in the middle of the bar
        assert re.search(r"\r[ ]*\r$", text[:start]), text[max(0, start - 200) : start + 50]


# -- the commands end to end, in this process -----------------------------------------------------


def test_cli_rejects_bad_input_with_exit_code_2(tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("epochs: 2\nlearning_rate: 0.1\n")
    for argv, message in [
        (["train", "--config", str(bad_yaml)], "unknown --config key 'learning_rate'; valid keys:"),
        (["train", "--method", "puzzlemix"], "valid values: erm, mixup, manifold, multimix"),
        (["train", "--epochs", "0"], "invalid value for epochs: 0"),
        (["train", "--nope"], "unrecognized arguments: --nope"),
        (
            ["compare", "--methods", "erm,foo"],
            "invalid value for --methods: 'erm,foo'; valid methods:",
        ),
        (
            ["train", "--dataset", "cifar10", "--data-dir", str(tmp_path)],
            "cifar10 binary files not found",
        ),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("runs"))  # nothing written


def test_yaml_config_and_flags_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "dataset: toy\nepochs: 1\ntrain-size: 200\nthreads: 1\nmethod: mixup\nalpha: 0.4\n"
    )
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    saved = checkpoint.load(out / "checkpoint.pt")["config"]
    assert saved["epochs"] == 2 and saved["alpha"] == 0.4 and saved["train_size"] == 200


# -- --version and the packaged configurations (--config NAME) -----------------------------------


def test_version_prints_the_version_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"multimix {multimix.__version__}\n"


def test_version_from_a_source_tree_never_installed(monkeypatch):
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert version() == multimix.__version__


def _config_of(*argv: str, command: str = "train"):
    return resolve_config(build_parser().parse_args([command, *argv]))


@pytest.mark.parametrize("command", ["train", "compare"])
def test_config_names_a_packaged_configuration(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)  # no file called demo here: the packaged one is read
    demo = _config_of("--config", "demo", command=command)
    assert (demo.dataset, demo.model_name, demo.lr, demo.epochs) == ("mnist1d", "cnn1d", 0.01, 100)
    # flags still override it
    assert _config_of("--config", "demo", "--epochs", "3", command=command).epochs == 3


def test_config_an_existing_path_wins_over_a_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("demo").write_text("dataset: toy\nepochs: 7\n")
    config = _config_of("--config", "demo")
    assert (config.dataset, config.epochs) == ("toy", 7)


def test_config_unknown_name_is_one_line_naming_the_packaged_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", "demos", "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == (
        "multimix: error: cannot read config file demos: no such file, and no packaged "
        f"configuration of that name (packaged: {', '.join(packaged_configs())})"
    )
    assert "demo" in packaged_configs()
    assert not (tmp_path / "run").exists()


def test_compare_on_a_tiny_budget(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = [
        "compare",
        "--dataset",
        "toy",
        "--train-size",
        "300",
        "--epochs",
        "2",
        "--threads",
        "1",
        "--methods",
        "erm,multimix",
        "--seeds",
        "2",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| erm | 2 |" in printed and "| multimix | 2 |" in printed and "results.png" in printed
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["seed"]) for r in rows] == [
        ("erm", "0"),
        ("erm", "1"),
        ("multimix", "0"),
        ("multimix", "1"),
    ]
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
    argv = [
        "plot-boundary",
        "--epochs",
        "2",
        "--train-size",
        "200",
        "--threads",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    assert (out / "boundary.png").read_bytes()[:4] == b"\x89PNG"
    assert {p.name for p in out.iterdir()} >= {"erm", "mixup", "manifold", "boundary.png"}
    with pytest.raises(SystemExit) as exc:
        main(["plot-boundary", "--dataset", "digits", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "needs a 2-D dataset" in capsys.readouterr().err


def test_compare_reports_both_test_figures_and_reuses_summaries_older_than_the_second(
    tmp_path, capsys
):
    """The test accuracy at the epoch chosen on validation (the result) and the best over epochs
    (the papers' convention), each named for what it is; a summary.json written before the second
    existed is reused, its figure shown as missing."""
    import json

    from multimix.train.compare import BEST_TEST_HEADING, LEGEND, TEST_HEADING

    out = tmp_path / "cmp"
    argv = [
        "compare",
        *TINY,
        "--epochs",
        "2",
        "--methods",
        "erm",
        "--seeds",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"| {TEST_HEADING} | {BEST_TEST_HEADING} |" in printed and LEGEND in printed
    assert "optimistic" in BEST_TEST_HEADING and "optimistic" not in TEST_HEADING
    assert LEGEND in (out / "results.md").read_text()
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        summary = json.loads((out / "erm" / f"seed{row['seed']}" / "summary.json").read_text())
        best = summary["best_test_over_epochs"]
        assert float(row["best_test_acc_over_epochs"]) == best["test_acc"]
        assert float(row["test_acc"]) == summary["best"]["test_acc"] <= best["test_acc"]
    erm_line = next(line for line in printed.splitlines() if line.startswith("| erm "))
    assert erm_line.count("±") == 3  # val, and both test figures

    old = out / "erm" / "seed0" / "summary.json"  # as an earlier version wrote it
    summary = json.loads(old.read_text())
    del summary["best_test_over_epochs"]
    old.write_text(json.dumps(summary))
    before = old.stat().st_mtime_ns
    assert main(argv) == 0
    assert old.stat().st_mtime_ns == before  # reused, not trained again
    printed = capsys.readouterr().out
    erm_line = next(line for line in printed.splitlines() if line.startswith("| erm "))
    assert erm_line.count("±") == 2 and " — |" in erm_line  # the honest figure stays
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["best_test_acc_over_epochs"] == "" and rows[1]["best_test_acc_over_epochs"]
