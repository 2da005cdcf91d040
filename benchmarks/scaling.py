"""Cost as the work grows: a training step's time and memory relative to ERM, for MultiMix and Dense
MultiMix, as one factor grows while the others stay at a base point; beside each ratio, what a FLOP
count predicts.

    python benchmarks/scaling.py [--device cpu|cuda] [--cuda-graph] [--rounds 9] [--quick]
                                 [--profile "n=10000:MultiMix"] [--out benchmarks/results/scaling.md]

Factors (the others at the base point b = 128, n = 1000, K = 100, d = 512, r = 16, m = 2):
n ∈ {100, 1000, 10 000} generated rows, K ∈ {10, 100, 1000} classes, d ∈ {128, 512, 2048} embedding
width, r ∈ {1, 16, 49, 196} positions of the spatial embedding (CIFAR's 4×4, ImageNet's 7×7, a ViT's
14×14 tokens).

The encoder's cost is fixed, so that the ratio isolates the mixer: a trunk of three 1024-wide linear
layers (with ReLU) on 512 input features, then a projection to d (the only d-dependent part of the
encoder: 2·b·1024·d FLOPs forward), then a learned (d, r) positional map added to every example's
embedding, giving the (b, d, r) spatial embedding (b·d·r additions). ERM and MultiMix pool it over the r
positions and classify the (b, d) pooled embedding with a linear layer ``fc``; Dense MultiMix mixes the
(b, d, r) map itself (``features=``). The three methods train the same model from the same weights.

Cases: ERM; MultiMix (the library's default, the exact linear shortcut: the b clean logits are mixed);
MultiMix without the shortcut (``linear_shortcut=False``: the embeddings are mixed and the classifier
runs on the n mixed rows, as it must when the classifier is not one linear layer); Dense MultiMix
(default, linear shortcut: the b·r positions are classified, then their logits mixed).

FLOP model per step (forward + backward; a GEMM's backward is two GEMMs, so 3× its forward):
``matmul`` FLOPs — the encoder, the classifier on its rows (b; n without the shortcut; b·r for Dense) —
and ``elementwise`` operations — the mixing (gather, weight, add; its backward; the targets), the loss
on the n (·r) rows, ReLU, the positional map. Predicted ratio = FLOPs(method) / FLOPs(ERM). A second
prediction weighs the two kinds by this machine's measured rates (matmul FLOP/s of the trunk's shape,
and elementwise operations/s of a 16 M-element pass): on a CPU an elementwise operation costs ~10–50×
a GEMM FLOP, which a plain FLOP count hides.

Memory: the bytes autograd saves for backward in one step (``torch.autograd.graph.saved_tensors_hooks``,
distinct storages, as benchmarks/overhead.py), exact and deterministic; for Dense MultiMix at
ImageNet's shape also the peak resident-set growth of a step in a fresh process (VmHWM, reset through
/proc/self/clear_refs, against the RSS before the step; on CUDA ``torch.cuda.max_memory_allocated``).

Also PreActResNet-18 on 32×32 images, K = 100, b = 128 (Dense at its 4×4 map, r = 16), whose encoder
FLOPs come from ``torch.utils.flop_counter`` (not with ``--quick``).

``--device cuda`` runs in bf16 autocast, with ``--cuda-graph`` each step captured whole in a CUDA graph
and replayed (as benchmarks/overhead.py --cuda-graph).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import multimix
from _timing import interleaved_samples, paired_ratios, sync
from multimix import DenseMultiMix, MultiMix, soft_cross_entropy
from multimix import functional as MF
from multimix.train.allocator import keep_large_buffers

CASES = ("ERM", "MultiMix", "MultiMix, no shortcut", "Dense MultiMix")
FACTORS = {
    "n": (100, 1000, 10000),
    "K": (10, 100, 1000),
    "d": (128, 512, 2048),
    "r": (1, 16, 49, 196),
}
QUICK_FACTORS = {"n": (10, 100), "K": (10, 20), "d": (16, 32), "r": (1, 4)}
#: Elementwise operations per element of the soft cross-entropy, forward and backward (log-softmax:
#: max, subtract, exp, sum, log; the dot with the targets; backward: softmax − targets, scaled).
LOSS_OPS = 10
#: Per mixed value (n·m values of K or d): forward gather, weight, add; backward weight and index-add.
MIX_OPS = 6
#: Per mixed target value (no gradient): gather, weight, add.
TARGET_OPS = 3


@dataclass(frozen=True)
class Point:
    b: int = 128
    n: int = 1000
    K: int = 100
    d: int = 512
    r: int = 16
    m: int = 2
    d_in: int = 512
    width: int = 1024
    depth: int = 3

    def label(self) -> str:
        return f"b={self.b} n={self.n} K={self.K} d={self.d} r={self.r}"


QUICK_BASE = Point(b=16, n=100, K=10, d=32, r=4, d_in=32, width=64, depth=2)


class FixedEncoder(nn.Module):
    """A fixed-cost trunk, a projection to d, a (d, r) positional map: (b, d, r) features; pooled + fc."""

    def __init__(self, p: Point) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(p.depth):
            layers += [nn.Linear(p.d_in if i == 0 else p.width, p.width), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.proj = nn.Linear(p.width, p.d)
        self.pos = nn.Parameter(0.1 * torch.randn(p.d, p.r))
        self.features = nn.Identity()  # its output: the (b, d, r) spatial embedding
        self.fc = nn.Linear(p.d, p.K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(self.trunk(x))
        z = self.features(h[:, :, None] + self.pos)
        return self.fc(z.mean(dim=2))


@dataclass
class Setup:
    model: str  # "fixed" or "preactresnet18"
    p: Point

    def build(self) -> tuple[nn.Module, tuple[int, ...], str, str]:
        """(model, input shape, features module, classifier module)."""
        if self.model == "fixed":
            return FixedEncoder(self.p), (self.p.d_in,), "features", "fc"
        from multimix.models import build_model

        shape = (3, 32, 32)
        model = build_model("preactresnet18", input_shape=shape, num_classes=self.p.K)
        return model, shape, model.feature_layer, model.classifier_layer


class SavedBytes:
    """Bytes of the distinct storages autograd saves for backward (as benchmarks/overhead.py)."""

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
    setup: Setup,
    case: str,
    device: torch.device,
    *,
    amp: bool = False,
    graph: bool = False,
    saved: SavedBytes | None = None,
    chunk_size: int | None = None,
    seed: int = 0,
):
    """One training step of ``case`` (forward, loss, backward, SGD step) as a closure."""
    p = setup.p
    torch.manual_seed(seed)
    model, shape, features, classifier = setup.build()
    model = model.to(device).train()
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(p.b, *shape, device=device)
    y = torch.randint(p.K, (p.b,), device=device)
    if case == "ERM":
        mixer = None
    elif case.startswith("MultiMix"):
        mixer = MultiMix(
            model,
            classifier=classifier,
            n=p.n,
            m=p.m,
            num_classes=p.K,
            generator=g,
            linear_shortcut=case == "MultiMix",
        )
    elif case == "Dense MultiMix":
        mixer = DenseMultiMix(
            model,
            features=features,
            classifier=classifier,
            n=p.n,
            m=p.m,
            num_classes=p.K,
            generator=g,
            chunk_size=chunk_size,
        )
    else:
        raise ValueError(case)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

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
                logits, targets = model(x), MF.one_hot(y, p.K)
            else:
                logits, targets = mixer(x, y)
            loss = soft_cross_entropy(logits.float(), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if graph:
        from overhead import capture

        return capture(step, [g], device)
    return step


# ---------------------------------------------------------------------------------------------------
# The FLOP model


def encoder_flops(setup: Setup) -> tuple[float, float]:
    """(matmul FLOPs, elementwise operations) of the encoder's forward + backward, up to the embedding
    (the (b, d, r) map), plus the optimiser's update; the same for every case."""
    p = setup.p
    if setup.model == "fixed":
        fwd = 2 * p.b * (p.d_in * p.width + (p.depth - 1) * p.width**2 + p.width * p.d)
        params = (
            p.d_in * p.width + (p.depth - 1) * p.width**2 + p.width * p.d + p.d * p.r + p.d * p.K
        )
        ew = 3 * p.depth * p.b * p.width + 3 * p.b * p.d * p.r + 4 * params
        return 3.0 * fwd, float(ew)
    from torch.utils.flop_counter import FlopCounterMode

    model, shape, _, _ = setup.build()
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, *shape))
    per_image = counter.get_total_flops()
    fc = 2 * p.d * p.K  # the classifier's own FLOPs per image, counted separately below
    params = sum(q.numel() for q in model.parameters())
    return 3.0 * (per_image - fc) * p.b, 4.0 * params


