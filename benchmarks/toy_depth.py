"""Seed 2, Table 1 and Figure 3: excess risk of mixup by depth on random toy problems.

    python benchmarks/toy_depth.py [--problems 400] [--epochs 20] [--eval-samples 20000]
                                   [--mean-range -1,1] [--sigma-range 0.05,0.15] [--methods ERM,...] [--tag NAME]

Protocol (seed 2, §3): random Gaussian-mixture problems (SPEC §6), K ∈ {2, 3, 4, 5} in turn, N
components per class drawn in 1..5, 1000 training samples; the ``mlp`` model 2-512-512-512-K trained
20 epochs with batch 50 (Adam, lr 1e-3: the seed does not give its optimiser); ERM and mixup at
layer k = 0 (input mixup) … 3 with α = 0.5 and one λ per pair. Every method of a problem starts from
the same initialisation. Excess risk = model error − Bayes error on the same fresh sample per problem;
normalised MMLB (α = 1) on 100 000 same-class pairs.

The networks of all problems with the same K train at once (``_stacked_mlp``: one batched step for
all, each network with its own data order, λ and partners; a test checks it against one network at a
time). ``--mean-range``/``--sigma-range`` set the generator's difficulty: they are chosen on the ERM
row alone (``--methods ERM``), never on the mixup rows.

Writes benchmarks/results/toy_depth{tag}.md (+ .csv of every problem, + .png of excess risk by MMLB quartile).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stacked_mlp import StackedMLP, train_stacked

ROOT = Path(__file__).resolve().parent
METHODS = ["ERM", "mixup k=0", "manifold k=1", "manifold k=2", "manifold k=3"]
SEED_TABLE = {
    "ERM": 18.1,
    "mixup k=0": 16.5,
    "manifold k=1": 14.7,
    "manifold k=2": 13.8,
    "manifold k=3": 13.2,
}
MMLB_SAMPLES = 100_000


def make_problem(index: int, mean_range: tuple[float, float], sigma_range: tuple[float, float]):
    from multimix.data.toy import GaussianMixtureProblem

    k = 2 + index % 4
    n_comp = 1 + int(torch.randint(5, (), generator=torch.Generator().manual_seed(10_000 + index)))
    return GaussianMixtureProblem.random(
        k, n_comp, dim=2, seed=index, mean_range=mean_range, sigma_range=sigma_range
    )


def run_group(
    indices: list[int],
    methods: list[str],
    *,
    epochs: int,
    eval_samples: int,
    mean_range: tuple[float, float],
    sigma_range: tuple[float, float],
) -> list[dict]:
    """Train every method on the problems ``indices`` (one K), all networks of a method at once."""
    from multimix.analysis import mmlb
    from multimix.models import build_model

    problems = [make_problem(i, mean_range, sigma_range) for i in indices]
    k = problems[0].num_classes
    data = [
        p.sample(1000, generator=torch.Generator().manual_seed(20_000 + i))
        for p, i in zip(problems, indices, strict=True)
    ]
    x = torch.stack([d[0] for d in data]).float()
    y = torch.stack([d[1] for d in data])
    # The same evaluation sample for every method of a problem (paired comparison).
    evals = [
        p.sample(eval_samples, generator=torch.Generator().manual_seed(50_000 + i))
        for p, i in zip(problems, indices, strict=True)
    ]
    ex = torch.stack([e[0] for e in evals])
    ey = torch.stack([e[1] for e in evals])
    rows = []
    for p, i, (xe, ye) in zip(problems, indices, evals, strict=True):
        row = {"problem": i, "K": k, "N": p.components, "sigma": p.sigma}
        row["mmlb_norm"], _ = mmlb(
            p,
            alpha=1.0,
            n_samples=MMLB_SAMPLES,
            normalised=True,
            generator=torch.Generator().manual_seed(30_000 + i),
        )
        row["bayes_error"] = (p.bayes_predict(xe) != ye).double().mean().item()
        rows.append(row)
    for method in methods:
        models = []
        for i in indices:
            torch.manual_seed(i)  # the same initialisation for every method of a problem
            models.append(build_model("mlp", input_shape=(2,), num_classes=k))
        net = StackedMLP(models)
        layer = None if method == "ERM" else int(method[-1])
        train_stacked(
            net,
            x,
            y,
            k,
            epochs=epochs,
            batch_size=50,
            lr=1e-3,
            layer=layer,
            alpha=0.5,
            generator=torch.Generator().manual_seed(40_000 + indices[0] + 1000 * (layer or 0)),
        )
        wrong = (net.predict(ex.float(), chunk=2048) != ey).double().mean(dim=1)
        for row, err in zip(rows, wrong.tolist(), strict=True):
            row[f"{method} error"] = err
            row[f"{method} excess"] = err - row["bayes_error"]
    return rows


def mean_se(values: list[float]) -> tuple[float, float]:
    m = statistics.mean(values)
    return m, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eval-samples", type=int, default=20_000)
    parser.add_argument("--mean-range", default="-1,1")
    parser.add_argument(
        "--sigma-range", default="0.05,0.15", help="chosen on the ERM row: toy_difficulty.md"
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--tag", default="", help="suffix of the result files (e.g. _erm_s0.2-0.5)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the table and figure from the .csv and .json of a finished run (same flags)",
    )
    args = parser.parse_args()
    mean_range = tuple(float(v) for v in args.mean_range.split(","))
    sigma_range = tuple(float(v) for v in args.sigma_range.split(","))
    methods = [m for m in METHODS if m in args.methods.split(",")]
    if len(mean_range) != 2 or len(sigma_range) != 2 or not methods or "ERM" not in methods:
        parser.error(
            "--mean-range and --sigma-range take 'low,high'; --methods names from "
            f"{METHODS}, ERM included"
        )
    from multimix.train.checkpoint import atomic_write, write_text

    csv_path = ROOT / "results" / f"toy_depth{args.tag}.csv"
    meta_path = csv_path.with_suffix(".json")
    if args.report_only:  # the table and figure again from a finished run's files, without training
        rows = [
            {k: float(v) if k not in ("problem", "K", "N") else int(v) for k, v in r.items()}
            for r in csv.DictReader(csv_path.open())
        ]
        minutes = json.loads(meta_path.read_text())["minutes"]
    else:
        start = time.time()
        rows = []
        for k_offset in range(4):  # K = 2 + index % 4: one group of problems per K
            indices = list(range(k_offset, args.problems, 4))
            if indices:
                rows += run_group(
                    indices,
                    methods,
                    epochs=args.epochs,
                    eval_samples=args.eval_samples,
                    mean_range=mean_range,
                    sigma_range=sigma_range,
                )
                print(
                    f"K = {2 + k_offset}: {len(indices)} problems, {(time.time() - start) / 60:.1f} min",
                    flush=True,
                )
        rows.sort(key=lambda r: r["problem"])
        minutes = (time.time() - start) / 60
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_text(csv_path, buffer.getvalue())
        write_text(meta_path, json.dumps({"minutes": minutes, "command": sys.argv[1:]}))

    # Relative excess risk is undefined where the Bayes error is ~0 (separable problems).
    rel_rows = [r for r in rows if r["bayes_error"] >= 0.005]
    lines = [
        "# Excess risk of manifold mixup by depth on random toy problems (seed 2, Table 1 in kind)",
        "",
        f"Command: `python benchmarks/toy_depth.py --problems {args.problems} --epochs {args.epochs} --eval-samples "
        f"{args.eval_samples} --mean-range {args.mean_range} --sigma-range {args.sigma_range}"
        + ("" if methods == METHODS else f" --methods {','.join(methods)}")
        + (f" --tag {args.tag}" if args.tag else "")
        + f"` ({minutes:.1f} min, one process, the networks of each K trained at once). {len(rows)} problems, "
        f"K ∈ {{2, 3, 4, 5}} in turn, N ∈ 1..5 components per class, means uniform in [{mean_range[0]:g}, "
        f"{mean_range[1]:g}]², σ uniform in [{sigma_range[0]:g}, {sigma_range[1]:g}]; 1000 training "
        "samples; mlp 2-512-512-512-K, Adam lr 1e-3, 20 epochs, batch 50, α = 0.5, one λ per pair. "
        f"Errors on {args.eval_samples:,} fresh samples per problem. Mean ± standard error over problems.",
        "",
        f"Relative excess risk = 100 · (error − Bayes error) / Bayes error, over the {len(rel_rows)} problems "
        "whose Bayes error is at least 0.5% (it is undefined for separable ones).",
        "",
        "| method | absolute excess risk (points of %) | relative excess risk (%) | seed 2, Table 1 (%) |",
        "|---|---|---|---|",
    ]
    for method in methods:
        a, a_se = mean_se([100 * r[f"{method} excess"] for r in rows])
        rel, rel_se = mean_se([100 * r[f"{method} excess"] / r["bayes_error"] for r in rel_rows])
        lines.append(
            f"| {method} | {a:.2f} ± {a_se:.2f} | {rel:.1f} ± {rel_se:.1f} | {SEED_TABLE[method]} |"
        )
    erm = [r["ERM excess"] for r in rows]
    lines += [
        "",
        "Paired differences to ERM, problem by problem (negative = better than ERM): absolute excess risk "
        f"(points of %, all {len(rows)} problems) and relative excess risk (%, the {len(rel_rows)} above). The "
        "two can disagree: the relative measure weighs problems with a small Bayes error most.",
        "",
        "| method | absolute: mean ± SE | better than ERM | relative: mean ± SE | better than ERM |",
        "|---|---|---|---|---|",
    ]
    for method in methods[1:]:
        diff = [100 * (r[f"{method} excess"] - e) for r, e in zip(rows, erm, strict=True)]
        rel_diff = [
            100 * (r[f"{method} excess"] - r["ERM excess"]) / r["bayes_error"] for r in rel_rows
        ]
        (m, se), (rm, rse) = mean_se(diff), mean_se(rel_diff)
        lines.append(
            f"| {method} | {m:+.2f} ± {se:.2f} | {sum(d < 0 for d in diff)}/{len(diff)} | "
            f"{rm:+.1f} ± {rse:.1f} | {sum(d < 0 for d in rel_diff)}/{len(rel_diff)} |"
        )

    # By normalised-MMLB quartile (seed 2, Figure 3).
    ordered = sorted(rows, key=lambda r: r["mmlb_norm"])
    q = len(ordered) / 4
    quartiles = [ordered[round(i * q) : round((i + 1) * q)] for i in range(4)]
    lines += [
        "",
        "By normalised-MMLB quartile (mean absolute excess risk, points of %):",
        "",
        "| quartile | MMLB range | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for i, part in enumerate(quartiles):
        cells = [f"{statistics.mean(100 * r[f'{m} excess'] for r in part):.2f}" for m in methods]
        lines.append(
            f"| Q{i + 1} | {part[0]['mmlb_norm']:.3f}–{part[-1]['mmlb_norm']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", f"![excess risk by MMLB quartile](toy_depth{args.tag}.png)", ""]
    write_text(ROOT / "results" / f"toy_depth{args.tag}.md", "\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=120)
    width = 0.16
    for j, method in enumerate(methods):
        means = [statistics.mean(100 * r[f"{method} excess"] for r in part) for part in quartiles]
        ses = [mean_se([100 * r[f"{method} excess"] for r in part])[1] for part in quartiles]
        ax.bar(
            [i + (j - 2) * width for i in range(4)], means, width, yerr=ses, capsize=2, label=method
        )
    ax.set_xticks(
        range(4),
        [
            f"Q{i + 1}\n{p[0]['mmlb_norm']:.3f}–{p[-1]['mmlb_norm']:.3f}"
            for i, p in enumerate(quartiles)
        ],
    )
    ax.set_xlabel("normalised MMLB quartile (harder for mixup →)")
    ax.set_ylabel("excess risk (points of %)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(
        ROOT / "results" / f"toy_depth{args.tag}.png", lambda f: fig.savefig(f, format="png")
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
