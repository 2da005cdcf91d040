"""The benchmark scripts run (tiny budgets) and print their tables: they must not rot between releases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_functional_ops_benchmark_prints_its_ratios(tmp_path):
    out = run("benchmarks/functional_ops.py", "--rounds", "1", "--out", str(tmp_path / "f.md"))
    assert "ratio (torch / ours)" in out and "ratio multimix / matmul" in out
    assert (tmp_path / "f.md").read_text() == out


@pytest.mark.slow
def test_overhead_benchmark_runs_on_the_small_model(tmp_path):
    out = run(
        "benchmarks/overhead.py",
        "--models",
        "cnn1d",
        "--rounds",
        "1",
        "--no-memory",
        "--out",
        str(tmp_path / "o.md"),
    )
    for method in ("ERM", "MultiMix n=1000", "MultiMix n=1000, generic", "Dense MultiMix n=1000"):
        assert f"| {method} |" in (tmp_path / "o.md").read_text()
    assert "interpolation Λ Z" in out


@pytest.mark.slow
def test_ab_overhead_runs_a_revision_beside_the_working_tree():
    out = run(
        "benchmarks/ab_overhead.py",
        "--rev",
        "HEAD",
        "--methods",
        "multimix,dense",
        "--n",
        "20",
        "--rounds",
        "2",
        "--block-s",
        "0.01",
    )
    assert "multimix @ HEAD" in out and "dense @ working tree" in out
    assert "multimix: working tree / HEAD = " in out and "dense: working tree / HEAD = " in out
    bad = subprocess.run(
        [sys.executable, "benchmarks/ab_overhead.py", "--rev", "HEAD", "--methods", "mixup"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and "--methods: expected names from multimix, dense" in bad.stderr


@pytest.mark.slow
def test_overhead_floor_times_the_floors_and_a_cold_draw(tmp_path):
    out = run(
        "benchmarks/overhead_floor.py",
        "--rounds",
        "2",
        "--block-s",
        "0.005",
        "--out",
        str(tmp_path / "f.md"),
    )
    for step in (
        "ERM",
        "ERM, 10 000-row loss",
        "MultiMix n=1",
        "Dense MultiMix n=1",
        "Dense MultiMix n=1000",
    ):
        assert f"| {step} |" in out
    assert (
        "right after a training step" in out
        and (tmp_path / "f.md").read_text().strip() == out.strip()
    )


@pytest.mark.slow
def test_model_cost_benchmark_states_flops(tmp_path):
    out = run(
        "benchmarks/model_cost.py",
        "--rounds",
        "1",
        "--threads",
        "1",
        "--batch",
        "4",  # the step times are not what this checks: small batches keep it short
        "--out",
        str(tmp_path / "m.md"),
    )
    assert (
        "| preactresnet8 (w=32, default) | 307,690 | 74.3 |" in out
        and (tmp_path / "m.md").read_text().strip() == out.strip()
    )


def test_stacked_mlps_train_as_the_same_networks_one_at_a_time():
    """The toy study's batched trainer: P networks stacked, one Adam, each network's own data order,
    λ and partner — the weights each network gets trained alone with the same draws."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _stacked_mlp import StackedMLP, train_stacked
    from multimix import soft_cross_entropy
    from multimix.functional import one_hot
    from multimix.models import build_model

    P, n, k, batch, epochs = 3, 40, 3, 10, 2
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(P, n, 2, generator=g), torch.randint(k, (P, n), generator=g)
    orders = [torch.rand(P, n, generator=g).argsort(dim=1) for _ in range(epochs)]
    steps = epochs * (n // batch)
    draws = [
        (torch.rand(P, batch, generator=g), torch.rand(P, batch, generator=g).argsort(dim=1))
        for _ in range(steps)
    ]
    for layer in (None, 0, 2):
        models = []
        for p in range(P):
            torch.manual_seed(p)
            models.append(build_model("mlp", input_shape=(2,), num_classes=k))
        net = StackedMLP(models)
        train_stacked(
            net,
            x,
            y,
            k,
            epochs=epochs,
            batch_size=batch,
            lr=1e-3,
            layer=layer,
            orders=orders,
            draws=draws,
        )
        for p, model in enumerate(models):  # the same network, alone, with hooks-free manual mixing
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            step = 0
            for epoch in range(epochs):
                for start in range(0, n, batch):
                    idx = orders[epoch][p, start : start + batch]
                    h, t = x[p, idx], one_hot(y[p, idx], k)
                    if layer is not None:
                        lam, perm = draws[step][0][p], draws[step][1][p]
                        t = torch.lerp(t[perm], t, lam[:, None])
                    for i in range(1, model.depth + 1):
                        if layer == i - 1:
                            h = torch.lerp(h[perm], h, lam[:, None])
                        h = getattr(model, f"layer{i}")(h)
                    loss = soft_cross_entropy(model.fc(h), t)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    step += 1
            start = StackedMLP([_initial(p, k)]).weights
            for w_stacked, w, w0 in zip(
                net.weights,
                [
                    model.layer1[0].weight,
                    model.layer2[0].weight,
                    model.layer3[0].weight,
                    model.fc.weight,
                ],
                start,
                strict=True,
            ):
                # Adam divides by √v: rounding differences of near-zero gradients move a weight by up to
                # lr per step, so the tolerance is a fraction of how far the weights travelled (≤ 8e-3).
                # The stacked weights are stored transposed, (P, in, out).
                assert (w - w0[0].t()).abs().max() > 5e-3  # it trained
                assert torch.allclose(w_stacked[p].t(), w, atol=1e-3), (layer, p)


def _initial(p: int, k: int):
    import torch

    from multimix.models import build_model

    torch.manual_seed(p)
    return build_model("mlp", input_shape=(2,), num_classes=k)


@pytest.mark.slow
def test_scaling_benchmark_runs_on_a_tiny_budget(tmp_path):
    import re

    out_md = tmp_path / "scaling.md"
    run("benchmarks/scaling.py", "--quick", "--out", str(out_md))
    text = out_md.read_text()
    assert (tmp_path / "scaling.png").stat().st_size > 0
    for factor in ("n", "K", "d", "r"):
        assert f"## Growing {factor}" in text
    # The factor tables' rows (12 cells; the headline's rows have 5)
    rows = [
        line
        for line in text.splitlines()
        if line.startswith(("| n=", "| K=", "| d=", "| r=")) and line.count("|") == 13
    ]
    cases = {line.split("|")[2].strip() for line in rows}
    assert cases == {"ERM", "MultiMix", "MultiMix, no shortcut", "Dense MultiMix"}
    for line in rows:
        cells = [c.strip() for c in line.split("|")[1:-1]]
        measured, flop_model = float(cells[3].rstrip("×")), float(cells[5].rstrip("×"))
        assert measured > 0 and flop_model > 0
        if cells[1] == "ERM":
            assert measured == 1.0 and flop_model == 1.0
    peak = re.search(r"\| Dense MultiMix \| auto \| (\d+) \|", text)
    assert peak is not None and int(peak.group(1)) >= 0
