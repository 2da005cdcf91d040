"""Fashion-MNIST, every method, every metric: accuracy, calibration, FGSM/PGD robustness at two budgets,
OOD detection and embedding geometry, with each method's α chosen on the validation split.

    python benchmarks/fashion_methods.py [--seeds 3] [--jobs 2] [--train-subset 4000] [--val-fraction 0.25]
                                         [--epochs 20] [--device cpu] [--data-dir DIR] [--tag NAME]

Protocol. The dataset's recipe (preactresnet8, the small pre-activation ResNet that is the dataset's
default model; Adam lr 1e-2 + cosine, batch 100, pad-crop-flip augmentation) on a stratified training subset
whose validation split is carved from it; the test set is the whole 10 000 images. Phase 1 trains each
method with an α (``GRIDS``) once per α (seed 0) and keeps the α of best validation accuracy (ties: the
smaller α); MultiMix + self-distillation takes MultiMix's α (the teacher changes the targets, not the
mixing). Phase 2 trains the chosen settings with every seed (seed 0 is phase 1's run, reused). Phase 3
evaluates each run's best-validation weights (``multimix evaluate``'s evaluation: ECE with 15 bins,
FGSM and 10-step PGD on the first 1000 test images, pixels clipped to [0, 1], at ε = 0.1 and 8/255;
OOD by maximum softmax probability against MNIST's test images — or, where MNIST's files are not
installed, scikit-learn's 1797 handwritten digits framed as MNIST's — and Gaussian, uniform and
pixel-shuffled noise made from the test set; alignment and uniformity of the classifier's inputs).

Writes benchmarks/results/fashion_methods{tag}.md and .png. Runs land in ``--out`` (reused when rerun).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from multimix.train.checkpoint import atomic_write, write_text
from multimix.train.compare import run_variants
from multimix.train.config import DEFAULT_TEACHER_MOMENTUM, TrainConfig
from multimix.train.workers import run_tasks

ROOT = Path(__file__).resolve().parent
#: The tuple length of "MultiMix beyond pairs": the best m ≥ 3 on validation in beyond_pairs.md (MNIST-1D;
#: m = 3 at α = 0.3 and m = 20 at α = 0.03 tie at 98.50, m = 3 with the smaller spread).
BEYOND_M = 3
#: α grid per method (the labels of the table). Beyond pairs: α ∝ 1/m keeps a few members dominant
#: (beyond_pairs.md), so its grid is the pairs' grid scaled by 2/m, rounded.
GRID = (0.2, 1.0, 2.0)
METHODS: dict[str, dict[str, Any]] = {
    "ERM": dict(method="erm"),
    "input mixup": dict(method="mixup"),
    "CutMix": dict(method="cutmix"),
    "manifold mixup": dict(method="manifold"),
    "MultiMix": dict(method="multimix"),
    f"MultiMix m={BEYOND_M}": dict(method="multimix", tuple_size=BEYOND_M),
    "Dense MultiMix": dict(method="dense-multimix"),
    "MultiMix + self-distillation": dict(
        method="multimix", teacher_momentum=DEFAULT_TEACHER_MOMENTUM
    ),
}
SAME_ALPHA_AS = {"MultiMix + self-distillation": "MultiMix"}
EXTRA_EPS = 8 / 255


def grid(label: str) -> tuple[float, ...]:
    if METHODS[label]["method"] == "erm" or label in SAME_ALPHA_AS:
        return ()
    if label == f"MultiMix m={BEYOND_M}":
        return tuple(round(a * 2 / BEYOND_M, 3) for a in GRID)
    return GRID


def evaluate_one(run: str, eps: float) -> dict[str, Any]:
    """``multimix evaluate``'s metrics of one run plus FGSM/PGD at a second budget (cached in the run)."""
    from multimix.evaluate import robust_accuracy
    from multimix.train.evaluation import evaluate_run
    from multimix.train.trainer import load_splits, model_from_checkpoint

    torch.set_num_threads(1)
    cached = Path(run) / "fashion_eval.json"
    weights = Path(run) / "best.pt"
    if cached.is_file() and cached.stat().st_mtime > weights.stat().st_mtime:
        return json.loads(cached.read_text())
    result = evaluate_run(run)
    model, config = model_from_checkpoint(weights)
    x, y = load_splits(config).test.tensors
    for attack in ("fgsm", "pgd"):
        extra = (
            {"steps": 10, "generator": torch.Generator().manual_seed(0)} if attack == "pgd" else {}
        )
        result[f"{attack}_acc_small"] = robust_accuracy(
            model, x[:1000], y[:1000], attack=attack, eps=eps, clamp=(0.0, 1.0), **extra
        )
    write_text(cached, json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--train-subset", default="4000", help="'all' for the whole 60 000")
    parser.add_argument("--val-fraction", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--extra", default="", help="more TrainConfig settings, key=value,... (e.g. amp=bf16)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/fashion_methods"))
    parser.add_argument("--tag", default="", help="suffix of the result files")
    args = parser.parse_args()
    if any("=" not in kv for kv in args.extra.split(",") if kv):
        parser.error(f"--extra takes key=value pairs separated by commas, got {args.extra!r}")
    extra = dict(kv.split("=", 1) for kv in args.extra.split(",") if kv)
    base = dict(
        dataset="fashion-mnist",
        epochs=args.epochs,
        train_subset=args.train_subset,
        val_fraction=args.val_fraction,
        device=args.device,
        test_every="end",
        **({"data_dir": args.data_dir} if args.data_dir else {}),
        **extra,
    )

    def config(label: str, alpha: float | None) -> TrainConfig:
        return TrainConfig.from_dict(
            {**base, **METHODS[label], **({"alpha": alpha} if alpha is not None else {})}
        )

    def name(label: str, alpha: float | None) -> str:
        return label if alpha is None else f"{label} (α={alpha:g})"

    start = time.time()
    # Phase 1: α on validation, seed 0.
    phase1 = {name(label, a): config(label, a) for label in METHODS for a in grid(label)}
    rows = run_variants(phase1, seeds=[0], out=args.out, jobs=args.jobs)
    val = {r["method"]: r["val_acc"] for r in rows}
    chosen: dict[str, float | None] = {}
    for label in METHODS:
        if grid(label):  # best validation accuracy; ties: the smaller α (listed first)
            chosen[label] = max(grid(label), key=lambda a: (val[name(label, a)], -a))
    for label, other in SAME_ALPHA_AS.items():
        chosen[label] = chosen[other]
    chosen["ERM"] = None
    # Phase 2: the chosen settings, every seed.
    final = {label: name(label, chosen[label]) for label in METHODS}
    phase2 = {final[label]: config(label, chosen[label]) for label in METHODS}
    seeds = list(range(args.seeds))
    rows = run_variants(phase2, seeds=seeds, out=args.out, jobs=args.jobs)
    train_minutes = (time.time() - start) / 60
    # Phase 3: evaluation, in worker processes.
    tasks = [
        (str(args.out / final[label] / f"seed{s}"), EXTRA_EPS) for label in METHODS for s in seeds
    ]
    evals = run_tasks(evaluate_one, tasks, jobs=args.jobs)
    total_minutes = (time.time() - start) / 60
    results: dict[str, list[dict]] = {}
    for (run, _), ev in zip(tasks, evals, strict=True):
        results.setdefault(Path(run).parent.name, []).append(ev)
    summary = {final[label]: [r for r in rows if r["method"] == final[label]] for label in METHODS}

    ood_sets = sorted(
        {k[4:-6] for ev in evals for k in ev if k.startswith("ood_") and k.endswith("_auroc")},
        key=lambda k: (k in ("gaussian", "uniform", "shuffled"), k),
    )
    columns = [
        ("test_acc", "acc", 100),
        ("ece", "ECE ↓", 100),
        ("fgsm_acc", "FGSM ε=0.1", 100),
        ("pgd_acc", "PGD ε=0.1", 100),
        ("fgsm_acc_small", "FGSM ε=8/255", 100),
        ("pgd_acc_small", "PGD ε=8/255", 100),
    ]
    columns += [(f"ood_{k}_auroc", f"AUROC {k}", 100) for k in ood_sets]
    columns += [(f"ood_{k}_fpr95", f"FPR95 {k} ↓", 100) for k in ood_sets]
    columns += [("alignment", "align ↓", 1), ("uniformity", "unif ↓", 1)]

    def stat(label: str, key: str, scale: float = 100) -> tuple[float, float]:
        values = [scale * ev[key] for ev in results[final[label]]]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    sample = TrainConfig.from_dict(base)
    command = (
        f"python benchmarks/fashion_methods.py --seeds {args.seeds} --train-subset {args.train_subset} "
        f"--val-fraction {args.val_fraction} --epochs {args.epochs}"
        + (f" --device {args.device}" if args.device != "cpu" else "")
        + (f" --extra {args.extra}" if args.extra else "")
        + (f" --tag {args.tag}" if args.tag else "")
    )
    n_train = sample.train_subset or 60_000
    lines = [
        "# Fashion-MNIST: every method, every metric",
        "",
        f"- command: `{command}` (+ `--data-dir` where the files are not in a standard place)",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU(s){'' if args.device == 'cpu' else ', ' + args.device}, "
        f"torch {torch.__version__}; {len(phase1) + len(METHODS) * args.seeds} runs ({len(phase1)} in the α grid) "
        f"trained in {train_minutes:.0f} min with {args.jobs} at a time, all evaluated by {total_minutes:.0f} min",
        f"- data: a stratified subset of {n_train} training images, {round(args.val_fraction * n_train)} of them held "
        f"out for validation; the whole 10 000-image test set",
        f"- recipe: {sample.model_name}, {args.epochs} epochs, {sample.optimizer} lr {sample.lr:g} + cosine, batch "
        f"{sample.batch_size}, weight decay {sample.weight_decay:g}, pad-crop-flip augmentation"
        + (f", {args.extra}" if args.extra else ""),
        f"- α chosen on validation accuracy (seed 0; ties: the smaller α) from {list(GRID)} "
        f"(MultiMix m={BEYOND_M}: {list(grid(f'MultiMix m={BEYOND_M}'))}); self-distillation takes MultiMix's α; "
        f"MultiMix n = {sample.n}, m = {sample.m} unless stated; teacher momentum {DEFAULT_TEACHER_MOMENTUM}",
        f"- seeds 0–{args.seeds - 1}: mean ± std. Test accuracy of the best-validation epoch; every other metric "
        "is measured on those weights (`best.pt`). Attacks: first 1000 test images, pixels clipped to [0, 1], PGD "
        "10 steps of 2.5ε/10 with a random start. OOD: maximum softmax probability; FPR at 95 % TPR. Alignment "
        "(α = 2) and uniformity (t = 2) of the ℓ2-normalised classifier inputs of the test set.",
        "",
        "## Validation accuracy of the α grid (seed 0)",
        "",
        "| method | " + " | ".join(f"α={a:g}" for a in GRID) + " | chosen |",
        "|---|" + "---|" * (len(GRID) + 1),
    ]
    for label in METHODS:
        if grid(label):
            cells = [
                f"{100 * val[name(label, a)]:.2f} (α={a:g})"
                if label.startswith("MultiMix m=")
                else f"{100 * val[name(label, a)]:.2f}"
                for a in grid(label)
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | α = {chosen[label]:g} |")
    lines += [
        "",
        "## Test metrics (%, but alignment and uniformity)",
        "",
        "| method | " + " | ".join(c[1] for c in columns) + " | val acc |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for label in METHODS:
        cells = []
        for key, _, scale in columns:
            m, s = stat(label, key, scale)
            cells.append(f"{m:.2f} ± {s:.2f}" if scale == 100 else f"{m:.3f} ± {s:.3f}")
        v = [100 * r["val_acc"] for r in summary[final[label]]]
        lines.append(f"| {final[label]} | " + " | ".join(cells) + f" | {statistics.mean(v):.2f} |")
    lines += ["", "![Fashion-MNIST methods](fashion_methods" + args.tag + ".png)", ""]
    write_text(ROOT / "results" / f"fashion_methods{args.tag}.md", "\n".join(lines))
    plot(
        columns,
        [final[label] for label in METHODS],
        {final[label]: results[final[label]] for label in METHODS},
        ROOT / "results" / f"fashion_methods{args.tag}.png",
        title=f"Fashion-MNIST, {n_train} training images, {args.epochs} epochs, {args.seeds} seeds",
    )
    print("\n".join(lines))


def plot(
    columns, labels: list[str], results: dict[str, list[dict]], path: Path, *, title: str
) -> None:
    """One panel per headline metric, one bar per method, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [
        c
        for c in columns
        if c[0] in ("test_acc", "ece", "pgd_acc_small", "fgsm_acc", "alignment", "uniformity")
    ]
    keys += [c for c in columns if c[0].endswith("_auroc")][:1]  # the real OOD set
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys), 3.6), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, heading, scale) in zip(axes, keys, strict=True):
        means = [statistics.mean(scale * r[key] for r in results[lab]) for lab in labels]
        stds = [
            statistics.stdev(scale * r[key] for r in results[lab]) if len(results[lab]) > 1 else 0
            for lab in labels
        ]
        ax.bar(
            range(len(labels)),
            means,
            yerr=stds,
            capsize=2,
            color=[colours[i % len(colours)] for i in range(len(labels))],
        )
        lo, hi = (
            min(m - s for m, s in zip(means, stds, strict=True)),
            max(m + s for m, s in zip(means, stds, strict=True)),
        )
        ax.set_ylim(lo - 0.15 * (hi - lo + 1e-9), hi + 0.15 * (hi - lo + 1e-9))
        ax.set_title(heading, fontsize=9)
        ax.set_xticks([])
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=colours[i % len(colours)]) for i in range(len(labels))
    ]
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    atomic_write(path, lambda f: fig.savefig(f, format="png"))


if __name__ == "__main__":
    main()