def flops(setup: Setup, case: str) -> dict[str, float]:
    """The FLOP model of one step: matmul and elementwise parts, split by where they come from."""
    p = setup.p
    enc_mm, enc_ew = encoder_flops(setup)
    out = {"encoder": enc_mm + enc_ew}
    mm, ew = enc_mm, enc_ew
    if case in ("ERM", "MultiMix"):
        out["classifier"] = 6.0 * p.b * p.d * p.K  # on the b pooled rows
        mm += out["classifier"]
        ew += 2.0 * p.b * p.d * p.r  # pooling, forward and backward
    if case == "ERM":
        out["mixing"] = 0.0
        out["loss"] = float(LOSS_OPS * p.b * p.K + p.b * p.K)
    elif case == "MultiMix":  # b logits mixed into n
        out["mixing"] = float(MIX_OPS * p.n * p.m * p.K + TARGET_OPS * p.n * p.m * p.K)
        out["loss"] = float(LOSS_OPS * p.n * p.K + p.b * p.K)
    elif case == "MultiMix, no shortcut":  # b embeddings mixed into n, then classified
        ew += 2.0 * p.b * p.d * p.r
        out["classifier"] = 6.0 * p.n * p.d * p.K
        mm += out["classifier"]
        out["mixing"] = float(MIX_OPS * p.n * p.m * p.d + TARGET_OPS * p.n * p.m * p.K)
        out["loss"] = float(LOSS_OPS * p.n * p.K + p.b * p.K)
    elif case == "Dense MultiMix":  # b·r positions classified, their logits mixed into n·r
        out["classifier"] = 6.0 * p.b * p.r * p.d * p.K
        mm += out["classifier"]
        # targets of integer labels: zeros (n·r·K) and a scatter of n·m·r weights
        out["mixing"] = float(MIX_OPS * p.n * p.m * p.r * p.K + p.n * p.r * p.K + p.n * p.m * p.r)
        out["loss"] = float(LOSS_OPS * p.n * p.r * p.K)
    ew += out["mixing"] + out["loss"]
    out["matmul"], out["elementwise"] = mm, ew
    out["total"] = mm + ew
    return out


