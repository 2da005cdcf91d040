"""Choose MultiMix, Dense MultiMix and distillation defaults on MNIST-1D, on the *validation* split.

    python benchmarks/ablate_mnist1d.py [--seeds 3] [--jobs 2] [--stage 1|2|all]

cnn1d, Adam lr 0.01 + cosine, batch 100, 100 epochs (the demo's protocol, its lr chosen on validation
in benchmarks/results/demo_lr.md). Each group varies one factor around the reference setting; stage 2
combines the winners of stage 1. Only best-epoch validation accuracy is read and reported; test
accuracy is not looked at here. Writes benchmarks/results/ablation_mnist1d.md. Runs are kept in
runs/ablation/ and reused when the script is rerun.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from multimix.train.checkpoint import write_text
from multimix.train.compare import run_variants
from multimix.train.config import TrainConfig

ROOT = Path(__file__).resolve().parent
BASE = dict(dataset="mnist1d", model="cnn1d", epochs=100, batch_size=100, lr=0.01, threads=1)


def cfg(**kw) -> TrainConfig:
    return TrainConfig.from_dict({**BASE, **kw})


def stage1() -> dict[str, dict[str, TrainConfig]]:
    mm = dict(method="multimix", mix_rows=1000, tuple_size=3, alpha=1.0)
    dense = dict(method="dense-multimix", mix_rows=1000, tuple_size=3, alpha=1.0, attention="none")
    return {
        "baselines: α": {
            **{f"mixup α={a:g}": cfg(method="mixup", alpha=a) for a in (0.5, 1.0, 2.0)},
            **{f"manifold α={a:g}": cfg(method="manifold", alpha=a) for a in (0.5, 1.0, 2.0)},
            "manifold α=2, embedding only": cfg(method="manifold", alpha=2.0, layers="features"),
        },
        "MultiMix: tuple length m (α=1, n=1000)": {
            f"m={m}": cfg(**{**mm, "tuple_size": m}) for m in (2, 3, 5, 10, "all")
        },
        "MultiMix: α (m=3, n=1000)": {
            f"α={a:g}": cfg(**{**mm, "alpha": a}) for a in (0.5, 1.0, 2.0)
        },
        "MultiMix: whole batch with small α": {
            f"m=all α={a:g}": cfg(**{**mm, "tuple_size": "all", "alpha": a}) for a in (0.05, 0.2)
        },
        "MultiMix: n (m=3, α=1)": {
            f"n={n}": cfg(**{**mm, "mix_rows": n}) for n in (10, 100, 1000, 10000)
        },
        "MultiMix: p and clean rows (m=3, α=1, n=1000)": {
            "p=1": cfg(**mm),
            "p=0.5": cfg(**{**mm, "mix_prob": 0.5}),
            "keep clean": cfg(**{**mm, "keep_clean": True}),
        },
        "Dense MultiMix: attention × m (α=1, n=1000)": {
            f"{att} m={m}": cfg(**{**dense, "attention": att, "tuple_size": m})
            for att in ("none", "pooled", "cam")
            for m in (2, 3, 5)
        },
        "Dense MultiMix: α (none, m=3)": {
            f"dense α={a:g}": cfg(**{**dense, "alpha": a}) for a in (0.5, 2.0)
        },
        "Distillation weight w (teacher momentum 0.999)": {
            **{
                f"multimix w={w:g}": cfg(**mm, teacher_momentum=0.999, distill_weight=w)
                for w in (0.5, 1.0, 2.0)
            },
            **{
                f"dense w={w:g}": cfg(**dense, teacher_momentum=0.999, distill_weight=w)
                for w in (0.5, 1.0, 2.0)
            },
        },
    }


def stage2() -> dict[str, dict[str, TrainConfig]]:
    """Combine stage 1's winners: short tuples (m = 2) everywhere; distillation with a faster teacher
    (stage 1's 0.999 lags a 3600-step run by ~1000 steps and did not help)."""
    mm = dict(method="multimix", mix_rows=1000, tuple_size=2, alpha=1.0)
    dense = dict(method="dense-multimix", mix_rows=1000, tuple_size=2, alpha=1.0, attention="none")
    return {
        "Stage 2: combinations of stage 1's best (m=2)": {
            "MultiMix m=2": cfg(**mm),
            "MultiMix m=2 + distill w=1, μ=0.99": cfg(
                **mm, teacher_momentum=0.99, distill_weight=1.0
            ),
            "Dense m=2": cfg(**dense),
            "Dense m=2 α=0.5": cfg(**{**dense, "alpha": 0.5}),
            "Dense m=2 + distill w=0.5, μ=0.99": cfg(
                **dense, teacher_momentum=0.99, distill_weight=0.5
            ),
        },
    }


def table(title: str, rows: list[dict], labels: list[str]) -> list[str]:
    lines = [f"### {title}", "", "| setting | val acc (%) | time / epoch |", "|---|---|---|"]
    stats = {}
    for label in labels:
        values = [r["val_acc"] for r in rows if r["method"] == label]
        times = [r["time_per_epoch_s"] for r in rows if r["method"] == label]
        stats[label] = (
            statistics.mean(values),
            statistics.stdev(values) if len(values) > 1 else 0.0,
            statistics.mean(times),
        )
    best = max(stats, key=lambda k: stats[k][0])
    for label, (mean, std, t) in stats.items():
        mark = " **(best)**" if label == best else ""
        lines.append(f"| {label}{mark} | {100 * mean:.2f} ± {100 * std:.2f} | {t:.2f} s |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--stage", choices=("1", "2", "all"), default="all")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    args = parser.parse_args()
    groups = {}
    if args.stage in ("1", "all"):
        groups.update(stage1())
    if args.stage in ("2", "all"):
        groups.update(stage2())
    seeds = list(range(args.seeds))
    lines = [
        "# MNIST-1D ablation (validation accuracy only)",
        "",
        f"Command: `python benchmarks/ablate_mnist1d.py --seeds {args.seeds} --stage {args.stage}`. "
        f"cnn1d, Adam lr 0.01 + cosine, batch 100, 100 epochs; best-epoch validation accuracy "
        f"(400 examples: one example is 0.25%), mean ± std over seeds {seeds[0]}–{seeds[-1]}.",
        "",
    ]
    for title, variants in groups.items():
        rows = run_variants(variants, seeds=seeds, out=args.out, jobs=args.jobs)
        lines += table(title, rows, list(variants))
        print("\n".join(table(title, rows, list(variants))), flush=True)
    write_text(
        ROOT
        / "results"
        / f"ablation_mnist1d{'' if args.stage == 'all' else '_stage' + args.stage}.md",
        "\n".join(lines),
    )


if __name__ == "__main__":
    main()
