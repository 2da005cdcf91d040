"""Beyond accuracy on MNIST-1D: calibration, FGSM/PGD robustness, OOD detection and embedding geometry
of every method of benchmarks/mnist1d_methods.py (same runs, 5 seeds, weights chosen on validation).

    python benchmarks/evaluation_mnist1d.py [--seeds 5] [--jobs 2]

Trains what is missing (finished runs are reused), runs `multimix evaluate`'s evaluation on each run,
and writes benchmarks/results/evaluation_mnist1d.md with mean ± std over seeds and, for each claim of
the MultiMix paper, whether these measurements support it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist1d_methods import variants
from multimix.evaluate import OOD_SETS
from multimix.train.checkpoint import write_text
from multimix.train.compare import run_variants
from multimix.train.evaluation import evaluate_run

ROOT = Path(__file__).resolve().parent
COLUMNS = [
    ("test_acc", "acc", 100),
    ("ece", "ECE", 100),
    ("fgsm_acc", "FGSM acc", 100),
    ("pgd_acc", "PGD acc", 100),
]
COLUMNS += [(f"ood_{k}_auroc", f"AUROC {k}", 100) for k in OOD_SETS]
COLUMNS += [(f"ood_{k}_fpr95", f"FPR95 {k}", 100) for k in OOD_SETS]
COLUMNS += [("alignment", "align ↓", 1), ("uniformity", "unif ↓", 1)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/mnist1d_methods"))
    args = parser.parse_args()
    vs = variants()
    seeds = list(range(args.seeds))
    run_variants(vs, seeds=seeds, out=args.out, jobs=args.jobs)
    results = {label: [evaluate_run(args.out / label / f"seed{s}") for s in seeds] for label in vs}
    eps = results["ERM"][0]["eps"]
    seconds = statistics.mean(r["seconds"] for rs in results.values() for r in rs)

    def ms(label: str, key: str, scale: float) -> tuple[float, float]:
        values = [scale * r[key] for r in results[label]]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    lines = [
        "# MNIST-1D beyond accuracy: calibration, robustness, OOD detection, embedding geometry",
        "",
        f"Command: `python benchmarks/evaluation_mnist1d.py --seeds {args.seeds}` — the runs of "
        "benchmarks/mnist1d_methods.py (cnn1d, 100 epochs), each evaluated at its best validation epoch "
        f"(`best.pt`), seeds 0–{args.seeds - 1}, mean ± std. ECE: 15 equal-width bins. FGSM and PGD "
        f"(10 steps, step 2.5ε/10, random start): L∞ ε = {eps:.4f} = 0.1 × the test inputs' std, first 1000 "
        "test examples, no clipping. OOD: maximum softmax probability, in = MNIST-1D test set, out = Gaussian "
        "noise with the data's mean and std (clipped to its range), uniform noise over its range, and each "
        "sequence's values shuffled. Alignment (α = 2) and uniformity (t = 2) of the ℓ2-normalised classifier "
        f"inputs on the test set; lower is better for both. Evaluation took {seconds:.1f} s per run on average.",
        "",
        "| method | " + " | ".join(name for _, name, _ in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for label in vs:
        cells = []
        for key, _, scale in COLUMNS:
            m, s = ms(label, key, scale)
            cells.append(f"{m:.2f} ± {s:.2f}" if scale == 100 else f"{m:.3f} ± {s:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    manifold = next(label for label in vs if label.startswith("manifold"))
    mixup = next(label for label in vs if label.startswith("input mixup"))

    def mean(label: str, key: str) -> float:
        return statistics.mean(r[key] for r in results[label])

    def ood_mean(label: str) -> float:
        return statistics.mean(mean(label, f"ood_{k}_auroc") for k in OOD_SETS)

    def check(claim: str, ok: bool, detail: str) -> str:
        return f"- {claim}: **{'supported' if ok else 'not supported'}** here ({detail})"

    mm = "MultiMix"
    lines += [
        "",
        "Claims (differences smaller than about one standard deviation above are noise, whatever the verdict):",
        "",
        check(
            "MultiMix is more robust to FGSM than ERM and manifold mixup",
            mean(mm, "fgsm_acc") > max(mean("ERM", "fgsm_acc"), mean(manifold, "fgsm_acc")),
            f"{100 * mean(mm, 'fgsm_acc'):.2f} vs {100 * mean('ERM', 'fgsm_acc'):.2f} and {100 * mean(manifold, 'fgsm_acc'):.2f}",
        ),
        check(
            "MultiMix is more robust to PGD than ERM and manifold mixup",
            mean(mm, "pgd_acc") > max(mean("ERM", "pgd_acc"), mean(manifold, "pgd_acc")),
            f"{100 * mean(mm, 'pgd_acc'):.2f} vs {100 * mean('ERM', 'pgd_acc'):.2f} and {100 * mean(manifold, 'pgd_acc'):.2f}",
        ),
        check(
            "MultiMix detects OOD inputs better (mean AUROC over the three sets)",
            ood_mean(mm) > max(ood_mean("ERM"), ood_mean(manifold)),
            f"{100 * ood_mean(mm):.2f} vs ERM {100 * ood_mean('ERM'):.2f}, manifold {100 * ood_mean(manifold):.2f}",
        ),
        check(
            "MultiMix gives tighter classes (lower alignment) than ERM and manifold mixup",
            mean(mm, "alignment") < min(mean("ERM", "alignment"), mean(manifold, "alignment")),
            f"{mean(mm, 'alignment'):.3f} vs {mean('ERM', 'alignment'):.3f} and {mean(manifold, 'alignment'):.3f}",
        ),
        check(
            "MultiMix spreads classes more uniformly (lower uniformity) than ERM and manifold mixup",
            mean(mm, "uniformity") < min(mean("ERM", "uniformity"), mean(manifold, "uniformity")),
            f"{mean(mm, 'uniformity'):.3f} vs {mean('ERM', 'uniformity'):.3f} and {mean(manifold, 'uniformity'):.3f}",
        ),
        check(
            "mixup calibrates better than ERM (lower ECE)",
            mean(mixup, "ece") < mean("ERM", "ece"),
            f"{100 * mean(mixup, 'ece'):.2f} vs {100 * mean('ERM', 'ece'):.2f}",
        ),
        "",
    ]
    write_text(ROOT / "results" / "evaluation_mnist1d.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
