"""What mixing costs on top of ERM: full training steps, interleaved, on the same batch.

    python benchmarks/overhead.py [--device cpu|cuda] [--amp] [--rounds 15] [--models cnn1d,preactresnet18]
                                  [--profile "MultiMix n=1000"] [--out benchmarks/results/overhead.md]

For each model a fixed batch (cnn1d: b = 100 MNIST-1D-shaped sequences, 10 classes; preactresnet18:
b = 128 images 3×32×32, 100 classes), and for each method one full step (forward, loss, backward,
SGD step, plus the teacher's update where there is one). Steps of all methods are timed in turn in
every round after warm-up (in a rotating order); the median step time is reported, and the ratio to
ERM as the median of each round's ratio to ERM's block of that round, with its quartiles. Library defaults for m
and α. "MultiMix n=1000, generic" is the same method without the exact linear-classifier shortcut
(the embeddings, not the logits, are mixed): the before/after of that optimisation, in one run.

On CUDA, also the GPU's own time per step (kernel time from torch.profiler): where the step time is
set by the host (Python and kernel launches), this says what mixing costs the GPU.

Memory: the bytes autograd saves for backward in one step (exact and deterministic: the activation
memory that dominates the peak), and on CUDA the measured peak, ``torch.cuda.max_memory_allocated``.
(A CPU peak-RSS measurement was tried and removed: it read 0 MiB growth for every method.)

Also: the Dirichlet sampler alone against ``torch.distributions.Dirichlet``, and the interpolation
alone (Λ Z) against a plain ``torch.matmul`` of the same shape, the arithmetic floor.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, interleaved_samples, paired_ratios
from multimix import DenseMultiMix, EMATeacher, ManifoldMixup, Mixup, MultiMix, soft_cross_entropy
from multimix import functional as MF
from multimix.models import build_model

SETUPS = {
    "cnn1d": dict(shape=(40,), batch=100, classes=10),
    "preactresnet18": dict(shape=(3, 32, 32), batch=128, classes=100),
}
METHODS = [
    "ERM",
    "input mixup",
    "manifold mixup",
    "MultiMix n=100",
    "MultiMix n=1000",
    "MultiMix n=10000",
    "MultiMix n=1000, generic",
    "Dense MultiMix n=1000",
    "MultiMix n=1000 + teacher",
]


class SavedBytes:
    """Counts the bytes of distinct storages autograd saves for backward during a forward pass."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return t

    @property
    def mib(self) -> float:
        return sum(self.storages.values()) / 2**20


