"""Training under torchrun: real processes, a real gloo process group, DDP, on the CPU.

Each test starts ``torchrun --standalone --nproc_per_node 2`` on the real CLI, as a user would.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import read_metrics, torchrun_env, torchrun_failure
from multimix.train.distributed import share

BIN = Path(sys.executable).parent
TIMEOUT = 300  # a hang fails the test instead of the suite


def torchrun(nproc: int, args: list[str], *, module: bool = False) -> list[str]:
    """The torchrun command line: ``--no-python multimix`` or, with ``module``, ``python -m multimix``."""
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
    ]
    return launcher + (["-m", "multimix"] if module else ["--no-python", "multimix"]) + args


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=torchrun_env())


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize(("total", "world"), [(15, 2), (16, 2), (7, 3), (2, 2), (100, 8)])
def test_shares_are_contiguous_cover_everything_and_differ_by_at_most_one(total, world):
    parts = [share(total, r, world) for r in range(world)]
    assert [p.start for p in parts] == [0] + [p.stop for p in parts[:-1]]
    assert parts[-1].stop == total
    sizes = [p.stop - p.start for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == total


# An epoch (240 steps) of SGD at a small learning rate on a batch of 15 that splits 8 + 7: the loss
# weighting must make the averaged gradient the global batch's mean. (At lr 0.05 rounding differences
# grow over 480 steps to ~1e-3: training amplifies them; that is not a difference of computation.)
ERM = [
    "train",
    "--dataset",
    "mnist1d",
    "--epochs",
    "1",
    "--batch-size",
    "15",
    "--optimizer",
    "sgd",
    "--lr",
    "0.005",
    "--threads",
    "1",
    "--quiet",
]


@pytest.mark.slow
def test_two_processes_end_with_the_weights_of_one(tmp_path):
    one = run([str(BIN / "multimix"), *ERM, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = run(torchrun(2, [*ERM, "--out", str(tmp_path / "two")]))
    assert two.returncode == 0, two.stderr
    assert max_difference(weights(tmp_path / "one"), weights(tmp_path / "two")) < 1e-5
    for a, b in zip(read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two"), strict=True):
        # At most a tie-break among 400
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1e-3)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["processes"] == 2
    assert two.stdout.count("test accuracy") == 1  # rank 0 reports for both
    assert not list((tmp_path / "two").glob("*.tmp"))


@pytest.mark.slow
def test_resume_after_sigkill_of_every_process_ends_as_the_uninterrupted_run(tmp_path):
    # MultiMix, local scope: each rank has its own mixing generator, whose state must survive too.
    args = [
        "train",
        "--dataset",
        "mnist1d",
        "--method",
        "multimix",
        "--epochs",
        "3",
        "--batch-size",
        "30",
        "--threads",
        "1",
        "--quiet",
    ]
    full = run(torchrun(2, [*args, "--out", str(tmp_path / "full")], module=True))
    assert full.returncode == 0, full.stderr

    killed = tmp_path / "killed"
    cmd = torchrun(2, [*args, "--out", str(killed)], module=True)
    proc = subprocess.Popen(
        cmd,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=torchrun_env(),
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (killed / "checkpoint.pt").exists():  # mid-way through epoch 2
            assert proc.poll() is None and time.monotonic() < deadline, (
                "the run ended before it could be killed"
            )
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers at once
        proc.wait()
    assert len(torch.load(killed / "checkpoint.pt", weights_only=True)["history"]) < 3

    resumed = run([*cmd, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(tmp_path / "full"), weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["val_acc"] for r in read_metrics(tmp_path / "full")] == [
        r["val_acc"] for r in read_metrics(killed)
    ]


# Each mixer once (mixup-cutmix is CutMix's and mixup's code, switched): one epoch, 2 processes.
@pytest.mark.parametrize(
    ("method", "dataset"),
    [
        ("mixup", "mnist1d"),
        ("manifold", "mnist1d"),
        ("multimix", "mnist1d"),
        ("dense-multimix", "mnist1d"),
        ("confmix", "mnist1d"),
        ("cutmix", "digits"),
    ],
)
@pytest.mark.slow
def test_every_method_trains_under_ddp(tmp_path, method, dataset):
    extra = ["--confmix-warmup", "0"] if method == "confmix" else []
    out = tmp_path / "run"
    result = run(
        torchrun(
            2,
            [
                "train",
                "--dataset",
                dataset,
                "--method",
                method,
                "--epochs",
                "1",
                "--batch-size",
                "32",
                "--lr",
                "0.003",
                "--threads",
                "1",
                "--quiet",
                "--out",
                str(out),
                *extra,
            ],
        )
    )
    assert result.returncode == 0, torchrun_failure(result)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2
    assert summary["best"]["val_acc"] > 0.2  # it learned: chance is 0.1


# The CLI in a process that lists the threads it still runs as the interpreter begins to exit (at
# atexit, before finalisation frees what is left), one write per rank: the ranks share stdout.
_THREADS_AT_EXIT = """
import atexit, os, sys
def threads():
    task = f"/proc/{os.getpid()}/task"
    names = []
    for t in os.listdir(task):
        try:
            names.append(open(f"{task}/{t}/comm").read().strip())
        except OSError:  # a thread that ended between the listing and the read: gone, as asked
            pass
    os.write(1, f"threads={','.join(sorted(names))};\\n".encode())
