"""The nn.Module mixers on sequential and residual models."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from conftest import MLPNet, ResidualNet
from multimix import ManifoldMixup, Mixup, MultiMix, soft_cross_entropy
from multimix.functional import one_hot

K = 4


def make_mixer(kind: str, model, **kw):
    """One configuration per mixer, naming layers that exist in both test models."""
    model_cls = type(getattr(model, "_orig_mod", model))  # torch.compile wraps the model
    if kind == "mixup":
        return Mixup(model, alpha=1.0, num_classes=K, **kw)
    if kind == "manifold":
        layers = (
            ["input", "encoder.layer1", "encoder.act"]
            if model_cls is MLPNet
            else ["input", "stem", "block"]
        )
        return ManifoldMixup(model, layers=layers, alpha=2.0, num_classes=K, **kw)
    if kind == "multimix":
        return MultiMix(
            model, classifier="fc" if model_cls is MLPNet else "head", n=50, num_classes=K, **kw
        )
    raise AssertionError(kind)


KINDS = ["mixup", "manifold", "multimix"]
MODELS = [MLPNet, ResidualNet]


def batch(b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 6, generator=g), torch.randint(K, (b,), generator=g)


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("model_cls", MODELS)
@pytest.mark.parametrize("kind", KINDS)
def test_training_output_and_gradients_reach_encoder(kind, model_cls):
    torch.manual_seed(0)
    model = model_cls()
    mixer = make_mixer(kind, model, generator=torch.Generator().manual_seed(0))
    x, y = batch(9)
    for _ in range(3):  # several steps so ManifoldMixup draws more than one layer
        model.zero_grad()
        logits, targets = mixer(x, y)
        rows = 50 if kind == "multimix" else 9
        assert logits.shape == (rows, K) and targets.shape == (rows, K)
        assert torch.allclose(targets.sum(1), torch.ones(rows), atol=1e-5)
        soft_cross_entropy(logits, targets).backward()
        first = next(model.parameters())  # the first layer of the encoder
        assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize("model_cls", MODELS)
@pytest.mark.parametrize("kind", KINDS)
def test_eval_mode_is_a_plain_forward(kind, model_cls):
    torch.manual_seed(0)
    model = model_cls()
    mixer = make_mixer(kind, model).eval()
    x, y = batch(5)
    logits, targets = mixer(x, y)
    assert torch.equal(logits, model(x))
    assert torch.equal(targets, one_hot(y, K))
    logits_only, none = mixer(x)
    assert none is None and torch.equal(logits_only, logits)


@pytest.mark.parametrize("kind", KINDS)
def test_hooks_never_leak_into_plain_calls_and_are_removed(kind, mlp):
    x, _ = batch(7)
    before = hook_count(mlp)
    expected = mlp(x)
    mixer = make_mixer(kind, mlp)
    mlp.train()
    assert torch.equal(mlp(x), expected)  # model in training mode, mixer alive: still untouched
    mixer(x, batch(7)[1])
    assert torch.equal(mlp(x), expected)
    with mixer:
        pass
    assert hook_count(mlp) == before
    mixer.close()  # idempotent
    if kind != "mixup":  # input mixup needs no hook, so it keeps working
        with pytest.raises(RuntimeError, match="closed"):
            mixer(x, batch(7)[1])


@pytest.mark.parametrize("kind", KINDS)
@given(b=st.sampled_from([1, 2, 3, 7, 13]))
def test_odd_and_single_example_batches(kind, b):
    torch.manual_seed(0)
    model = MLPNet()
    mixer = make_mixer(kind, model, generator=torch.Generator().manual_seed(b))
    x, y = batch(b)
    logits, targets = mixer(x, y)
    assert logits.shape[0] == targets.shape[0]
    assert torch.isfinite(logits).all()
    if b == 1:  # nothing to mix with: every mixed row is the example itself
        assert torch.allclose(targets, one_hot(y, K).expand_as(targets))
        assert torch.allclose(logits, model(x).expand_as(logits), atol=1e-5)
    mixer.close()


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_mixers_are_deterministic(kind):
    def run():
        torch.manual_seed(0)
        model = MLPNet()
        mixer = make_mixer(kind, model, generator=torch.Generator().manual_seed(123))
        x, y = batch(8)
        return [mixer(x, y) for _ in range(3)]

    for (l1, t1), (l2, t2) in zip(run(), run(), strict=True):
        assert torch.equal(l1, l2) and torch.equal(t1, t2)


def test_manifold_mixup_mixes_the_named_hidden_state(mlp):
    # Distinct one-hot labels 0..3 make the mixed targets the mixing matrix M itself (row i holds
    # λ_i at i and 1 - λ_i at π(i)), so the logits must be fc(M h) with h the clean hidden state.
    x, y = torch.randn(4, 6), torch.arange(4)
    mixer = ManifoldMixup(
        mlp,
        layers=["encoder.layer2"],
        alpha=1.0,
        per_sample=True,
        num_classes=K,
        generator=torch.Generator().manual_seed(3),
    )
    logits, targets = mixer(x, y)
    assert torch.allclose(logits, mlp.fc(targets @ mlp.encoder(x)), atol=1e-5)
    assert not torch.allclose(targets, torch.eye(4))  # something was actually mixed


def test_multimix_mixes_the_classifier_input(mlp):
    # Distinct one-hot labels make the mixed targets equal Λ itself: logits must be fc(Λ Z).
    x = torch.randn(4, 6)
    y = torch.arange(4)
    mixer = MultiMix(
        mlp, classifier="fc", n=40, m=2, num_classes=4, generator=torch.Generator().manual_seed(0)
    )
    logits, weights = mixer(x, y)
    assert torch.allclose(logits, mlp.fc(weights @ mlp.encoder(x)), atol=1e-5)
    assert ((weights > 0).sum(1) == 2).all()


def test_multimix_keep_clean_and_p(mlp):
    x, y = batch(5)
    mixer = MultiMix(mlp, classifier="fc", n=20, keep_clean=True, num_classes=K)
    logits, targets = mixer(x, y)
    assert logits.shape == (25, K)
    assert torch.allclose(logits[:5], mlp(x), atol=1e-6)
    assert torch.equal(targets[:5], one_hot(y, K))
    mixer.close()
    never = MultiMix(mlp, classifier="fc", n=20, p=0.0, num_classes=K)
    logits, targets = never(x, y)
    assert logits.shape == (5, K) and torch.equal(targets, one_hot(y, K))
    never.close()
    always = MultiMix(mlp, classifier="fc", n=20, p=1.0, num_classes=K)
    assert always(x, y)[0].shape == (20, K)


def test_multimix_short_batch_uses_whole_batch_tuples(mlp):
    x, y = batch(2)
    mixer = MultiMix(mlp, classifier="fc", n=30, m=3, num_classes=K)  # m > b on a last, short batch
    logits, _targets = mixer(x, y)
    assert logits.shape == (30, K)


@pytest.mark.parametrize("cls", ["MultiMix", "DenseMultiMix"])
def test_multimix_alpha_is_one_for_pairs_and_one_over_m_beyond(cls):
    """beyond_pairs.md: α = 1 collapses long tuples, α = 1/m trains them; the default follows it."""
    from multimix import DenseMultiMix
    from multimix.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn1d", input_shape=(40,), num_classes=4)
    x, y = torch.randn(8, 40), torch.arange(8) % 4

    def make(**kw):
        g = torch.Generator().manual_seed(3)
        if cls == "MultiMix":
            return MultiMix(model, classifier="fc", n=40, num_classes=4, generator=g, **kw)
        return DenseMultiMix(
            model, features="features", classifier="fc", n=40, num_classes=4, generator=g, **kw
        )

    for m, expected in [(2, 1.0), (4, 0.25), (None, 1 / 8), (12, 1 / 8)]:  # m > b: the whole batch
        auto, fixed = make(m=m), make(m=m, alpha=expected)
        assert auto._alpha_for(8) == expected
        assert torch.equal(auto(x, y)[1], fixed(x, y)[1])  # the same draws
        auto.close(), fixed.close()
    explicit = make(m=4, alpha=1.0)
    assert explicit._alpha_for(8) == 1.0 and "alpha=1.0" in repr(explicit)
    explicit.close()


@pytest.mark.parametrize("cls", ["MultiMix", "DenseMultiMix"])
@pytest.mark.parametrize("m", [2, 3])
def test_integer_labels_mix_as_their_one_hot_rows(cls, m):
    """Integer labels and their one-hot rows as soft targets train alike (Dense MultiMix mixes the
    targets of integer labels on the CPU by a scatter of the weights, no one-hot rows gathered)."""
    from multimix import DenseMultiMix
    from multimix.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn1d", input_shape=(40,), num_classes=5)
    x, y = torch.randn(9, 40), torch.tensor([0, 1, 1, 4, 2, 2, 2, 3, 0])

    def make():
        g = torch.Generator().manual_seed(3)
        if cls == "MultiMix":
            return MultiMix(model, classifier="fc", n=50, m=m, num_classes=5, generator=g)
        return DenseMultiMix(
            model, features="features", classifier="fc", n=50, m=m, num_classes=5, generator=g
        )

    with make() as by_label, make() as by_row:
        logits, targets = by_label(x, y)
        # Soft targets: the one-hot rows are mixed
        soft_logits, soft_targets = by_row(x, one_hot(y, 5))
    assert torch.equal(logits, soft_logits)
    assert torch.allclose(targets, soft_targets, atol=1e-6)
    assert torch.allclose(targets.sum(1), torch.ones(len(targets)), atol=1e-6)
    # The same gradients (Dense MultiMix: its CPU one-pass path for labels against the general path).
    grads = torch.autograd.grad(soft_cross_entropy(logits, targets), list(model.parameters()))
    soft_grads = torch.autograd.grad(
        soft_cross_entropy(soft_logits, soft_targets), list(model.parameters())
    )
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, soft_grads, strict=True))
    if cls == "DenseMultiMix":
        with make() as mixer:
            assert mixer._one_pass(torch.zeros(9, 64, 10), y, None, 5)
            # Soft targets: the general path
            assert not mixer._one_pass(torch.zeros(9, 64, 10), None, None, 5)


def test_soft_targets_accepted(mlp):
    x, _ = batch(6)
    soft = torch.softmax(torch.randn(6, K), 1)
    _logits, targets = MultiMix(mlp, classifier="fc", n=10)(x, soft)
    assert targets.shape == (10, K)


def test_unused_layer_is_reported(mlp):
    mlp.unused = torch.nn.Linear(3, 3)
    mixer = ManifoldMixup(mlp, layers=["unused"], num_classes=K)
    with pytest.raises(RuntimeError, match="'unused' was not called"):
        mixer(*batch(4))


def test_wrapped_model_names_resolve():
    model = torch.nn.DataParallel(MLPNet())  # a `module.` prefix, as DistributedDataParallel adds
    mixer = MultiMix(model, classifier="fc", n=10, num_classes=K)
    assert mixer(*batch(4))[0].shape == (10, K)


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_model_names_resolve_and_mix_as_the_plain_model(kind):
    # torch.compile puts the model under `_orig_mod.`; the eager backend keeps the test fast and
    # still goes through dynamo, hooks included.
    torch._dynamo.reset()  # graphs cached by other tests were traced without these hooks
    torch.manual_seed(0)
    plain = MLPNet()
    compiled = torch.compile(plain, backend="eager")
    assert "_orig_mod.fc" in dict(compiled.named_modules())
    x, y = batch(6)
    expected = make_mixer(kind, plain, generator=torch.Generator().manual_seed(3))(x, y)
    with make_mixer(kind, compiled, generator=torch.Generator().manual_seed(3)) as mixer:
        got = mixer(x, y)
    assert torch.allclose(got[0], expected[0], atol=1e-6) and torch.equal(got[1], expected[1])
    with pytest.raises(
        ValueError, match=r"classifier='head' is not a submodule.*valid names: 'encoder'"
    ):
        MultiMix(compiled, classifier="head")


def test_compiled_model_traced_before_the_mixer_fails_loudly():
    torch._dynamo.reset()
    compiled = torch.compile(MLPNet(), backend="eager")
    compiled(batch(4)[0])  # a graph without the mixer's hooks is now cached
    with pytest.raises(
        RuntimeError, match="create the mixer before the compiled model's first call"
    ):
        MultiMix(compiled, classifier="fc", n=10, num_classes=K)(*batch(4))
    torch._dynamo.reset()


@pytest.mark.parametrize("kind", [*KINDS, "dense"])
def test_targets_are_float32_under_bf16_autocast(kind):
    # Mixed targets are weights times labels: they must not inherit the autocast dtype of the logits.
    from multimix import DenseMultiMix
    from multimix.models import CNN1d

    torch.manual_seed(0)
    if kind == "dense":
        model, x = CNN1d((12,), K), torch.randn(5, 12)

        def make(g):
            return DenseMultiMix(
                model, features="features", classifier="fc", n=20, num_classes=K, generator=g
            )
    else:
        model, x = MLPNet(), batch(5)[0]

        def make(g):
            return make_mixer(kind, model, generator=g)

    y = torch.tensor([0, 1, 2, 3, 1])
    exact = make(torch.Generator().manual_seed(1))(x, y)[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _logits, targets = make(torch.Generator().manual_seed(1))(x, y)
    assert targets.dtype == torch.float32
    assert torch.allclose(targets.sum(1), torch.ones(len(targets)), atol=1e-6)
    assert torch.allclose(targets, exact, atol=1e-6)  # the same weights, in full precision


def test_training_reduces_loss_with_multimix():
    # A short real optimisation: MultiMix's defaults must let a separable problem be learnt.
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(K, 6, generator=g) * 3
    y = torch.randint(K, (256,), generator=g)
    x = centers[y] + torch.randn(256, 6, generator=g)
    model = MLPNet()
    mixer = MultiMix(model, classifier="fc", num_classes=K, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        idx = torch.randint(256, (32,), generator=g)
        loss = soft_cross_entropy(*mixer(x[idx], y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9


def test_the_own_model_example_runs_and_learns():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "own_model.py"
    spec = importlib.util.spec_from_file_location("own_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--epochs", "3"]) > 0.8


@pytest.mark.parametrize("kind", ["manifold", "mixup-cutmix", "multimix p"])
def test_host_choices_drawn_ahead_are_the_ones_forward_would_draw(kind, mlp):
    """decide() (for CUDA graphs: one graph per choice) draws what the next forward would have drawn,
    and that forward uses it: the same run with and without drawing ahead."""
    from multimix import MixupOrCutMix

    # CutMix pastes image boxes
    model = nn.Sequential(nn.Flatten(), mlp) if kind == "mixup-cutmix" else mlp

    def make():
        gen = torch.Generator().manual_seed(5)
        if kind == "manifold":
            return ManifoldMixup(
                model,
                layers=["input", "encoder.layer1", "encoder.layer2"],
                num_classes=4,
                generator=gen,
            )
        if kind == "mixup-cutmix":
            return MixupOrCutMix(model, num_classes=4, generator=gen)
        return MultiMix(model, classifier="fc", p=0.5, n=8, num_classes=4, generator=gen)

    x = torch.randn(6, 1, 2, 3) if kind == "mixup-cutmix" else torch.randn(6, 6)
    y = torch.randint(4, (6,))
    plain, ahead = make(), make()
    chosen, used = [], []
    if kind != "multimix p":  # record the choice each forward acts on
        choice = ahead._choice
        ahead._choice = lambda: used.append(choice()) or used[-1]
    for _ in range(12):
        _, t1 = plain(x, y)
        chosen.append(ahead.decide())
        _, t2 = ahead(x, y)
        assert torch.equal(t1, t2)
        if kind == "multimix p":
            used.append("clean" if t2.shape[0] == 6 else "mix")
    assert chosen == used and len(set(chosen)) > 1
    plain.close(), ahead.close()
    # p = 1: no choice to make
    assert MultiMix(mlp, classifier="fc", num_classes=4).decide() is None
