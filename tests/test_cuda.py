"""The GPU path: placement, mixed precision, torch.compile, determinism of the draws, no host syncs.

Marked ``cuda`` and skipped where there is no CUDA device (``pytest -m cuda`` runs only these).
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from conftest import read_metrics
from multimix import CutMix, DenseMultiMix, ManifoldMixup, Mixup, MultiMix, soft_cross_entropy
from multimix.functional import sample_multimix_tuples
from multimix.models import build_model
from multimix.train.config import TrainConfig
from multimix.train.trainer import train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DEV = torch.device("cuda")
K = 10


def _mixer(method: str, model: nn.Module, gen: torch.Generator):
    common = dict(num_classes=K, generator=gen)
    if method == "mixup":
        return Mixup(model, **common)
    if method == "manifold":
        return ManifoldMixup(model, layers=model.manifold_layers, **common)
    if method == "cutmix":
        return CutMix(model, **common)
    if method == "multimix":
        return MultiMix(model, classifier=model.classifier_layer, n=1000, **common)
    if method == "dense-multimix":
        return DenseMultiMix(
            model,
            features=model.feature_layer,
            classifier=model.classifier_layer,
            layout=model.feature_layout,
            n=1000,
            **common,
        )
    raise AssertionError(method)


METHODS = ["mixup", "manifold", "cutmix", "multimix", "dense-multimix"]


def _setup(method: str, seed: int = 0, channels_last: bool = False):
    torch.manual_seed(seed)
    model = build_model("preactresnet8", input_shape=(3, 32, 32), num_classes=K).to(DEV)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    gen = torch.Generator(device=DEV).manual_seed(seed)
    x = torch.randn(64, 3, 32, 32, device=DEV)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(K, (64,), device=DEV)
    return model, _mixer(method, model, gen), x, y


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
def test_mixers_under_autocast_keep_float32_targets_and_mix(method, amp):
    model, mixer, x, y = _setup(method)
    with torch.autocast("cuda", dtype=amp):
        logits, targets = mixer(x, y)
    assert logits.device.type == targets.device.type == "cuda"
    assert targets.dtype == torch.float32 and logits.dtype == amp
    # Dense: 8×8 positions each
    rows = {"multimix": 1000, "dense-multimix": 1000 * 64}.get(method, 64)
    assert logits.shape[0] == targets.shape[0] == rows
    assert torch.allclose(targets.sum(1), torch.ones(rows, device=DEV), atol=1e-5)
    soft_cross_entropy(logits.float(), targets).backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for p in model.parameters()
        if p.requires_grad and method != "dense-multimix"
    )


@pytest.mark.parametrize("method", METHODS)
def test_mixers_work_with_channels_last(method):
    _, mixer, x, y = _setup(method, channels_last=True)
    _, eager_mixer, x2, y2 = _setup(method)
    logits, targets = mixer(x, y)
    logits2, targets2 = eager_mixer(x2, y2)
    assert torch.equal(targets, targets2)  # same draws whatever the memory layout
    # TF32 convolutions: ~1e-3 relative
    assert torch.allclose(logits, logits2, atol=5e-3, rtol=5e-3)


@pytest.mark.parametrize("method", ["mixup", "multimix", "dense-multimix"])
def test_compiled_model_mixes_as_the_eager_one(method):
    torch._dynamo.reset()
    _model, mixer, x, y = _setup(method)
    logits, targets = mixer(x, y)
    compiled_model, _, _, _ = _setup(method)
    compiled = torch.compile(compiled_model)
    gen = torch.Generator(device=DEV).manual_seed(0)
    compiled_mixer = _mixer(method, compiled_model, gen)
    compiled_mixer.model = (
        compiled  # the mixer calls the compiled module; hooks sit on the shared layers
    )
    for _ in range(2):  # the second call runs the compiled graph
        gen.manual_seed(0)
        logits_c, targets_c = compiled_mixer(x, y)
    assert torch.equal(targets, targets_c)
    assert logits_c.shape == logits.shape
    # TF32 and fused kernels: ~1e-3 relative
    assert torch.allclose(logits, logits_c, atol=5e-3, rtol=5e-3)


def test_mixing_draws_are_deterministic_on_cuda():
    a = sample_multimix_tuples(
        128,
        n=1000,
        m=3,
        alpha=0.5,
        generator=torch.Generator(device=DEV).manual_seed(7),
        device=DEV,
    )
    b = sample_multimix_tuples(
        128,
        n=1000,
        m=3,
        alpha=0.5,
        generator=torch.Generator(device=DEV).manual_seed(7),
        device=DEV,
    )
    assert a.indices.device.type == "cuda"
    assert torch.equal(a.indices, b.indices) and torch.equal(a.weights, b.weights)
    assert all(len(set(row)) == 3 for row in a.indices.tolist())


def _config(**kw) -> TrainConfig:
    base = dict(dataset="digits", model="preactresnet8", epochs=1, device="cuda", lr=0.01)
    return TrainConfig.from_dict({**base, **kw})


def _sync_warnings(config: TrainConfig, out) -> list[warnings.WarningMessage]:
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(config, out, progress=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return [w for w in caught if "synchroniz" in str(w.message)]


@pytest.mark.parametrize(
    "method", ["erm", "mixup", "manifold", "cutmix", "multimix", "dense-multimix"]
)
def test_no_host_synchronisation_per_step(tmp_path, method):
    """Twice the steps, the same number of synchronisations: none of them is in the step loop."""
    few = _sync_warnings(_config(method=method, batch_size=128), tmp_path / "few")
    many = _sync_warnings(_config(method=method, batch_size=32), tmp_path / "many")
    where = sorted({f"{w.filename}:{w.lineno}" for w in many})
    assert len(many) == len(few), f"synchronisations that grow with the number of steps: {where}"


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_training_with_amp_channels_last_and_compile(tmp_path, amp):
    torch._dynamo.reset()
    summary = train(
        _config(method="multimix", amp=amp, channels_last=True, compile=True, epochs=2),
        tmp_path / "run",
        progress=False,
    )
    assert summary["best"]["val_acc"] > 0.3  # it learned (chance: 0.1)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    # Loadable with map_location too
    assert all(t.device.type == "cuda" for t in state["model"].values())
    # The fp16 gradient scaler's state is resumable
    assert ("scale" in state["scaler"]) == (amp == "fp16")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["processes"] == 1


def test_a_cuda_checkpoint_holds_every_generator(tmp_path):
    """Augmentation draws on the GPU and host draws (manifold's layer) are resumable state too."""
    train(_config(method="manifold", epochs=1, batch_size=64), tmp_path / "run", progress=False)
    rng = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["rng"]
    assert {"data", "mix", "augment", "mix_host_ranks"} <= set(rng)
    assert rng["augment"].dtype == torch.uint8 and len(rng["mix_host_ranks"]) == 1


# Every host-side choice the graphs are keyed on: none (erm, mixup, multimix, dense), manifold's layer,
# CutMix or mixup, MultiMix's p, ConfMix's ERM warm-up, an α schedule (a new graph each epoch), a teacher.
GRAPHED = {
    "erm": {},
    "mixup": {},
    "multimix": {},
    "dense-multimix": {},
    "manifold": {},
    "mixup-cutmix": {},
    "multimix p=0.5": dict(method="multimix", p=0.5),
    "confmix": dict(method="confmix", confmix_warmup=1),
    "mixup α schedule": dict(
        method="mixup", alpha_schedule="linear", alpha_start=0.0, alpha_end=1.0
    ),
    "multimix teacher adam": dict(
        method="multimix", teacher_momentum=0.99, optimizer="adam", lr=0.003
    ),
}


@pytest.mark.parametrize("case", list(GRAPHED))
def test_cuda_graph_training_is_the_eager_run(tmp_path, case):
    """Replaying CUDA graphs trains as the eager loop does: the same draws (every generator ends in the
    same state: graph-registered GPU generators, host choices drawn ahead), the same learning-rate
    schedule, and the same losses up to rounding. (Weights are not compared bitwise: kernels inside a
    graph may round differently — cuBLAS picks other workspaces under capture — and the scatter-adds
    of MultiMix's backward are not deterministic even between two eager runs.)"""
    kw = {"method": case, **GRAPHED[case]}
    config = dict(epochs=3, batch_size=64, scheduler="cosine", amp="bf16", **kw)
    eager = train(_config(**config), tmp_path / "eager", progress=False)
    graphed = train(_config(**config, cuda_graph=True), tmp_path / "graphed", progress=False)
    a = torch.load(tmp_path / "eager" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "graphed" / "checkpoint.pt", weights_only=True)
    for key in ("mix_ranks", "mix_host_ranks", "augment"):
        assert len(a["rng"].get(key, [])) == len(b["rng"].get(key, []))
        assert all(
            torch.equal(x, y)
            for x, y in zip(a["rng"].get(key, []), b["rng"].get(key, []), strict=True)
        ), key
    assert torch.equal(a["rng"]["data"], b["rng"]["data"])
    assert [r["lr"] for r in a["history"]] == pytest.approx(
        [r["lr"] for r in b["history"]], rel=1e-6
    )
    assert b["history"][0]["train_loss"] == pytest.approx(a["history"][0]["train_loss"], rel=0.01)
    assert graphed["best"]["val_acc"] == pytest.approx(eager["best"]["val_acc"], abs=0.04)


def test_graphed_steps_draw_exactly_what_eager_steps_draw():
    """The generators registered with the graph advance at every replay as they would in eager steps."""
    from multimix.train.graphs import GraphedStep

    def drawn(graph: bool) -> list[torch.Tensor]:
        gen = torch.Generator(device=DEV).manual_seed(11)
        out = torch.zeros(500, 3, device=DEV)

        def step(batch):
            tuples = sample_multimix_tuples(64, n=500, m=3, alpha=0.7, generator=gen, device=DEV)
            out.copy_(tuples.weights + batch.float().mean())  # the batch buffer is read too
            return out.sum()

        run = GraphedStep(step, generators=[gen], device=DEV, warmup=2) if graph else None
        seen = []
        for i in range(6):
            batch = torch.full((8,), float(i), device=DEV)
            run(batch, "key") if graph else step(batch)
            seen.append(out.clone())
        return seen

    eager, graphed = drawn(False), drawn(True)
    assert all(torch.equal(e, g) for e, g in zip(eager, graphed, strict=True))
    assert not torch.equal(graphed[-1], graphed[-2])  # every replay draws afresh


def test_a_cuda_graph_run_resumes_without_graphs(tmp_path):
    """Its learning rates are tensors in the checkpoint; an eager resume holds them as floats again."""
    from multimix.train import checkpoint

    run = tmp_path / "run"
    train(_config(method="multimix", epochs=2, cuda_graph=True), run, progress=False)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["history"] = state["history"][:1]  # as if killed after epoch 1
    checkpoint.save(run / "checkpoint.pt", state)
    summary = train(_config(method="multimix", epochs=2), run, resume=True, progress=False)
    assert summary["final"]["epoch"] == 2
    assert isinstance(read_metrics(run)[-1]["lr"], float)
