"""Seed 2, Table 1 and Figure 3 in kind: excess risk of manifold mixup by depth on random toy problems.

    python benchmarks/toy_depth.py [--problems 100] [--jobs 2]

Protocol (seed 2, §3): random Gaussian-mixture problems (SPEC §6), K ∈ {2, 3, 4, 5} in turn, N
components per class drawn in 1..5, 1000 training samples; the ``mlp`` model 2-512-512-512-K trained
20 epochs with batch 50 (Adam, lr 1e-3: the seed does not give its optimiser); ERM and manifold
mixup at layer k = 0 (input mixup) … 3 with α = 0.5 and one λ per pair. Every method of a problem
starts from the same initialisation. Excess risk = model error − Bayes error on the same fresh
sample of 100 000 points; normalised MMLB (α = 1) on 100 000 same-class pairs.

Writes benchmarks/results/toy_depth.md (+ .csv of every problem, + .png of excess risk by MMLB quartile).
No hyper-parameter is chosen here: the protocol is fixed by the seed.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parent
METHODS = ["ERM", "mixup k=0", "manifold k=1", "manifold k=2", "manifold k=3"]
SEED_TABLE = {"ERM": 18.1, "mixup k=0": 16.5, "manifold k=1": 14.7, "manifold k=2": 13.8, "manifold k=3": 13.2}
EVAL_SAMPLES = 100_000


def run_problem(index: int, epochs: int = 20) -> dict:
    """Train the five methods on problem ``index``; returns its row (errors as fractions)."""
    import torch

    from multimix import ManifoldMixup, soft_cross_entropy
    from multimix.analysis import excess_risk, mmlb
    from multimix.data.toy import GaussianMixtureProblem
    from multimix.functional import one_hot
    from multimix.models import build_model

    torch.set_num_threads(1)
    k = 2 + index % 4
    n_comp = 1 + int(torch.randint(5, (), generator=torch.Generator().manual_seed(10_000 + index)))
    problem = GaussianMixtureProblem.random(k, n_comp, dim=2, seed=index)
    x, y = problem.sample(1000, generator=torch.Generator().manual_seed(20_000 + index))
    row = {"problem": index, "K": k, "N": n_comp, "sigma": problem.sigma}
    row["mmlb_norm"], _ = mmlb(problem, alpha=1.0, n_samples=EVAL_SAMPLES, normalised=True,
                               generator=torch.Generator().manual_seed(30_000 + index))
    for method in METHODS:
        torch.manual_seed(index)  # the same initialisation for every method of this problem
        model = build_model("mlp", input_shape=(2,), num_classes=k)
        g = torch.Generator().manual_seed(40_000 + index)
        mixer = None
        if method != "ERM":
            layer = int(method[-1])
            mixer = ManifoldMixup(model, layers=["input" if layer == 0 else f"layer{layer}"], alpha=0.5,
                                  per_sample=True, num_classes=k, generator=g)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(epochs):
            for idx in torch.randperm(len(y), generator=g).split(50):
                if mixer is None:
                    logits, targets = model(x[idx]), one_hot(y[idx], k)
                else:
                    logits, targets = mixer(x[idx], y[idx])
                loss = soft_cross_entropy(logits, targets)
                opt.zero_grad()
                loss.backward()
                opt.step()
        # The same evaluation sample for every method of this problem (paired comparison).
        risk = excess_risk(model, problem, n_samples=EVAL_SAMPLES, generator=torch.Generator().manual_seed(50_000 + index))
        row["bayes_error"] = risk.bayes_error
        row[f"{method} error"] = risk.model_error
        row[f"{method} excess"] = risk.absolute
    return row


def mean_se(values: list[float]) -> tuple[float, float]:
    m = statistics.mean(values)
    return m, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    start = time.time()
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        rows = list(pool.map(run_problem, range(args.problems), [args.epochs] * args.problems))
    minutes = (time.time() - start) / 60

    from multimix.train.checkpoint import atomic_write, write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(ROOT / "results" / "toy_depth.csv", buffer.getvalue())

    # Relative excess risk is undefined where the Bayes error is ~0 (separable problems).
    rel_rows = [r for r in rows if r["bayes_error"] >= 0.005]
    lines = [
        "# Excess risk of manifold mixup by depth on random toy problems (seed 2, Table 1 in kind)",
        "",
        f"Command: `python benchmarks/toy_depth.py --problems {args.problems} --epochs {args.epochs}` "
        f"({minutes:.1f} min with {args.jobs} processes). {len(rows)} problems, K ∈ {{2, 3, 4, 5}} in turn, "
        "N ∈ 1..5 components per class, means uniform in [−1, 1]², σ uniform in [0.1, 0.3]; 1000 training "
        "samples; mlp 2-512-512-512-K, Adam lr 1e-3, 20 epochs, batch 50, α = 0.5, one λ per pair. "
        f"Errors on {EVAL_SAMPLES:,} fresh samples per problem. Mean ± standard error over problems.",
        "",
        f"Relative excess risk = 100 · (error − Bayes error) / Bayes error, over the {len(rel_rows)} problems "
        "whose Bayes error is at least 0.5% (it is undefined for separable ones).",
        "",
        "| method | absolute excess risk (points of %) | relative excess risk (%) | seed 2, Table 1 (%) |",
        "|---|---|---|---|",
    ]
    for method in METHODS:
        a, a_se = mean_se([100 * r[f"{method} excess"] for r in rows])
        rel, rel_se = mean_se([100 * r[f"{method} excess"] / r["bayes_error"] for r in rel_rows])
        lines.append(f"| {method} | {a:.2f} ± {a_se:.2f} | {rel:.1f} ± {rel_se:.1f} | {SEED_TABLE[method]} |")
    erm = [r["ERM excess"] for r in rows]
    lines += ["", "Paired differences to ERM (absolute excess risk, points of %; negative = better than ERM):", "",
              "| method | mean ± SE | problems better than ERM |", "|---|---|---|"]
    for method in METHODS[1:]:
        diff = [100 * (r[f"{method} excess"] - e) for r, e in zip(rows, erm)]
        m, se = mean_se(diff)
        better = sum(d < 0 for d in diff)
        lines.append(f"| {method} | {m:+.2f} ± {se:.2f} | {better}/{len(diff)} |")

    # By normalised-MMLB quartile (seed 2, Figure 3).
    ordered = sorted(rows, key=lambda r: r["mmlb_norm"])
    q = len(ordered) / 4
    quartiles = [ordered[round(i * q): round((i + 1) * q)] for i in range(4)]
    lines += ["", "By normalised-MMLB quartile (mean absolute excess risk, points of %):", "",
              "| quartile | MMLB range | " + " | ".join(METHODS) + " |", "|---|---|" + "---|" * len(METHODS)]
    for i, part in enumerate(quartiles):
        cells = [f"{statistics.mean(100 * r[f'{m} excess'] for r in part):.2f}" for m in METHODS]
        lines.append(f"| Q{i + 1} | {part[0]['mmlb_norm']:.3f}–{part[-1]['mmlb_norm']:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "![excess risk by MMLB quartile](toy_depth.png)", ""]
    write_text(ROOT / "results" / "toy_depth.md", "\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=120)
    width = 0.16
    for j, method in enumerate(METHODS):
        means = [statistics.mean(100 * r[f"{method} excess"] for r in part) for part in quartiles]
        ses = [mean_se([100 * r[f"{method} excess"] for r in part])[1] for part in quartiles]
        ax.bar([i + (j - 2) * width for i in range(4)], means, width, yerr=ses, capsize=2, label=method)
    ax.set_xticks(range(4), [f"Q{i + 1}\n{p[0]['mmlb_norm']:.3f}–{p[-1]['mmlb_norm']:.3f}" for i, p in enumerate(quartiles)])
    ax.set_xlabel("normalised MMLB quartile (harder for mixup →)")
    ax.set_ylabel("excess risk (points of %)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(ROOT / "results" / "toy_depth.png", lambda f: fig.savefig(f, format="png"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
