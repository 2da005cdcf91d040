"""A/B of the training step's cost between a git revision of the library and the working tree, in one process.

    python benchmarks/ab_overhead.py --rev HEAD~1 [--methods multimix,dense] [--n 1000] [--rounds 200] [--block-s 0.05]

On a shared machine whose speed drifts by tens of percent over minutes, two runs of overhead.py minutes
apart cannot tell a 3 % change from noise. Here both versions run side by side in one process: the
revision's ``src/multimix`` is extracted with ``git archive`` into a temporary directory as the package
``multimix_rev`` (its imports rewritten), and every round times ERM, then each method with the
revision's code and with the working tree's code (cnn1d, b = 100, 10 classes, SGD; the order rotates
from round to round). Printed: each step's ratio to ERM (median of per-round ratios) and the ratio
working tree / revision, with its quartiles.
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved_samples, paired_ratios

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("multimix", "dense")
SUBMODULES = (
    r"functional|mixers|models|_validation|_io|teacher|schedules|train|data|analysis|evaluate"
)


def extract(rev: str, into: Path) -> None:
    """``src/multimix`` at ``rev`` as the package ``multimix_rev`` under ``into``."""
    archive = into / "rev.tar"
    subprocess.run(
        ["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "src/multimix"], check=True
    )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (into / "src" / "multimix").rename(into / "multimix_rev")
    for path in (into / "multimix_rev").rglob("*.py"):
        text = path.read_text()
        text = re.sub(rf"\bmultimix\.({SUBMODULES})\b", r"multimix_rev.\1", text)
        text = re.sub(r"^from multimix import", "from multimix_rev import", text, flags=re.M)
        path.write_text(text)


def make_step(package: str, method: str, n: int, seed: int = 0):
    """One cnn1d training step of ``method`` ("erm", "multimix", "dense") built from ``package``."""
    lib = importlib.import_module(package)
    functional = importlib.import_module(f"{package}.functional")
    models = importlib.import_module(f"{package}.models")
    k = 10
    torch.manual_seed(seed)
    model = models.build_model("cnn1d", input_shape=(40,), num_classes=k)
    x, y = torch.randn(100, 40), torch.randint(k, (100,))
    g = torch.Generator().manual_seed(seed)
    mixer = None
    if method == "multimix":
        mixer = lib.MultiMix(model, classifier="fc", n=n, num_classes=k, generator=g)
    elif method == "dense":
        mixer = lib.DenseMultiMix(
            model, features="features", classifier="fc", n=n, num_classes=k, generator=g
        )
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        logits, targets = (model(x), functional.one_hot(y, k)) if mixer is None else mixer(x, y)
        loss = functional.soft_cross_entropy(logits, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rev",
        required=True,
        help="the git revision to compare the working tree with, e.g. HEAD~1",
    )
    parser.add_argument(
        "--methods", default="multimix,dense", help=f"comma-separated, from {', '.join(METHODS)}"
    )
    parser.add_argument("--n", type=int, default=1000, help="generated rows per batch")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument(
        "--block-s",
        type=float,
        default=0.05,
        help="seconds of steps per timed block (as "
        "overhead.py: a block long enough for the step to reach its steady state; shorter "
        "blocks leave each method's step under its predecessor's cache and allocator state)",
    )
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",")]
    if not methods or any(m not in METHODS for m in methods):
        parser.error(
            f"--methods: expected names from {', '.join(METHODS)}, separated by commas; got {args.methods!r}"
        )
    if args.n < 1 or args.rounds < 2 or not args.block_s > 0:
        parser.error(
            f"--n must be >= 1, --rounds >= 2 and --block-s > 0, got {args.n}, {args.rounds} and {args.block_s}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            extract(args.rev, Path(tmp))
        except subprocess.CalledProcessError:
            parser.error(f"--rev: git could not archive src/multimix at {args.rev!r}")
        sys.path.insert(0, tmp)
        steps = {"ERM": make_step("multimix", "erm", args.n)}
        for m in methods:
            steps[f"{m} @ {args.rev}"] = make_step("multimix_rev", m, args.n)
            steps[f"{m} @ working tree"] = make_step("multimix", m, args.n)
        samples = interleaved_samples(
            steps, torch.device("cpu"), args.rounds, min_block_s=args.block_s, warmup=10
        )
    vs_erm = paired_ratios(samples, "ERM")
    print(
        f"cnn1d, n = {args.n}, {args.rounds} rounds, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for name in steps:
        mid, q1, q3 = vs_erm[name]
        print(f"  {name:32s} {mid:.3f}× ERM ({q1:.2f}–{q3:.2f})")
    for m in methods:
        new, old = f"{m} @ working tree", f"{m} @ {args.rev}"
        mid, q1, q3 = paired_ratios({new: samples[new], old: samples[old]}, old)[new]
        print(f"  {m}: working tree / {args.rev} = {mid:.3f} (quartiles {q1:.3f}–{q3:.3f})")


if __name__ == "__main__":
    main()
