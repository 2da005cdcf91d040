"""Training recipes per dataset, chosen on the validation split for ERM *and* a mixing method together.

    python benchmarks/recipes.py [--datasets mnist1d,digits,...] [--seeds 2] [--jobs 1]
                                 [--lrs 1e-3,3e-3,1e-2] [--epochs 30,100] [--train-subset N]
                                 [--out benchmarks/results/recipes.md]

The real-image sets are chosen on a training subset that fits two CPU cores
(``--datasets fashion-mnist --train-subset 6000 --epochs 10,20 --out benchmarks/results/recipes_images.md``):
the recipe then carries that subset, so that a run with no flags is the run whose settings were chosen.

For each dataset, a grid of learning rate × epochs (Adam, cosine schedule, batch 100, no weight
decay, the dataset's own augmentation and default model) is trained with ERM and with manifold
mixup (its default α = 2), ``--seeds`` seeds each. Every figure is validation accuracy at the best
validation epoch; the test split is never read here. The setting chosen for a dataset is the one with
the best mean of the two methods' validation accuracies (a recipe that suits ERM alone would make
every regulariser look bad); ties go to the shorter, then the lower-lr setting. The table of every
cell is written, so the choice can be checked (issue 13).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from multimix.train.checkpoint import write_text
from multimix.train.compare import run_variants
from multimix.train.config import TrainConfig

ROOT = Path(__file__).resolve().parent
DATASETS = ["mnist1d", "mnist1d-shuffled", "digits", "toy", "spirals"]
METHODS = ["erm", "manifold"]
LRS = [1e-3, 3e-3, 1e-2]
EPOCHS = [30, 100]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument(
        "--runs", type=Path, default=Path("runs/recipes"), help="where the runs are trained"
    )
    parser.add_argument(
        "--lrs", default=",".join(f"{lr:g}" for lr in LRS), help="learning rates of the grid"
    )
    parser.add_argument(
        "--epochs", default=",".join(map(str, EPOCHS)), help="epoch budgets of the grid"
    )
    parser.add_argument(
        "--train-subset", type=int, default=None, help="train on a stratified subset of N examples"
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device of the runs (figures, not choices, change)"
    )
    parser.add_argument("--data-dir", default=None, help="folder of file datasets' files")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "recipes.md")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    lrs = [float(v) for v in args.lrs.split(",")]
    epoch_grid = [int(v) for v in args.epochs.split(",")]
    subset = "" if args.train_subset is None else f" --train-subset {args.train_subset}"
    subset += "" if args.device == "cpu" else f" --device {args.device}"
    grid = "" if (lrs, epoch_grid) == (LRS, EPOCHS) else f" --lrs {args.lrs} --epochs {args.epochs}"
    lines = [
        "# Recipes per dataset, chosen on validation accuracy (ERM and manifold mixup together)",
        "",
        f"- command: `python benchmarks/recipes.py --datasets {args.datasets} --seeds {args.seeds}{grid}{subset}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""),
        f"- grid: lr {lrs} × epochs {epoch_grid}; Adam, cosine schedule, batch 100, weight decay 0; "
        + (
            ""
            if args.train_subset is None
            else f"a stratified subset of {args.train_subset} training examples "
            "(before the validation split); "
        )
        + f"methods {METHODS} (library α); seeds {seeds[0]}–{seeds[-1]}; validation accuracy (%) at the best "
        "validation epoch, mean ± std over seeds; the test split is not read",
        "- chosen: the cell with the best mean of the two methods' means (ties: fewer epochs, then lower lr)",
        "",
    ]
    for dataset in args.datasets.split(","):
        start = time.perf_counter()
        variants = {}
        for lr in lrs:
            for epochs in epoch_grid:
                for method in METHODS:
                    variants[f"{method} lr={lr:g} epochs={epochs}"] = dataclasses.replace(
                        TrainConfig(dataset=dataset, method=method),
                        lr=lr,
                        epochs=epochs,
                        optimizer="adam",
                        batch_size=100,
                        weight_decay=0.0,
                        train_subset=args.train_subset or 0,
                        device=args.device,
                        data_dir=args.data_dir,
                    )
        rows = run_variants(
            variants, seeds=seeds, out=args.runs / dataset, jobs=args.jobs, progress=False
        )
        elapsed = time.perf_counter() - start
        val = {
            label: [100 * r["val_acc"] for r in rows if r["method"] == label] for label in variants
        }
        cells = []
        for lr in lrs:
            for epochs in epoch_grid:
                per_method = {m: val[f"{m} lr={lr:g} epochs={epochs}"] for m in METHODS}
                means = {m: statistics.mean(v) for m, v in per_method.items()}
                cells.append(
                    (statistics.mean(means.values()), -epochs, -lr, lr, epochs, per_method, means)
                )
        best = max(cells)
        lines += [
            f"## {dataset} ({TrainConfig(dataset=dataset).model_name}; grid trained in {elapsed / 60:.1f} min)",
            "",
            "| lr | epochs | " + " | ".join(METHODS) + " | pair mean |",
            "|---|---|" + "---|" * len(METHODS) + "---|",
        ]
        for cell in cells:
            _, _, _, lr, epochs, per_method, means = cell
            mark = " **← chosen**" if cell is best else ""
            stats = " | ".join(
                f"{statistics.mean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:.2f}"
                for v in per_method.values()
            )
            lines.append(f"| {lr:g} | {epochs} | {stats} | {cell[0]:.2f}{mark} |")
        per_epoch = {
            m: statistics.mean(
                r["time_per_epoch_s"]
                for r in rows
                if r["method"] == f"{m} lr={best[3]:g} epochs={best[4]}"
            )
            for m in METHODS
        }
        run_time = ", ".join(
            f"{m} {per_epoch[m] * best[4] / 60:.1f} min ({per_epoch[m]:.1f} s/epoch)"
            for m in METHODS
        )
        lines += [
            "",
            f"Chosen for {dataset}: lr {best[3]:g}, {best[4]} epochs "
            f"(ERM {best[6]['erm']:.2f}, manifold {best[6]['manifold']:.2f}). One run of it here, training "
            f"time without evaluation: {run_time}.",
            "",
        ]
        # After every dataset: a partial table survives
        write_text(args.out, "\n".join(lines) + "\n")
        print("\n".join(lines[-len(cells) - 6 :]), flush=True)


if __name__ == "__main__":
    main()
