"""Where mixing's CPU step cost goes, and the floors that bound what a change to the mixers can win.

    python benchmarks/overhead_floor.py [--rounds 40] [--block-s 0.05] [--out FILE]

cnn1d, b = 100, 10 classes, SGD, as ``overhead.py``: steps timed in interleaved blocks (the order rotating
from round to round), each against ERM's block of the same round (median of the per-round ratios, with
quartiles). The steps:

- ERM;
- "ERM, 10 000-row loss": ERM whose 100 logits are spread to 10 000 class-major rows, the rows Dense MultiMix
  n = 1000 trains on for cnn1d's r = 10 positions, with the same spread targets: the loss's own share of
  Dense MultiMix's step, nothing mixed;
- MultiMix and Dense MultiMix at n = 1 (what a step costs whatever n: drawing, hooks, the extra operations)
  and at n = 1000 (the library default).

Then one operation warm and cold: Dense MultiMix's draw of tuples and per-position weights (n = 1000, r = 10)
timed right after other draws, and right after a training step (the step's convolutions have evicted what
the draw uses from the caches). Their ratio is how much more every small operation of a mixer costs inside a
training step than in a loop of its own.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved_samples, paired_ratios
from multimix import DenseMultiMix, MultiMix, soft_cross_entropy
from multimix import functional as MF
from multimix.models import build_model

K, B, R = 10, 100, 10  # classes, batch, cnn1d's positions at its features (40 / 4)


def make_step(method: str, n: int = 1000, seed: int = 0):
    """One cnn1d training step: "ERM", "ERM, 10 000-row loss", "MultiMix" or "Dense MultiMix"."""
    torch.manual_seed(seed)
    model = build_model("cnn1d", input_shape=(40,), num_classes=K)
    x, y = torch.randn(B, 40), torch.randint(K, (B,))
    g = torch.Generator().manual_seed(seed)
    mixer = None
    if method == "MultiMix":
        mixer = MultiMix(model, classifier="fc", n=n, num_classes=K, generator=g)
    elif method == "Dense MultiMix":
        mixer = DenseMultiMix(
            model, features="features", classifier="fc", n=n, num_classes=K, generator=g
        )
    spread = n * R // B  # copies of each logit row in the spread loss
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        if mixer is not None:
            logits, targets = mixer(x, y)
        else:
            logits, targets = model(x), MF.one_hot(y, K)
            # (K, b·spread) class-major storage seen as (b·spread, K) rows, as Dense's
            if method != "ERM":
                logits = logits.t()[:, :, None].expand(K, B, spread).reshape(K, -1).t()
                targets = targets.t()[:, :, None].expand(K, B, spread).reshape(K, -1).t()
        loss = soft_cross_entropy(logits, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def warm_and_cold(rounds: int) -> tuple[float, float]:
    """Seconds of one Dense MultiMix draw after other draws, and right after a Dense MultiMix training step."""
    g = torch.Generator().manual_seed(0)

    def draw():
        return MF.sample_dense_multimix_weights(B, R, n=1000, m=2, generator=g, member_major=True)

    step = make_step("Dense MultiMix")
    for _ in range(5):
        step()
    warm, cold = [], []
    for _ in range(rounds):
        for _ in range(3):
            draw()
        t0 = time.perf_counter()
        draw()
        warm.append(time.perf_counter() - t0)
        step()
        t0 = time.perf_counter()
        draw()
        cold.append(time.perf_counter() - t0)
    return statistics.median(warm), statistics.median(cold)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument(
        "--block-s", type=float, default=0.05, help="seconds of steps per timed block"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the table here (markdown)"
    )
    args = parser.parse_args()
    if args.rounds < 2 or not args.block_s > 0:
        parser.error(
            f"--rounds must be >= 2 and --block-s > 0, got {args.rounds} and {args.block_s}"
        )
    steps = {
        "ERM": make_step("ERM"),
        "ERM, 10 000-row loss": make_step("ERM, 10 000-row loss"),
        "MultiMix n=1": make_step("MultiMix", n=1),
        "MultiMix n=1000": make_step("MultiMix"),
        "Dense MultiMix n=1": make_step("Dense MultiMix", n=1),
        "Dense MultiMix n=1000": make_step("Dense MultiMix"),
    }
    samples = interleaved_samples(
        steps, torch.device("cpu"), args.rounds, min_block_s=args.block_s, warmup=5
    )
    vs_erm = paired_ratios(samples, "ERM")
    warm, cold = warm_and_cold(args.rounds)
    lines = [
        f"# Where the CPU step cost goes (cnn1d, b = {B}, {K} classes; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)",
        "",
        f"- command: `python benchmarks/overhead_floor.py --rounds {args.rounds} --block-s {args.block_s}`",
        "",
        "| step | time | vs ERM | (quartiles) |",
        "|---|---|---|---|",
    ]
    for name, values in samples.items():
        mid, q1, q3 = vs_erm[name]
        lines.append(
            f"| {name} | {statistics.median(values) * 1e3:.2f} ms | {mid:.3f}× | {q1:.2f}–{q3:.2f} |"
        )
    lines += [
        "",
        f"Dense MultiMix's draw (n = 1000, r = {R}): {warm * 1e6:.1f} µs after other draws, "
        f"{cold * 1e6:.1f} µs right after a training step ({cold / warm:.2f}×)",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=args.out.parent, delete=False, suffix=".tmp"
        ) as f:
            f.write(text)
        Path(f.name).replace(args.out)


if __name__ == "__main__":
    main()
