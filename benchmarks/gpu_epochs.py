"""Whole training epochs on a GPU, eager against ``--cuda-graph``: what a user's run costs per method.

    python benchmarks/gpu_epochs.py [--dataset fashion-mnist] [--data-dir DIR] [--model preactresnet18]
                                    [--methods erm,multimix,dense-multimix] [--epochs 3] [--batch-size 128]
                                    [--out benchmarks/results/gpu_epochs.md]

Each method is trained by ``multimix.train.train`` (the CLI's code path) with bf16 autocast and
channels-last, once eagerly and once with the training step replayed as CUDA graphs, with the same
seed, optimiser (SGD, lr 0.05, momentum 0.9) and data. Reported: the training time of an epoch (the
median of the epochs after the first, which holds warm-up and graph capture), its ratio to ERM's in
the same mode, the speed-up of CUDA graphs, and the final validation accuracy (a check that both
modes train alike, not a result: a few epochs, one seed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

import torch

from multimix.train.checkpoint import write_text
from multimix.train.config import TrainConfig
from multimix.train.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default="preactresnet18")
    parser.add_argument("--methods", default="erm,multimix,dense-multimix")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("this benchmark needs a CUDA device (none found)")
    if args.epochs < 2:
        parser.error(
            f"--epochs: expected at least 2 (the first epoch holds warm-up and capture), got {args.epochs}"
        )
    methods = args.methods.split(",")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            for graph in (False, True):
                config = TrainConfig.from_dict(
                    dict(
                        dataset=args.dataset,
                        data_dir=args.data_dir,
                        model=args.model,
                        method=method,
                        epochs=args.epochs,
                        batch_size=args.batch_size,
                        optimizer="sgd",
                        lr=0.05,
                        device="cuda",
                        amp="bf16",
                        channels_last=True,
                        cuda_graph=graph,
                    )
                )
                out = Path(tmp) / f"{method}-{graph}"
                summary = train(config, out, progress=False)
                history = [
                    json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                ]
                rows[method, graph] = (
                    statistics.median(r["time_s"] for r in history[1:]),
                    summary["final"]["val_acc"],
                )
                print(
                    f"{method} {'graph' if graph else 'eager'}: {rows[method, graph][0]:.2f} s/epoch",
                    flush=True,
                )
    lines = [
        f"# Training epochs on a GPU: eager against CUDA graphs ({args.dataset}, {args.model}, b = {args.batch_size})",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}, "
        f"{torch.cuda.get_device_name()}",
        f"- command: `python benchmarks/gpu_epochs.py --dataset {args.dataset} --model {args.model} --methods "
        f"{args.methods} --epochs {args.epochs} --batch-size {args.batch_size}`",
        "- bf16 autocast, channels-last, SGD lr 0.05; epoch time = median over epochs 2…E of the training loop "
        "(evaluation excluded); validation accuracy after the last epoch (one seed: a sanity check)",
        "",
        "| method | eager s/epoch | vs ERM | CUDA graphs s/epoch | vs ERM | speed-up | val acc eager | val acc graphs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        (te, ae), (tg, ag) = rows[method, False], rows[method, True]
        erm_e, erm_g = rows.get(("erm", False), (te,))[0], rows.get(("erm", True), (tg,))[0]
        lines.append(
            f"| {method} | {te:.2f} | {te / erm_e:.3f}× | {tg:.2f} | {tg / erm_g:.3f}× | {te / tg:.2f}× | "
            f"{100 * ae:.2f} | {100 * ag:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, text)  # atomically


if __name__ == "__main__":
    main()
