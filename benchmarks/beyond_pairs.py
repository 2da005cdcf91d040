"""Beyond pairs: MultiMix accuracy against the tuple length m, and what keeps long tuples useful.

    python benchmarks/beyond_pairs.py [--dataset mnist1d] [--seeds 2] [--jobs 2] [--train-subset N]
                                      [--device cpu] [--data-dir DIR] [--out benchmarks/results/beyond_pairs.md]
                                      [--ms 2,3,5,10,20,b] [--strategies a,b,c,d] [--alphas ...]
                                      [--epochs E] [--val-fraction F] [--extra key=value,...]

With a linear classifier, mixing m embeddings with Dirichlet(α·1_m) weights mixes their logits; as m
grows, every mixed target approaches the batch's label histogram and each example's own signal fades
(a learning-from-label-proportions problem). For m ∈ {2, 3, 5, 10, 20, b} (b: the whole batch) this
trains MultiMix (n = 1000, the dataset's recipe otherwise) with

- (a) α = 1 (the paper's, and the library's default for every m before this table);
- (b) α tuned per m on the validation split, from {0.01, 0.03, 0.1, 0.3, 1};
- (c) α = 1/m, which keeps a few members dominant however long the tuple
  (E[max weight] stays near a constant fraction instead of falling like (log m)/m);
- (d) p = 0.5 with α = 1: half the batches clean, as the paper's supplementary describes.

``--ms`` and ``--strategies`` (their letters) run a part of the grid, e.g. where compute is short;
``--epochs``, ``--val-fraction`` and ``--extra`` change the recipe (stated in the table's header).

``--seeds`` seeds each; identical settings are trained once and shared between strategies. Every figure
is validation accuracy at the best validation epoch, mean ± std; the test accuracy of each strategy's
setting is reported beside it, never used to choose. Writes the table and a figure (``.png`` next to it).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from multimix.train.compare import run_variants
from multimix.train.config import TrainConfig

ROOT = Path(__file__).resolve().parent
ALPHAS = [0.01, 0.03, 0.1, 0.3, 1.0]
STRATEGIES = ["α = 1", "α tuned on validation", "α = 1/m", "p = 0.5, α = 1"]
LETTERS = dict(zip("abcd", STRATEGIES, strict=True))


def m_label(m: int | None, batch: int) -> str:
    return f"b = {batch}" if m is None else str(m)


def settings(
    m: int | None, batch: int, alphas: list[float] = ALPHAS, strategies: list[str] = STRATEGIES
) -> dict[str, list[tuple[float, float]]]:
    """Each strategy's candidate (α, p) settings for tuple length m."""
    length = batch if m is None else m
    every = {
        "α = 1": [(1.0, 1.0)],
        "α tuned on validation": [(a, 1.0) for a in alphas],
        "α = 1/m": [(round(1.0 / length, 6), 1.0)],
        "p = 0.5, α = 1": [(1.0, 0.5)],
    }
    return {k: v for k, v in every.items() if k in strategies}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--train-subset",
        default=None,
        help="as multimix train --train-subset (default: the recipe's)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--runs",
        type=Path,
        default=None,
        help="where runs are trained (default: runs/beyond_pairs-<dataset>)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "beyond_pairs.md")
    parser.add_argument("--ms", default="2,3,5,10,20,b", help="tuple lengths; b = the whole batch")
    parser.add_argument(
        "--strategies", default="abcd", help="letters of the strategies to run (a–d, above)"
    )
    parser.add_argument(
        "--alphas", default=",".join(f"{a:g}" for a in ALPHAS), help="the grid of (b)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--val-fraction", type=float, default=None)
    parser.add_argument("--extra", default="", help="more TrainConfig settings, key=value,...")
    args = parser.parse_args()
    ms: list[int | None] = [None if v.strip() == "b" else int(v) for v in args.ms.split(",")]
    strategies = [LETTERS[c] for c in args.strategies.replace(",", "")]
    alphas = [float(a) for a in args.alphas.split(",")]
    if any("=" not in kv for kv in args.extra.split(",") if kv):
        parser.error(f"--extra takes key=value pairs separated by commas, got {args.extra!r}")
    base = {
        "dataset": args.dataset,
        "method": "multimix",
        "device": args.device,
        "data_dir": args.data_dir,
        "test_every": "end",
        **dict(kv.split("=", 1) for kv in args.extra.split(",") if kv),
    }
    for key in ("train_subset", "epochs", "val_fraction"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    base_config = TrainConfig.from_dict(base)
    batch = base_config.batch_size
    seeds = list(range(args.seeds))

    variants: dict[str, TrainConfig] = {}
    for m in ms:
        for candidates in settings(m, batch, alphas, strategies).values():
            for alpha, p in candidates:
                label = f"m={m_label(m, batch).replace(' ', '')} alpha={alpha:g} p={p:g}"
                variants[label] = dataclasses.replace(
                    base_config, tuple_size=m, alpha=alpha, mix_prob=p
                )
    start = time.perf_counter()
    runs = args.runs or Path("runs") / f"beyond_pairs-{args.dataset}"
    rows = run_variants(variants, seeds=seeds, out=runs, jobs=args.jobs, progress=False)
    elapsed = time.perf_counter() - start

    def stats(label: str, key: str) -> tuple[float, float]:
        values = [100 * r[key] for r in rows if r["method"] == label]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    table: dict[tuple[str, str], tuple[str, tuple[float, float], tuple[float, float]]] = {}
    for m in ms:
        for strategy, candidates in settings(m, batch, alphas, strategies).items():
            labels = [
                f"m={m_label(m, batch).replace(' ', '')} alpha={a:g} p={p:g}" for a, p in candidates
            ]
            best = max(
                labels,
                key=lambda lab: (
                    stats(lab, "val_acc")[0],
                    -float(lab.split("alpha=")[1].split()[0]),
                ),
            )
            table[m_label(m, batch), strategy] = (
                best,
                stats(best, "val_acc"),
                stats(best, "test_acc"),
            )

    lines = [
        f"# Beyond pairs: MultiMix against the tuple length m ({args.dataset})",
        "",
        f"- command: `python benchmarks/beyond_pairs.py --dataset {args.dataset} --seeds {args.seeds}"
        + (f" --train-subset {args.train_subset}" if args.train_subset is not None else "")
        + (f" --device {args.device}" if args.device != "cpu" else "")
        + (f" --ms {args.ms}" if args.ms != parser.get_default("ms") else "")
        + (f" --strategies {args.strategies}" if args.strategies != "abcd" else "")
        + (f" --alphas {args.alphas}" if alphas != ALPHAS else "")
        + "".join(
            f" --{k.replace('_', '-')} {getattr(args, k)}"
            for k in ("epochs", "val_fraction", "extra")
            if getattr(args, k)
        )
        + (f" --out {args.out}" if args.out != parser.get_default("out") else "")
        + "`",
        f"- the validation split: {base_config.val_fraction:g} of the training examples",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else "")
        + f"; {len(variants)} settings × {len(seeds)} seeds trained in {elapsed / 60:.1f} min",
        f"- the dataset's recipe: {base_config.model_name}, {base_config.epochs} epochs, {base_config.optimizer} lr "
        f"{base_config.lr:g}, batch b = {batch}"
        + (f", {base_config.train_subset} training examples" if base_config.train_subset else "")
        + f"; MultiMix n = {base_config.mix_rows}, at the classifier (exact linear shortcut)",
        (
            f"- α tuned from {alphas} on validation accuracy (ties: the larger α); "
            if LETTERS["b"] in strategies
            else "- "
        )
        + f"seeds {seeds[0]}–{seeds[-1]}; "
        "validation and test accuracy (%) at the best validation epoch, mean ± std",
        "",
        "## Validation accuracy (test accuracy of the same setting in brackets)",
        "",
        "| m | " + " | ".join(strategies) + " |",
        "|---|" + "---|" * len(strategies),
    ]
    for m in ms:
        cells = []
        for strategy in strategies:
            best, (v, vs), (t, ts) = table[m_label(m, batch), strategy]
            alpha = best.split("alpha=")[1].split()[0]
            extra = f" (α = {alpha})" if strategy == "α tuned on validation" else ""
            cells.append(f"{v:.2f} ± {vs:.2f} [{t:.2f}]{extra}")
        lines.append(f"| {m_label(m, batch)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Every setting (validation accuracy)",
        "",
        "| setting | val acc | test acc |",
        "|---|---|---|",
    ]
    for label in variants:
        (v, vs), (t, ts) = stats(label, "val_acc"), stats(label, "test_acc")
        lines.append(f"| {label} | {v:.2f} ± {vs:.2f} | {t:.2f} ± {ts:.2f} |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.out.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
    os.replace(f.name, args.out)
    plot(table, batch, args.out.with_suffix(".png"), args.dataset, ms, strategies)
    print(text)


def plot(
    table, batch: int, path: Path, dataset: str, ms: list[int | None], strategies: list[str]
) -> None:
    """Validation accuracy against m, one line per strategy (error bars: std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = [batch if m is None else m for m in ms]
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy in strategies:
        means = [table[m_label(m, batch), strategy][1][0] for m in ms]
        stds = [table[m_label(m, batch), strategy][1][1] for m in ms]
        ax.errorbar(lengths, means, yerr=stds, marker="o", capsize=3, label=strategy)
    ax.set_xscale("log")
    ax.set_xticks(lengths, [m_label(m, batch) for m in ms])
    ax.set_xlabel("tuple length m")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"MultiMix beyond pairs ({dataset})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".png") as f:
        fig.savefig(f.name, dpi=120)
    os.replace(f.name, path)
    plt.close(fig)


if __name__ == "__main__":
    main()
