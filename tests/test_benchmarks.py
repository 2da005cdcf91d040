"""The benchmark scripts run (tiny budgets) and print their tables: they must not rot between releases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_functional_ops_benchmark_prints_its_ratios(tmp_path):
    out = run("benchmarks/functional_ops.py", "--rounds", "1", "--out", str(tmp_path / "f.md"))
    assert "ratio (torch / ours)" in out and "ratio multimix / matmul" in out
    assert (tmp_path / "f.md").read_text() == out


def test_overhead_benchmark_runs_on_the_small_model(tmp_path):
    out = run("benchmarks/overhead.py", "--models", "cnn1d", "--rounds", "1", "--no-memory", "--out", str(tmp_path / "o.md"))
    for method in ("ERM", "MultiMix n=1000", "MultiMix n=1000, generic", "Dense MultiMix n=1000"):
        assert f"| {method} |" in (tmp_path / "o.md").read_text()
    assert "interpolation Λ Z" in out


def test_model_cost_benchmark_states_flops(tmp_path):
    out = run("benchmarks/model_cost.py", "--rounds", "1", "--threads", "1", "--out", str(tmp_path / "m.md"))
    assert "| preactresnet8 (w=32, default) | 307,690 | 74.3 |" in out and (tmp_path / "m.md").read_text().strip() == out.strip()