def machine_rates(
    p: Point, device: torch.device, rounds: int, amp: bool = False
) -> tuple[float, float]:
    """(matmul FLOP/s at the trunk's shape, elementwise operations/s of a 16 M-element pass), here;
    under ``amp`` the matmul in bf16, as autocast runs it (the elementwise pass stays float32)."""
    dtype = torch.bfloat16 if amp else torch.float32
    a = torch.randn(p.b, p.width, device=device, dtype=dtype)
    w = torch.randn(p.width, p.width, device=device, dtype=dtype)
    size = 1 << 24
    u, v = torch.randn(size, device=device), torch.randn(size, device=device)
    out = torch.empty(size, device=device)
    t = interleaved_samples(
        {
            "mm": lambda: torch.mm(a, w),
            "ew": lambda: torch.lerp(u, v, 0.3, out=out),  # 3 operations per element
        },
        device,
        max(3, rounds),
    )
    return (
        2 * p.b * p.width**2 / statistics.median(t["mm"]),
        3 * size / statistics.median(t["ew"]),
    )


def time_model(f: dict[str, float], rates: tuple[float, float]) -> float:
    return f["matmul"] / rates[0] + f["elementwise"] / rates[1]


# ---------------------------------------------------------------------------------------------------
# Measurements


def measure(
    setup: Setup,
    cases: list[str],
    device: torch.device,
    rounds: int,
    amp: bool,
    graph: bool,
    *,
    block: float = 0.05,
    warmup: int = 2,
) -> dict[str, dict[str, float]]:
    steps = {c: make_step(setup, c, device, amp=amp, graph=graph) for c in cases}
    samples = interleaved_samples(steps, device, rounds, min_block_s=block, warmup=warmup)
    ratios = paired_ratios(samples, "ERM")
    out: dict[str, dict[str, float]] = {}
    for c in cases:
        counter = SavedBytes()
        make_step(setup, c, device, amp=amp, saved=counter)()
        mid, q1, q3 = ratios[c]
        out[c] = dict(
            time=statistics.median(samples[c]), ratio=mid, q1=q1, q3=q3, saved=counter.mib
        )
        if device.type == "cuda" and not graph:
            out[c]["peak"] = cuda_peak(setup, c, device, amp)
    del steps
    return out