atexit.register(threads)
from multimix.cli import main
sys.exit(main(sys.argv[1:]))
"""
_LISTS_THREADS = [
    sys.executable,
    "-m",
    "torch.distributed.run",
    "--standalone",
    "--nproc_per_node",
    "2",
    "--no-python",
    sys.executable,
    "-c",
    _THREADS_AT_EXIT,
]


def _threads_at_exit(stdout: str) -> list[str]:
    return re.findall(r"threads=([^;]*);", stdout)


@pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="lists threads through Linux's /proc"
)
@pytest.mark.slow
def test_training_ends_with_the_process_group_and_its_threads_gone(tmp_path):
    """No gloo thread is left for interpreter finalisation to tear down: there it can abort a process
    whose run succeeded ('terminate called without an active exception')."""
    result = run(
        [
            *_LISTS_THREADS,
            "train",
            "--dataset",
            "mnist1d",
            "--method",
            "multimix",
            "--epochs",
            "1",
            "--train-subset",
            "640",
            "--batch-size",
            "64",
            "--threads",
            "1",
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert result.returncode == 0, torchrun_failure(result)
    listed = _threads_at_exit(result.stdout)
    assert len(listed) == 2, result.stdout + result.stderr[-3000:]
    assert not [names for names in listed if "gloo" in names], listed


@pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="lists threads through Linux's /proc"
)
@pytest.mark.slow
def test_sigterm_mid_run_leaves_no_gloo_thread_to_interpreter_finalisation(tmp_path):
    """A preempted run (torchrun forwards SIGTERM) says how to continue and exits without an abort:
    what the interrupted run held, the process group included, is freed before finalisation."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            *_LISTS_THREADS,
            "train",
            "--dataset",
            "mnist1d",
            "--method",
            "multimix",
            "--epochs",
            "50",
            "--train-subset",
            "640",
            "--batch-size",
            "32",
            "--threads",
            "1",
            "--quiet",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=torchrun_env(),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out / "checkpoint.pt").exists():  # both ranks are training
            assert proc.poll() is None and time.monotonic() < deadline, (
                "the run ended before it could be stopped"
            )
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGTERM)  # to torchrun, which forwards it to every rank
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of torchrun and its ranks
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "multimix: interrupted; to continue:" in stderr, stderr[-3000:]
    assert "terminate called" not in stderr, stderr[-3000:]
    # A rank whose collective was cut short by the other's exit can wait in it until torchrun kills it
    # (30 s on): such a rank lists nothing. Every rank that exits lists no gloo thread.
    listed = _threads_at_exit(stdout)
    assert not [names for names in listed if "gloo" in names], listed


@pytest.mark.slow
def test_dense_multimix_under_ddp_leaves_unused_layers_without_gradient(tmp_path):
    """The layers after the features get no gradient under Dense MultiMix: DDP must be told, or it fails."""
    out = tmp_path / "run"
    result = run(
        torchrun(
            2,
            [
                "train",
                "--dataset",
                "digits",
                "--model",
                "preactresnet8",
                "--method",
                "dense-multimix",
                "--epochs",
                "1",
                "--batch-size",
                "32",
                "--threads",
                "1",
                "--quiet",
                "--out",
                str(out),
            ],
        )
    )
    assert result.returncode == 0, torchrun_failure(result)


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (["--out", "{tmp}/afile"], "out"),  # found by rank 0 alone, when it takes the folder
        (["--sync-bn"], "sync_bn"),  # found by every rank, before the process group
        (["--batch-size", "3"], "batch_size"),
        # met by every rank alike at the end of the epoch: the loss they read is all-reduced
        (["--optimizer", "sgd", "--lr", "1e30"], "the run diverged"),
    ],
)
@pytest.mark.slow
def test_an_error_ends_every_process_with_one_line(tmp_path, bad, says):
    (tmp_path / "afile").write_text("not a folder")
    bad = [a.replace("{tmp}", str(tmp_path)) for a in bad]
    args = [
        "train",
        "--dataset",
        "toy",
        "--train-size",
        "300",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--quiet",
    ]
    if "--out" not in bad:
        bad += ["--out", str(tmp_path / "run")]
    start = time.monotonic()
    result = run(torchrun(2, [*args, *bad]))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("multimix: error:")]
    assert len(lines) == 1 and says in lines[0], result.stderr
    # torchrun itself ends with a traceback of its ChildFailedError (its report of failed workers),
    # which we cannot silence; the workers print none.
    assert result.stderr.count("Traceback") <= 1 and "[rank" not in result.stderr, result.stderr
    assert time.monotonic() - start < 120


@pytest.mark.slow
def test_other_commands_refuse_to_run_under_torchrun(tmp_path):
    result = run(
        torchrun(2, ["compare", "--dataset", "toy", "--epochs", "1", "--out", str(tmp_path / "c")])
    )
    assert result.returncode != 0
    assert "only `multimix train`" in result.stderr


@pytest.mark.parametrize("method", ["multimix", "dense-multimix"])
@pytest.mark.slow
def test_global_scope_on_two_processes_ends_as_one_process(tmp_path, method):
    """One Λ over the global batch, each rank its share of the n rows, gradients back to the owners."""
    args = [
        "train",
        "--dataset",
        "mnist1d",
        "--method",
        method,
        "--epochs",
        "1",
        "--train-subset",
        "750",
        "--batch-size",
        "15",
        "--optimizer",
        "sgd",
        "--lr",
        "0.005",
        "--threads",
        "1",
        "--quiet",
    ]
    one = run([str(BIN / "multimix"), *args, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = run(torchrun(2, [*args, "--mix-scope", "global", "--out", str(tmp_path / "two")]))
    assert two.returncode == 0, two.stderr[-3000:]
    assert max_difference(weights(tmp_path / "one"), weights(tmp_path / "two")) < 1e-5
    if method == "dense-multimix":
        return
    # Local scope, for contrast: each rank mixes its own share with its own draws, another run.
    local = run(torchrun(2, [*args, "--out", str(tmp_path / "local")]))
    assert local.returncode == 0, local.stderr[-3000:]
    assert max_difference(weights(tmp_path / "one"), weights(tmp_path / "local")) > 1e-3
