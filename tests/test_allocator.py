"""train/allocator.py: large CPU buffers kept by glibc instead of page-faulted in every step."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from conftest import tiny_config
from multimix.train import allocator

GLIBC_LINUX = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"

#: A child process: allocate, fill and free a 64 MiB tensor nine times; print the minor page faults
#: of the last eight (the first faults its pages in either way).
FAULTS = """
import json, resource, sys, torch
from multimix.train.allocator import keep_large_buffers
applied = keep_large_buffers() if sys.argv[1] == "kept" else False
torch.empty(16 << 20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    torch.empty(16 << 20).fill_(1.0)  # 16 Mi floats: 64 MiB, above glibc's default threshold
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _faults(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC_LINUX, reason="glibc's mallopt: Linux with glibc only")
@pytest.mark.slow
def test_kept_buffers_are_not_page_faulted_in_again():
    system, kept = _faults("system"), _faults("kept")
    pages = (64 << 20) // 4096  # one 64 MiB buffer in 4 KiB pages
    # Without it, each of the eight allocations faults its 16 384 pages in afresh
    assert system["faults"] >= 7 * pages, system
    # With it, the freed buffer is reused: at most one buffer's worth of faults in eight allocations
    assert kept["applied"] and kept["faults"] <= pages + pages // 8, kept


@pytest.fixture
def fresh(monkeypatch):
    """The module as in a new process (nothing applied yet), without allocator variables."""
    monkeypatch.setattr(allocator, "_applied", None)
    for key in list(os.environ):
        if key.startswith("MALLOC_") or key in ("GLIBC_TUNABLES", "LD_PRELOAD"):
            monkeypatch.delenv(key)
    return monkeypatch


@pytest.mark.skipif(not GLIBC_LINUX, reason="glibc's mallopt: Linux with glibc only")
def test_applied_once_and_then_a_no_op(fresh):
    assert allocator.keep_large_buffers() is True
    assert allocator._applied == allocator.DEFAULT_THRESHOLD
    assert allocator.keep_large_buffers() is True  # idempotent
    assert allocator.keep_large_buffers(1 << 20) is True  # a lower threshold: already covered


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MALLOC_MMAP_THRESHOLD_", "65536"),
        ("MALLOC_ARENA_MAX_", "2"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0"),
        ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
    ],
)
def test_an_allocator_the_user_tuned_is_left_alone(fresh, variable, value):
    fresh.setenv(variable, value)
    assert allocator.keep_large_buffers() is False
    assert allocator._applied is None


@pytest.mark.parametrize(
    ("bad", "error"), [(-1, ValueError), (2**31, ValueError), (1.5, TypeError)]
)
def test_a_bad_threshold_is_refused_by_name(fresh, bad, error):
    with pytest.raises(error, match="threshold_bytes"):
        allocator.keep_large_buffers(bad)


@pytest.mark.skipif(not GLIBC_LINUX, reason="glibc's mallopt: Linux with glibc only")
def test_a_cpu_training_run_keeps_large_buffers(fresh, tmp_path):
    from multimix.train import train

    train(tiny_config(epochs=1), tmp_path / "run")
    assert allocator._applied == allocator.DEFAULT_THRESHOLD