def cuda_peak(
    setup: Setup, case: str, device: torch.device, amp: bool, chunk_size: int | None = None
) -> float:
    step = make_step(setup, case, device, amp=amp, chunk_size=chunk_size)
    step()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def status_mib(field: str) -> float:
    """A field of /proc/self/status in MiB: VmRSS (now), VmHWM (the peak since the last reset)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_child(spec: dict) -> None:
    """In a fresh process: build the case, then run two steps; print the peak RSS growth (MiB) over the
    RSS before the first step, and the seconds of the second step."""
    setup = Setup(spec["model"], Point(**spec["point"]))
    if not spec["system_malloc"]:
        keep_large_buffers()
    step = make_step(setup, spec["case"], torch.device("cpu"), chunk_size=spec["chunk_size"])
    before = status_mib("VmRSS")
    # Reset the peak RSS (VmHWM) to the RSS now (Linux ≥ 4.0), so that the import's own peak is not it
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    step()
    t0 = time.perf_counter()
    step()
    seconds = time.perf_counter() - t0
    peak = status_mib("VmHWM")
    print(json.dumps(dict(growth=peak - before, before=before, seconds=seconds)))


def peak_rss(
    setup: Setup, case: str, chunk_size: int | None, system_malloc: bool
) -> dict[str, float]:
    spec = dict(
        model=setup.model,
        point=asdict(setup.p),
        case=case,
        chunk_size=chunk_size,
        system_malloc=system_malloc,
    )
    result = subprocess.run(
        [sys.executable, __file__, "--peak-child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def profile_case(setup: Setup, case: str, device: torch.device, amp: bool) -> str:
    from torch.profiler import ProfilerActivity, profile

    step = make_step(setup, case, device, amp=amp)
    for _ in range(2):
        step()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(3):
            step()
        sync(device)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)


# ---------------------------------------------------------------------------------------------------
# Report


def fmt_flops(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.0f}"


def table(
    rows: list[tuple[str, Setup, dict[str, dict[str, float]]]],
    cases: list[str],
    rates: tuple[float, float] | None,
) -> list[str]:
    lines = [
        "| factor | case | step time | measured vs ERM | (quartiles) | FLOP model | rate model | "
        "encoder FLOPs | classifier FLOPs | mixing ops | loss ops | saved for backward (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, setup, res in rows:
        erm_f = flops(setup, "ERM")
        for c in cases:
            if c not in res:
                continue
            f = flops(setup, c)
            m = res[c]
            model_t = f"{time_model(f, rates) / time_model(erm_f, rates):.3f}×" if rates else "—"
            lines.append(
                f"| {label} | {c} | {m['time'] * 1e3:.2f} ms | {m['ratio']:.3f}× | "
                f"{m['q1']:.2f}–{m['q3']:.2f} | {f['total'] / erm_f['total']:.3f}× | {model_t} | "
                f"{fmt_flops(f['encoder'])} | {fmt_flops(f.get('classifier', 0.0))} | "
                f"{fmt_flops(f['mixing'])} | {fmt_flops(f['loss'])} | {m['saved']:.1f}"
                + (f" (peak {m['peak']:.0f})" if "peak" in m else "")
                + " |"
            )
    return lines


def plot(
    results: dict[str, list[tuple[int, Setup, dict[str, dict[str, float]]]]],
    rates: tuple[float, float] | None,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"MultiMix": "C0", "MultiMix, no shortcut": "C2", "Dense MultiMix": "C1"}
    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.6), squeeze=False)
    for ax, (factor, rows) in zip(axes[0], results.items(), strict=True):
        for case, colour in colours.items():
            pts = [(v, s, r[case]) for v, s, r in rows if case in r]
            if not pts:
                continue
            xs = [v for v, _, _ in pts]
            meas = [m["ratio"] for _, _, m in pts]
            err = [
                [m["ratio"] - m["q1"] for _, _, m in pts],
                [m["q3"] - m["ratio"] for _, _, m in pts],
            ]
            ax.errorbar(xs, meas, yerr=err, color=colour, marker="o", label=f"{case} measured")
            fl = [flops(s, case)["total"] / flops(s, "ERM")["total"] for _, s, _ in pts]
            ax.plot(xs, fl, color=colour, ls=":", marker="x", label=f"{case} FLOP model")
            if rates:
                tm = [
                    time_model(flops(s, case), rates) / time_model(flops(s, "ERM"), rates)
                    for _, s, _ in pts
                ]
                ax.plot(xs, tm, color=colour, ls="--", lw=0.8, label=f"{case} rate model")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set_xlabel(factor)
        ax.set_title(f"growing {factor}")
    axes[0][0].set_ylabel("step time / ERM's")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
    os.replace(f.name, path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--cuda-graph", action="store_true", help="CUDA: capture each step in a CUDA graph"
    )
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="tiny shapes and budget (the tests)")
    parser.add_argument(
        "--factors", default=",".join(FACTORS), help="a subset of n,K,d,r (default: all)"
    )
    parser.add_argument("--no-resnet", action="store_true")
    parser.add_argument(
        "--system-malloc",
        action="store_true",
        help="leave glibc's allocator as it is (default: large buffers kept, as `multimix train` does)",
    )
    parser.add_argument(
        "--profile", default=None, help='print a profiler table of e.g. "n=10000:MultiMix"'
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scaling.md"))
    parser.add_argument("--peak-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_child is not None:
        peak_child(json.loads(args.peak_child))
        return
    device = torch.device(args.device)
    tuned = device.type == "cpu" and not args.system_malloc and keep_large_buffers()
    if args.cuda_graph and device.type != "cuda":
        parser.error("--cuda-graph needs --device cuda")
    amp = device.type == "cuda"
    graph = args.cuda_graph
    base = QUICK_BASE if args.quick else Point()
    factors = QUICK_FACTORS if args.quick else FACTORS
    chosen = [f for f in args.factors.split(",") if f]
    if any(f not in FACTORS for f in chosen):
        parser.error(f"--factors: expected a subset of {','.join(FACTORS)}, got {args.factors!r}")
    rounds = 2 if args.quick else args.rounds

    if args.profile:
        spec, case = args.profile.split(":")
        key, value = spec.split("=")
        setup = Setup("fixed", replace(base, **{key: int(value)}))
        print(profile_case(setup, case, device, amp))
        return

    load0 = os.getloadavg()
    started = time.time()
    rates = machine_rates(base, device, rounds, amp)
    results: dict[str, list[tuple[int, Setup, dict[str, dict[str, float]]]]] = {}
    done: dict[Point, dict[str, dict[str, float]]] = {}
    for factor in chosen:
        rows = []
        for value in factors[factor]:
            p = replace(base, **{factor: value})
            setup = Setup("fixed", p)
            if p not in done:
                done[p] = measure(
                    setup,
                    list(CASES),
                    device,
                    rounds,
                    amp,
                    graph,
                    block=0.005 if args.quick else 0.05,
                    warmup=1 if args.quick else 2,
                )
                print(
                    f"{p.label()}: " + ", ".join(f"{c} {done[p][c]['ratio']:.3f}×" for c in CASES),
                    flush=True,
                )
            rows.append((value, setup, done[p]))
        results[factor] = rows

    # PreActResNet-18 on 32×32 images: K = 100, r = 16 at its 4×4 map
    resnet = None
    if not (args.no_resnet or args.quick):  # --quick: no resnet (seconds per step on a CPU)
        rp = replace(base, K=10 if args.quick else 100, d=512, r=16, b=2 if args.quick else 128)
        setup = Setup("preactresnet18", rp)
        resnet_rounds = 1 if args.quick else max(2, rounds // 2)
        # A step of the resnet on a CPU takes seconds: one step per block
        resnet = (
            setup,
            measure(setup, list(CASES), device, resnet_rounds, amp, graph, block=0.0, warmup=1),
        )
        print(
            "preactresnet18: " + ", ".join(f"{c} {resnet[1][c]['ratio']:.3f}×" for c in CASES),
            flush=True,
        )

    # Dense MultiMix at ImageNet's shape: 49 million logits, chunked
    big_point = (
        replace(base, n=100, r=16, K=20) if args.quick else replace(base, n=1000, r=49, K=1000)
    )
    big = Setup("fixed", big_point)
    big_rows = []
    big_cases = (
        [("Dense MultiMix", None)]
        if args.quick
        else [("ERM", None), ("Dense MultiMix", None), ("Dense MultiMix", 100)]
    )
    for case, chunk in big_cases:
        if device.type == "cuda":
            peak = cuda_peak(big, case, device, amp, chunk_size=chunk)
            big_rows.append((case, chunk, dict(growth=peak, before=0.0, seconds=float("nan"))))
        else:
            big_rows.append((case, chunk, peak_rss(big, case, chunk, args.system_malloc)))
    load1 = os.getloadavg()

    # ---- the report
    dev_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine()
    )
    command = "python benchmarks/scaling.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        f"# Cost as the work grows ({device.type}"
        + (", bf16 autocast" if amp else "")
        + (", CUDA graphs" if graph else "")
        + (", --quick" if args.quick else "")
        + ")",
        "",
        f"- command: `{command}`",
        f"- machine: {platform.machine()} ({dev_name}), {os.cpu_count()} CPU(s), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        f"- library: `{Path(multimix.__file__).parent}`"
        + (
            f" (this checkout, at commit {commit()})"
            if Path(multimix.__file__).resolve().is_relative_to(Path(__file__).resolve().parents[1])
            else ""
        ),
        "- CPU allocator: "
        + (
            "glibc's mmap and trim thresholds raised to 1 GiB (`multimix.train.allocator.keep_large_buffers`, as "
            "`multimix train` does on the CPU): freed buffers are reused, not page-faulted in again"
            if tuned
            else "as the system left it (`--system-malloc`, a GPU run, another allocator, or not glibc)"
        ),
        f"- load average (1, 5, 15 min): {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} at the start, "
        f"{load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} at the end; {time.time() - started:.0f} s in all",
        f"- base point: {base.label()}, m = {base.m}; encoder: {base.depth} linear layers of width {base.width} "
        f"on {base.d_in} inputs, a projection to d, a (d, r) positional map (its FLOPs do not depend on n, K "
        "or r beyond the b·d·r map; on d only through the projection)",
        f"- {rounds} rounds, cases interleaved (rotating order); measured vs ERM: median of the per-round "
        "ratios, with their quartiles",
    ]
    if rates:
        lines.append(
            f"- this machine's rates, measured in the same run: matmul {rates[0] / 1e9:.1f} GFLOP/s "
            f"(b×{base.width}×{base.width}), elementwise {rates[1] / 1e9:.2f} G operations/s (lerp of "
            f"16 M floats): one elementwise operation costs {rates[0] / rates[1]:.0f} matmul FLOPs"
        )
    lines += [
        "- FLOP model = (matmul FLOPs + elementwise operations) of the case / those of ERM; rate model = "
        "the same two counts weighted by the machine's two rates",
        "",
    ]
    # Headline: where little extra cost holds, where it cannot
    head = []
    for factor, rows in results.items():
        for value, setup, res in rows:
            for c in ("MultiMix", "Dense MultiMix"):
                head.append((res[c]["ratio"], f"{factor}={value}", c, setup, res[c]))
    head.sort(key=lambda t: t[0])
    lines += [
        "## Headline",
        "",
        "| where | case | measured vs ERM | FLOP model | rate model |",
        "|---|---|---|---|---|",
    ]
    for ratio, where, c, setup, _ in head[:3] + head[-4:]:
        fm = flops(setup, c)["total"] / flops(setup, "ERM")["total"]
        rm = (
            f"{time_model(flops(setup, c), rates) / time_model(flops(setup, 'ERM'), rates):.3f}×"
            if rates
            else "—"
        )
        lines.append(f"| {where} | {c} | {ratio:.3f}× | {fm:.3f}× | {rm} |")
    if resnet is not None:
        setup, res = resnet
        for c in CASES[1:]:
            fm = flops(setup, c)["total"] / flops(setup, "ERM")["total"]
            lines.append(
                f"| PreActResNet-18, K={setup.p.K}, r=16 | {c} | {res[c]['ratio']:.3f}× | {fm:.4f}× | — |"
            )
    lines += [
        "",
        f"![Step time relative to ERM as each factor grows: measured (with quartiles), the FLOP model "
        f"and the rate model]({args.out.with_suffix('.png').name})",
        "",
    ]
    for factor, rows in results.items():
        lines += [f"## Growing {factor}", ""]
        lines += table([(f"{factor}={v}", s, r) for v, s, r in rows], list(CASES), rates)
        lines.append("")
    if resnet is not None:
        setup, res = resnet
        lines += [
            f"## PreActResNet-18, 32×32 images, b = {setup.p.b}, K = {setup.p.K}, r = 16 (the 4×4 map), "
            f"n = {setup.p.n} ({resnet_rounds} rounds, one step per block)",
            "",
        ]
        lines += table([("resnet", setup, res)], list(CASES), None)
        lines.append("")
    bp = big.p
    lines += [
        f"## Dense MultiMix at ImageNet's shape: n = {bp.n}, r = {bp.r}, K = {bp.K} "
        f"({bp.n * bp.r * bp.K / 1e6:.0f} million logits), b = {bp.b}, d = {bp.d}",
        "",
        (
            "Peak memory of one step, "
            + (
                "`torch.cuda.max_memory_allocated` (MiB)"
                if device.type == "cuda"
                else "a fresh process per row: growth of the resident set (VmHWM, its peak reset before the step) over the RSS "
                "before the first step, the peak over two steps (the first allocates gradients and "
                "momentum)"
            )
            + "; chunk_size: the mixer's (None: automatic, DENSE_CHUNK_ELEMENTS)."
        ),
        "",
        "| case | chunk_size | peak (MiB) | second step (s) |",
        "|---|---|---|---|",
    ]
    for case, chunk, res in big_rows:
        lines.append(
            f"| {case} | {chunk if chunk else 'auto'} | {res['growth']:.0f} | "
            + ("—" if res["seconds"] != res["seconds"] else f"{res['seconds']:.2f}")
            + " |"
        )
    lines.append("")
    text = "\n".join(lines) + "\n"
    print(text)
    write(args.out, text)
    plot(results, rates, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
