"""Choose the demo's learning rate on the *validation* split (never the test split).

    python benchmarks/tune_demo.py [--epochs 100] [--seeds 2] [--jobs 2]

For each candidate learning rate, trains ERM and MultiMix (cnn1d on MNIST-1D, Adam, cosine schedule)
over a few seeds, and ranks the rates by mean best-validation accuracy over both methods. Writes
benchmarks/results/demo_lr.md. Test accuracy is not read.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

from multimix.train.checkpoint import write_text
from multimix.train.compare import run_comparison
from multimix.train.config import TrainConfig

ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--lrs", default="0.003,0.01,0.03")
    parser.add_argument("--out", type=Path, default=Path("runs/tune-demo"))
    args = parser.parse_args()
    lrs = [float(v) for v in args.lrs.split(",")]
    base = TrainConfig.from_dict(
        {"dataset": "mnist1d", "epochs": args.epochs, "batch_size": 100, "threads": 1}
    )
    lines = [
        "# Demo learning rate, chosen on validation accuracy",
        "",
        f"Command: `python benchmarks/tune_demo.py --epochs {args.epochs} --seeds {args.seeds} --lrs {args.lrs}`",
        f"(MNIST-1D, cnn1d, Adam + cosine, batch 100, seeds 0–{args.seeds - 1}; best-epoch validation accuracy, %).",
        "",
        "| lr | ERM val | MultiMix val | mean |",
        "|---|---|---|---|",
    ]
    scores = {}
    for lr in lrs:
        rows = run_comparison(
            dataclasses.replace(base, lr=lr),
            methods=["erm", "multimix"],
            seeds=list(range(args.seeds)),
            out=args.out / f"lr{lr:g}",
            jobs=args.jobs,
        )
        by = {
            m: statistics.mean(r["val_acc"] for r in rows if r["method"] == m)
            for m in ("erm", "multimix")
        }
        scores[lr] = statistics.mean(by.values())
        lines.append(
            f"| {lr:g} | {100 * by['erm']:.2f} | {100 * by['multimix']:.2f} | {100 * scores[lr]:.2f} |"
        )
    best = max(scores, key=scores.get)
    lines += ["", f"Chosen: lr = {best:g} (highest mean validation accuracy).", ""]
    write_text(ROOT / "results" / "demo_lr.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
