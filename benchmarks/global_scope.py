"""What MultiMix over the global batch costs against local scope, under torchrun.

    torchrun --standalone --nproc_per_node 2 benchmarks/global_scope.py [--rounds 15] [--device cpu]
             [--out benchmarks/results/global_scope.md]

Each process trains the same model in ``DistributedDataParallel`` on its share of a global batch
(cnn1d: b = 100 MNIST-1D-shaped sequences, 10 classes; n = 1000, m = 2): full steps (forward, loss,
backward with DDP's gradient all-reduce, SGD step) of ERM, MultiMix local scope (n per process) and
MultiMix global scope (n over the global batch), each with the exact linear shortcut (logits gathered)
and without it (embeddings gathered). Cases are interleaved in rounds of a fixed number of steps, the
same on every rank (a collective must be entered by all). Rank 0 reports medians.

Bytes: the extra traffic of global scope per step and process, counted from the tensors it gathers
(batch sizes, the rows that are mixed, their targets) and the gradient sent back (a reduce-scatter of
the mixed rows' gradient), against the bytes of DDP's gradient all-reduce, which every scope pays.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import sync
from multimix import MultiMix, soft_cross_entropy
from multimix.functional import one_hot
from multimix.models import build_model
from multimix.train.distributed import share

B, K, N, M, SHAPE = 100, 10, 1000, 2, (40,)


def make_step(
    scope: str | None, linear_shortcut: bool, device: torch.device, rank: int, world: int
):
    torch.manual_seed(0)
    model = build_model("cnn1d", input_shape=SHAPE, num_classes=K).to(device)
    net = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None
    )
    gen = torch.Generator(device=device).manual_seed(1)
    mixer = (
        None
        if scope is None
        else MultiMix(
            net,
            classifier="fc",
            n=N,
            m=M,
            scope=scope,
            linear_shortcut=linear_shortcut,
            num_classes=K,
            generator=gen,
        )
    )
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    g = torch.Generator().manual_seed(2)
    x_all, y_all = torch.randn(B, *SHAPE, generator=g), torch.randint(K, (B,), generator=g)
    mine = share(B, rank, world)
    x, y = x_all[mine].to(device), y_all[mine].to(device)
    net.train()

    def step():
        logits, targets = (net(x), one_hot(y, K)) if mixer is None else mixer(x, y)
        rows = torch.full((), float(logits.shape[0]), device=device)
        dist.all_reduce(rows)
        loss = soft_cross_entropy(logits, targets, reduction="sum") * (world / rows)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    params = sum(p.numel() for p in model.parameters())
    return step, params, model.fc.in_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20, help="steps per case and round")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if "WORLD_SIZE" not in os.environ:
        sys.exit(
            "start this with torchrun, e.g. torchrun --standalone --nproc_per_node 2 benchmarks/global_scope.py"
        )
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)

    cases = {}
    for name, scope, shortcut in [
        ("ERM", None, True),
        ("MultiMix local", "local", True),
        ("MultiMix global", "global", True),
        ("MultiMix local, generic", "local", False),
        ("MultiMix global, generic", "global", False),
    ]:
        cases[name], params, d = make_step(scope, shortcut, device, rank, world)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up
        for _ in range(3):
            fn()
    for _ in range(args.rounds):
        for name, fn in cases.items():
            dist.barrier()
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            sync(device)
            samples[name].append((time.perf_counter() - t0) / args.steps)
    medians = {name: statistics.median(v) for name, v in samples.items()}
    if rank != 0:
        dist.destroy_process_group()
        return

    longest = -(-B // world)
    gathered = lambda width: world * longest * width * 4  # noqa: E731 — an all-gather of float32 rows
    # Three collectives: the batch sizes; the rows mixed packed with their targets (one all-gather);
    # the gradient of the gathered tensor back to its owners (reduce-scatter, or all-reduce on gloo).
    extra = {
        "MultiMix global": 8 * world + 2 * gathered(K + K),  # logits under the linear shortcut
        "MultiMix global, generic": 8 * world + 2 * gathered(d + K),  # embeddings
    }
    grad_bytes = params * 4
    lines = [
        f"# MultiMix over the global batch: cost against local scope ({device.type}, {world} processes)",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}, 1 thread per process"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        f"- command: `torchrun --standalone --nproc_per_node {world} benchmarks/global_scope.py --rounds {args.rounds}"
        f" --device {args.device}`",
        f"- cnn1d, global batch {B} ({'+'.join(str(share(B, r, world).stop - share(B, r, world).start) for r in range(world))}"
        f" per process), {K} classes, n = {N}, m = {M}; one step = forward, loss, backward (DDP all-reduce), SGD step;"
        f" median over {args.rounds} rounds of {args.steps} steps, cases interleaved",
        "- local scope generates n rows per process (n·world in all); global scope n in all, each process its share",
        "",
        "| case | step time | vs ERM | vs local scope | extra bytes sent per step and process | vs DDP's gradient all-reduce |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in medians.items():
        local = medians.get(name.replace("global", "local"))
        vs_local = f"{t / local:.3f}×" if "global" in name else "—"
        e = extra.get(name)
        lines.append(
            f"| {name} | {1e3 * t:.2f} ms | {t / medians['ERM']:.3f}× | {vs_local} | "
            f"{'—' if e is None else f'{e / 1024:.1f} KiB'} | {'—' if e is None else f'{e / grad_bytes:.3f}×'} |"
        )
    lines += [
        "",
        f"DDP's gradient all-reduce: {grad_bytes / 1024:.1f} KiB per step ({params} float32 parameters).",
        "",
        "Global scope adds three collectives per step (batch sizes; rows and targets in one all-gather; "
        "the gradient back), each a point where every process waits for the others, in the middle of "
        "forward and backward, where DDP's all-reduce overlaps with backward. Their bytes are small; "
        "their cost is latency and waiting, so it depends on the interconnect and on how evenly the "
        "processes run (here two single-threaded processes share two cores over loopback gloo).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
