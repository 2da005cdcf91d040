"""Cost of the per-step functional ops, measured side by side in one process.

    python benchmarks/functional_ops.py [--device cpu|cuda] [--rounds 30] [--out benchmarks/results/functional_ops.md]

Cases are interleaved (a, b, a, b, ...) so that load on a shared machine hits both sides of every
ratio alike; each figure is the median over rounds of the mean time of a block of calls.
Printed ratios:
- our Dirichlet sampler against ``torch.distributions.Dirichlet(...).sample`` (same distribution);
- one ``multimix`` call (sampling Λ, Λ Z and Λ Y) against one ``torch.matmul`` of Λ's shape with Z,
  the arithmetic floor.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

from multimix import functional as MF

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the table to this Markdown file"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    lines = [
        f"# Functional ops: cost side by side ({device.type})",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        f"- command: `python benchmarks/functional_ops.py --device {args.device} --rounds {args.rounds}`",
        "- median over rounds, cases interleaved within each round",
        "",
        "## Dirichlet sampler (n rows of m weights) vs torch.distributions.Dirichlet",
        "",
        "| n | m | α | multimix | torch.distributions | ratio (torch / ours) |",
        "|---|---|---|---|---|---|",
    ]
    for n, m, alpha in [
        (1000, 3, 1.0),
        (1000, 3, 0.5),
        (1000, 3, 2.0),
        (1000, 128, 1.0),
        (10_000, 3, 1.0),
    ]:
        conc = torch.full((m,), alpha, device=device)
        # The closures read this iteration's n, m, ... late on purpose: they are timed and dropped
        # before the loop moves on (hence the B023 exemptions).
        t = interleaved(
            {
                "ours": lambda: MF.sample_dirichlet(n, m, alpha, device=device),  # noqa: B023
                "torch": lambda: torch.distributions.Dirichlet(conc).sample((n,)),  # noqa: B023
            },
            device,
            args.rounds,
        )
        lines.append(
            f"| {n} | {m} | {alpha} | {fmt_us(t['ours'])} | {fmt_us(t['torch'])} | {t['torch'] / t['ours']:.2f}× |"
        )

    lines += [
        "",
        "## One MultiMix call vs the matmul floor (b = 128, d = 512, K = 100)",
        "",
        "| n | m | multimix (Λ sampled, ΛZ, ΛY) | Λ sampling alone | torch.matmul (n×b)(b×d) | ratio multimix / matmul |",
        "|---|---|---|---|---|---|",
    ]
    b, d, k = 128, 512, 100
    z = torch.randn(b, d, device=device)
    y = MF.one_hot(torch.randint(k, (b,), device=device), k)
    for n, m in [(1000, 3), (1000, None), (100, 3), (10_000, 3)]:
        lam = MF.sample_multimix_weights(b, n=n, m=m, alpha=1.0, device=device)
        t = interleaved(
            {
                "multimix": lambda: MF.multimix(z, y, n=n, m=m, alpha=1.0),  # noqa: B023 (timed in this iteration)
                "weights": lambda: MF.sample_multimix_weights(
                    b,
                    n=n,  # noqa: B023 (timed in this iteration)
                    m=m,  # noqa: B023
                    alpha=1.0,
                    device=device,
                ),
                "matmul": lambda: torch.matmul(lam, z),  # noqa: B023
            },
            device,
            args.rounds,
        )
        lines.append(
            f"| {n} | {m or 'b'} | {fmt_us(t['multimix'])} | {fmt_us(t['weights'])} | {fmt_us(t['matmul'])} | "
            f"{t['multimix'] / t['matmul']:.2f}× |"
        )
    text = "\n".join(lines) + "\n"
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=args.out.parent, delete=False, suffix=".tmp"
        ) as f:
            f.write(text)
        os.replace(f.name, args.out)
    return text


if __name__ == "__main__":
    sys.stdout.write(main())
