"""Cost of the reference image models: parameters, forward FLOPs per image, and the seconds one
training epoch of Fashion-MNIST's 54 000 training images (after the validation split) takes on the CPU,
from the median time of an Adam step at batch 100, measured interleaved.

    python benchmarks/model_cost.py [--rounds 5] [--threads 2]

Writes benchmarks/results/model_cost.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved
from multimix.functional import one_hot, soft_cross_entropy
from multimix.models import MODELS, build_model
from multimix.train.checkpoint import write_text

CASES = [  # (label, registry name, keyword arguments, input shape)
    ("convnet", "convnet", {}, (1, 28, 28)),
    ("preactresnet8 w=16", "preactresnet8", {"width": 16}, (1, 28, 28)),
    ("preactresnet8 (w=32, default)", "preactresnet8", {}, (1, 28, 28)),
    ("vit (d=64, depth 4)", "vit", {}, (1, 28, 28)),
    ("preactresnet18", "preactresnet18", {}, (1, 28, 28)),
]
FASHION_TRAIN = 54_000  # Fashion-MNIST training images after the validation split


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--batch", type=int, default=100, help="training batch size of the timed steps"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "model_cost.md"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    rows, steps = [], {}
    for label, name, kwargs, shape in CASES:
        torch.manual_seed(0)
        model = (
            MODELS[name](shape, 10, **kwargs)
            if kwargs
            else build_model(name, input_shape=shape, num_classes=10)
        )
        with FlopCounterMode(display=False) as counter:
            model.eval()(torch.zeros(1, *shape))
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, y = torch.rand(args.batch, *shape), one_hot(torch.randint(10, (args.batch,)), 10)

        def step(model=model, opt=opt, x=x, y=y):
            loss = soft_cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[label] = step
        rows.append((label, sum(p.numel() for p in model.parameters()), counter.get_total_flops()))
    seconds = interleaved(steps, device, args.rounds)
    steps_per_epoch = FASHION_TRAIN // args.batch
    lines = [
        f"# Reference models on 28×28 inputs (CPU, {args.threads} threads, batch {args.batch}, Adam)",
        "",
        f"`python benchmarks/model_cost.py --rounds {args.rounds} --threads {args.threads} --batch {args.batch}`",
        "",
        "| model | parameters | forward MFLOPs / image | s / step "
        f"| s / Fashion-MNIST epoch ({steps_per_epoch} steps) |",
        "|---|---|---|---|---|",
    ]
    for label, params, flops in rows:
        s = seconds[label]
        lines.append(
            f"| {label} | {params:,} | {flops / 1e6:.1f} | {s:.3f} | {s * steps_per_epoch:.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    write_text(args.out, text)


if __name__ == "__main__":
    main()