def make_step(
    model_name: str,
    method: str,
    device: torch.device,
    amp: bool,
    seed: int = 0,
    saved: SavedBytes | None = None,
    compile_model: bool = False,
    graph: bool = False,
):
    """A closure running one training step of ``method``; the model and batch are its own.

    With ``graph``, the whole step (forward, loss, backward, SGD step, teacher update) is captured in
    one CUDA graph and the closure replays it: the host launches one graph instead of every kernel.
    """
    setup = SETUPS[model_name]
    torch.manual_seed(seed)
    model = build_model(model_name, input_shape=setup["shape"], num_classes=setup["classes"]).to(
        device
    )
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(setup["batch"], *setup["shape"], device=device)
    y = torch.randint(setup["classes"], (setup["batch"],), device=device)
    k = setup["classes"]
    teacher = None
    if method == "ERM":
        mixer = None
    elif method == "input mixup":
        mixer = Mixup(model, num_classes=k, generator=g)
    elif method == "manifold mixup":
        mixer = ManifoldMixup(model, layers=model.manifold_layers, num_classes=k, generator=g)
    elif method.startswith("Dense"):
        mixer = DenseMultiMix(
            model,
            features=model.feature_layer,
            classifier=model.classifier_layer,
            n=1000,
            num_classes=k,
            generator=g,
        )
    else:
        n = int(method.split("n=")[1].split(",")[0].split(" ")[0])
        if method.endswith("teacher"):
            teacher = EMATeacher(model, momentum=0.999)
        mixer = MultiMix(
            model,
            classifier=model.classifier_layer,
            n=n,
            num_classes=k,
            generator=g,
            teacher=teacher,
            linear_shortcut=not method.endswith("generic"),
        )
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    net = model
    # The trainer's --compile: hooks placed first, then the mixer calls the compiled module
    if compile_model:
        # Several models of one class are compiled here, some with the mixers' hooks and some without:
        # dynamo must guard on hooks, or it reuses a graph traced without them (no mixing).
        torch._dynamo.config.skip_nnmodule_hook_guards = False
        net = torch.compile(model)
        if mixer is not None:
            mixer.model = net

    import contextlib

    def step() -> None:
        hooks = (
            torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t)
            if saved
            else contextlib.nullcontext()
        )
        # Autocast's weight cache would keep copies made during capture: off when capturing.
        with (
            hooks,
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp, cache_enabled=not graph),
        ):
            if mixer is None:
                logits, targets = net(x), MF.one_hot(y, k)
            else:
                logits, targets = mixer(x, y)
            loss = soft_cross_entropy(logits.float(), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if teacher is not None:
            teacher.update()

    if graph:
        return capture(step, [g], device)
    return step


def capture(step, generators: list[torch.Generator], device: torch.device):
    """``step`` captured in a CUDA graph (after warm-up on a side stream, as CUDA graphs require);
    returns the graph's replay. The mixing generators are registered with the graph, so every replay
    draws afresh from them (graph-safe RNG) instead of repeating the draws of the capture."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    for gen in generators:
        graph.register_generator_state(gen)
    with torch.cuda.graph(graph):
        step()

    def replay() -> None:
        # The graph reads the step's tensors (batch, weights, optimiser state) at the addresses it
        # captured: holding ``step`` keeps them alive.
        graph.replay()

    replay.step = step
    return replay


def gpu_busy_s(step, device: torch.device, steps: int = 5) -> float:
    """Seconds of GPU kernel time per step (the sum over kernels, from torch.profiler): the step's cost
    to the GPU itself, which is what remains when the host is not the bottleneck."""
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize(device)
    return sum(e.self_device_time_total for e in prof.key_averages()) / steps / 1e6


def cuda_peak(
    model_name: str,
    method: str,
    device: torch.device,
    amp: bool,
    compile_model: bool = False,
    graph: bool = False,
) -> float:
    step = make_step(model_name, method, device, amp, compile_model=compile_model, graph=graph)
    step()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--models", default="cnn1d,preactresnet18")
    parser.add_argument(
        "--profile", default=None, help="also print a torch.profiler table of this method's step"
    )
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument(
        "--methods",
        default=None,
        help="a subset of the methods, separated by ';' (their names "
        "hold commas), e.g. 'ERM;MultiMix n=1000' (default: all)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the model (as train --compile)"
    )
    parser.add_argument(
        "--cuda-graph",
        action="store_true",
        help="capture each method's whole step in a CUDA "
        "graph and time its replay (as train --cuda-graph)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.cuda_graph and device.type != "cuda":
        parser.error(f"--cuda-graph: CUDA graphs need --device cuda, got --device {args.device}")
    asked = METHODS if args.methods is None else [m.strip() for m in args.methods.split(";")]
    methods = [m for m in METHODS if m in asked]
    if "ERM" not in methods or len(methods) != len(asked):
        parser.error(
            f"--methods: expected names from {METHODS}, separated by ';', including ERM; got {args.methods!r}"
        )
    subset = "" if methods == METHODS else f" --methods {shlex.quote(args.methods)}"
    lines = [
        f"# Training-step overhead over ERM ({device.type}{', bf16 autocast' if args.amp else ''}"
        f"{', torch.compile' if args.compile else ''}{', CUDA graph' if args.cuda_graph else ''})",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        f"- command: `python benchmarks/overhead.py --device {args.device}{' --amp' if args.amp else ''} "
        f"--rounds {args.rounds} --models {args.models}{' --compile' if args.compile else ''}"
        f"{' --cuda-graph' if args.cuda_graph else ''}{subset}`",
        "- one step = forward + loss + backward + SGD step; methods interleaved in rounds (order rotating); step "
        "time: median over rounds; vs ERM: median over rounds of the round's ratio to ERM's block of the same "
        "round, with its quartiles (a slow or fast spell of the machine moves both sides of a round's ratio)",
        "",
    ]
    for model_name in args.models.split(","):
        setup = SETUPS[model_name]
        # The resnet is slow on a CPU: fewer rounds, one step per block.
        rounds = (
            args.rounds
            if not (model_name == "preactresnet18" and device.type == "cpu")
            else max(3, args.rounds // 3)
        )
        steps = {
            m: make_step(
                model_name, m, device, args.amp, compile_model=args.compile, graph=args.cuda_graph
            )
            for m in methods
        }
        samples = interleaved_samples(steps, device, rounds, min_block_s=0.05, warmup=2)
        times = {m: statistics.median(v) for m, v in samples.items()}
        vs_erm = paired_ratios(samples, "ERM")
        saved, memory = {}, {}
        for m in methods:
            counter = SavedBytes()
            make_step(model_name, m, device, args.amp, saved=counter, compile_model=args.compile)()
            saved[m] = counter.mib
            # Under --cuda-graph every captured graph keeps its memory pool for the whole process, so a peak
            # measured here would include the graphs of the methods captured before: not reported.
            if not args.no_memory and device.type == "cuda" and not args.cuda_graph:
                memory[m] = cuda_peak(
                    model_name, m, device, args.amp, args.compile, args.cuda_graph
                )
        busy = {m: gpu_busy_s(steps[m], device) for m in methods} if device.type == "cuda" else {}
        mem_head = "peak allocated (MiB)"

        def ratio(values: dict[str, float], m: str) -> str:
            return f"{values[m] / values['ERM']:.2f}×" if values.get("ERM") else "—"

        lines += [
            f"## {model_name}, b = {setup['batch']}, {setup['classes']} classes ({rounds} rounds)",
            "",
            f"| method | step time | vs ERM | (quartiles) | saved for backward (MiB) | vs ERM | {mem_head} | vs ERM |"
            + (" GPU busy | vs ERM |" if busy else ""),
            "|---|---|---|---|---|---|---|---|" + ("---|---|" if busy else ""),
        ]
        for m in methods:
            mem = f"{memory[m]:.0f} | {ratio(memory, m)}" if memory else "— | —"
            if busy:
                mem += f" | {busy[m] * 1e3:.2f} ms | {busy[m] / busy['ERM']:.3f}×"
            mid, q1, q3 = vs_erm[m]
            lines.append(
                f"| {m} | {times[m] * 1e3:.2f} ms | {mid:.3f}× | {q1:.2f}–{q3:.2f} | {saved[m]:.1f} | "
                f"{ratio(saved, m)} | {mem} |"
            )
        extra = {
            n: times[f"MultiMix n={n}"] - times["ERM"]
            for n in (100, 1000, 10000)
            if f"MultiMix n={n}" in times
        }
        if extra:
            lines += [
                "",
                "MultiMix cost above ERM by n (linear growth means ×10 per ×10 in n, once fixed costs "
                "are paid): " + ", ".join(f"n={n}: {1e3 * v:+.2f} ms" for n, v in extra.items()),
            ]
        lines += [""]
        print("\n".join(lines[-len(methods) - 6 :]), flush=True)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + (
                [ProfilerActivity.CUDA] if device.type == "cuda" else []
            )
            with profile(activities=acts) as prof:
                for _ in range(3):
                    steps[args.profile]()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))

    # The pieces alone.
    b, d = 128, 512
    z = torch.randn(b, d, device=device)
    lam = MF.sample_multimix_weights(b, n=1000, m=3, alpha=1.0, device=device)
    conc = torch.ones(3, device=device)
    t = interleaved(
        {
            "sampler": lambda: MF.sample_dirichlet(1000, 3, 1.0, device=device),
            "torch.distributions": lambda: torch.distributions.Dirichlet(conc).sample((1000,)),
            "weights": lambda: MF.sample_multimix_weights(b, n=1000, m=3, alpha=1.0, device=device),
            "interpolate": lambda: MF.interpolate(lam, z),
            "matmul": lambda: torch.matmul(lam, z),
        },
        device,
        args.rounds * 2,
    )
    lines += [
        "## The pieces alone (n = 1000, m = 3, α = 1, b = 128, d = 512)",
        "",
        "| piece | time | ratio |",
        "|---|---|---|",
        f"| Dirichlet sampler | {t['sampler'] * 1e6:.1f} µs | torch.distributions.Dirichlet takes {t['torch.distributions'] / t['sampler']:.2f}× as long |",
        f"| Λ (tuples + weights) | {t['weights'] * 1e6:.1f} µs | |",
        f"| interpolation Λ Z | {t['interpolate'] * 1e6:.1f} µs | {t['interpolate'] / t['matmul']:.3f}× the plain matmul ({t['matmul'] * 1e6:.1f} µs) |",
        "",
    ]
    text = "\n".join(lines)
    print("\n".join(lines[-7:]))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=args.out.parent, delete=False, suffix=".tmp"
        ) as f:
            f.write(text)
        os.replace(f.name, args.out)


if __name__ == "__main__":
    main()
