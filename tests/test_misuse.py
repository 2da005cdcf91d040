"""Runs that fail loudly: mixers and attacks on unusual models, and under the caller's grad mode.

- A hooked layer called more than once in one forward: refused on the clean rows (two views through
  one head), kept where the later calls run on the mixed rows (a block applied in sequence).
- A classifier whose number of outputs is not ``num_classes``.
- FGSM and PGD called under ``torch.no_grad()`` or ``torch.inference_mode()``.
- ConfMix on a model whose outputs are not finite.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import gen
from multimix import (
    ConfMix,
    CutMix,
    DenseMultiMix,
    ManifoldMixup,
    Mixup,
    MixupOrCutMix,
    MultiMix,
    soft_cross_entropy,
)
from multimix.evaluate.robustness import fgsm, pgd, robust_accuracy
from multimix.functional import interpolate_tuples, sample_mixup, sample_multimix_tuples

K, D = 3, 8


class TwoViews(nn.Module):
    """Two views of one embedding through one head: ``fc(h) + fc(g(h))`` (``fc`` called twice)."""

    def __init__(self, frozen_body: bool = False, same_input: bool = False) -> None:
        super().__init__()
        self.body = nn.Linear(6, D)
        self.fc = nn.Linear(D, K)
        self.same_input = same_input
        self.two_views = True
        if frozen_body:
            self.body.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        if not self.two_views:
            return self.fc(h)
        return self.fc(h) + self.fc(h if self.same_input else torch.tanh(h))


class Sequential(nn.Module):
    """One block applied ``times`` times in sequence (weights shared along the depth), then a head."""

    def __init__(self, times: int = 2, residual: bool = False) -> None:
        super().__init__()
        self.body = nn.Linear(6, D)
        self.block = nn.Linear(D, D)
        self.fc = nn.Linear(D, K)
        self.times, self.residual = times, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        for _ in range(self.times):
            out = torch.relu(self.block(h))
            h = h + out if self.residual else out
        return self.fc(h)


class SharedEncoder(nn.Module):
    """A weight-shared encoder applied to two halves of the input, and a head called once."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(3, D)
        self.head = nn.Linear(2 * D, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.encoder(x[:, :3]), self.encoder(x[:, 3:])], dim=1))


def batch(b: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 6, generator=g), torch.randint(K, (b,), generator=g)


#: Mixers that hook ``layer`` of a model; n=6 is the batch size below (rows out = rows in).
PAIRWISE_AND_MULTIMIX = {
    "manifold": lambda model, layer: ManifoldMixup(model, layers=[layer], num_classes=K),
    "multimix n=b": lambda model, layer: MultiMix(model, classifier=layer, n=6, num_classes=K),
    "multimix n>b": lambda model, layer: MultiMix(model, classifier=layer, n=10, num_classes=K),
    "multimix n=b no shortcut": lambda model, layer: MultiMix(
        model, classifier=layer, n=6, linear_shortcut=False, num_classes=K
    ),
    "multimix n>b no shortcut": lambda model, layer: MultiMix(
        model, classifier=layer, n=10, linear_shortcut=False, num_classes=K
    ),
    "multimix keep_clean": lambda model, layer: MultiMix(
        model, classifier=layer, n=6, keep_clean=True, num_classes=K
    ),
}
MIXERS = list(PAIRWISE_AND_MULTIMIX)


# -- a hooked layer called more than once in one forward --------------------------------------


@pytest.mark.parametrize("frozen_body", [False, True])
@pytest.mark.parametrize("same_input", [False, True])
@pytest.mark.parametrize("kind", MIXERS)
def test_a_layer_called_twice_on_the_clean_rows_is_refused(kind, same_input, frozen_body):
    model = TwoViews(frozen_body=frozen_body, same_input=same_input)
    mixer = PAIRWISE_AND_MULTIMIX[kind](model, "fc")
    with pytest.raises(RuntimeError, match=r"'fc' was called 2 times in one forward of TwoViews"):
        mixer(*batch())


def test_the_refusal_says_what_to_do():
    mixer = MultiMix(TwoViews(), classifier="fc", n=10, num_classes=K)
    with pytest.raises(RuntimeError) as info:
        mixer(*batch())
    message = str(info.value)
    assert "MultiMix mixed its first call" in message
    assert "called once per forward" in message and "hook a layer" in message


@pytest.mark.parametrize("kind", MIXERS)
def test_the_count_restarts_with_every_forward(kind):
    # A refused forward (and any forward that raises) leaves nothing behind: the next forward of a
    # model that calls the layer once mixes, and so does the one after it.
    model = TwoViews()
    mixer = PAIRWISE_AND_MULTIMIX[kind](model, "fc")
    with pytest.raises(RuntimeError, match="called 2 times"):
        mixer(*batch())
    model.two_views = False
    for seed in range(3):
        logits, targets = mixer(*batch(seed=seed))
        assert logits.shape == targets.shape
        soft_cross_entropy(logits, targets).backward()
    model.two_views = True
    with pytest.raises(RuntimeError, match="called 2 times"):  # not 3: the count restarted
        mixer(*batch())


@pytest.mark.parametrize("kind", MIXERS)
def test_a_forward_that_raises_after_mixing_leaves_no_count(kind):
    model = Sequential(times=1)
    mixer = PAIRWISE_AND_MULTIMIX[kind](model, "block")
    fail = model.fc.register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(KeyError("boom")))
    with pytest.raises(KeyError, match="boom"):
        mixer(*batch())
    fail.remove()
    assert mixer._mixed_call is None and mixer._armed is None
    logits, targets = mixer(*batch())
    assert logits.shape == targets.shape


@pytest.mark.parametrize("kind", MIXERS)
def test_forwards_that_do_not_mix_are_unaffected(kind):
    # Eval mode, α = 0 (a schedule's start) and MultiMix's clean batches (p = 0) run the model as
    # it is, two views and all; so does the model after the mixer is closed.
    model = TwoViews()
    x, y = batch()
    mixer = PAIRWISE_AND_MULTIMIX[kind](model, "fc")
    mixer.eval()
    assert torch.equal(mixer(x, y)[0], model(x))
    mixer.train()
    mixer.set_alpha(0)
    assert torch.equal(mixer(x, y)[0], model(x))
    mixer.close()
    assert torch.equal(model(x), model(x))
    clean = MultiMix(model, classifier="fc", n=10, p=0.0, num_classes=K)
    assert torch.equal(clean(x, y)[0], model(x))


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("times", [2, 3])
@pytest.mark.parametrize("kind", MIXERS)
def test_a_block_applied_in_sequence_still_mixes(kind, times, residual):
    # The later calls run on what the mixed call produced: everything after it sees the mixed rows.
    model = Sequential(times=times, residual=residual)
    mixer = PAIRWISE_AND_MULTIMIX[kind](model, "block")
    x, y = batch()
    if residual and kind.startswith("multimix") and "n=b" not in kind:
        # MultiMix at a residual branch cannot add n mixed rows to b clean ones (as before)
        with pytest.raises(RuntimeError, match="size of tensor"):
            mixer(x, y)
        return
    logits, targets = mixer(x, y)
    assert logits.shape == targets.shape
    soft_cross_entropy(logits, targets).backward()
    assert model.body.weight.grad is not None


def test_a_block_applied_in_sequence_is_mixed_at_its_first_call():
    # The values are today's: manifold mixup at the first call's output, MultiMix at its input.
    torch.manual_seed(0)
    model = Sequential(times=2)
    x, y = batch()
    logits, _ = ManifoldMixup(model, layers=["block"], alpha=1.0, num_classes=K, generator=gen(4))(
        x, y
    )
    g = gen(4)
    torch.rand((), generator=g)  # the layer's draw
    lam, perm = sample_mixup(6, alpha=1.0, generator=g)
    h = model.block(model.body(x))
    mixed = lam[:, None] * h + (1 - lam[:, None]) * h[perm]
    expected = model.fc(torch.relu(model.block(torch.relu(mixed))))
    assert torch.allclose(logits, expected, atol=1e-6)
    for shortcut in (False, True):
        mixer = MultiMix(
            model,
            classifier="block",
            n=10,
            linear_shortcut=shortcut,
            num_classes=K,
            generator=gen(5),
        )
        logits, _ = mixer(x, y)
        mixer.close()
        tuples = sample_multimix_tuples(6, n=10, m=2, alpha=1.0, generator=gen(5))
        first = model.block(interpolate_tuples(tuples, model.body(x)))
        expected = model.fc(torch.relu(model.block(torch.relu(first))))
        assert torch.allclose(logits, expected, atol=1e-5)


@pytest.mark.parametrize("kind", MIXERS)
def test_a_shared_layer_before_the_hooked_one_is_unaffected(kind):
    # Weight sharing upstream (one encoder, two inputs) is not the hooked layer's business.
    model = SharedEncoder()
    logits, targets = PAIRWISE_AND_MULTIMIX[kind](model, "head")(*batch())
    assert logits.shape == targets.shape


def test_manifold_mixup_counts_only_the_layer_it_mixes():
    # "body" is drawn at some steps, "fc" (called twice) at others: only the second are refused.
    model = TwoViews()
    mixer = ManifoldMixup(model, layers=["body", "fc"], num_classes=K, generator=gen(0))
    drawn = set()
    for seed in range(12):
        layer = mixer.decide()  # the layer the next forward mixes at
        drawn.add(layer)
        if layer == "fc":
            with pytest.raises(RuntimeError, match="'fc' was called 2 times"):
                mixer(*batch(seed=seed))
        else:
            logits, targets = mixer(*batch(seed=seed))
            assert logits.shape == targets.shape
    assert drawn == {"body", "fc"}


class DenseTwoViews(nn.Module):
    """A conv net whose features run twice: on two views, or in sequence (``features(features(x))``)."""

    def __init__(self, sequential: bool = False) -> None:
        super().__init__()
        self.features = nn.Conv1d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, K)
        self.sequential = sequential
        self.twice = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.twice:
            return self.fc(self.features(x).mean(2))
        if self.sequential:
            return self.fc(self.features(self.features(x)).mean(2))
        return self.fc(self.features(x).mean(2)) + self.fc(self.features(x.flip(2)).mean(2))


@pytest.mark.parametrize("wrapped", [False, True])
@pytest.mark.parametrize("sequential", [False, True])
def test_dense_multimix_refuses_features_called_twice(sequential, wrapped):
    # Dense MultiMix classifies the features' first output itself: after a second call, that is not
    # the embedding the model classifies. A plain model's first training forward runs to the end
    # to see it (later ones end at the features); under a wrapper every forward does.
    model = DenseTwoViews(sequential=sequential)
    net = nn.DataParallel(model) if wrapped else model
    mixer = DenseMultiMix(net, features="features", classifier="fc", n=5, num_classes=K)
    x, y = torch.randn(4, 4, 7), torch.tensor([0, 1, 2, 1])
    for _ in range(2):  # refused again: nothing was left behind
        with pytest.raises(RuntimeError, match=r"'features' was called 2 times in one forward"):
            mixer(x, y)
    model.twice = False
    logits, targets = mixer(x, y)
    assert logits.shape == targets.shape == (5 * 7, K)
    mixer.eval()
    model.twice = True
    assert torch.equal(mixer(x)[0], model(x))  # eval: the model as it is


def test_under_torch_compile_rows_still_tell_the_streams_apart():
    # Under torch.compile the hooks are traced and no autograd graph is read: the rows decide.
    torch._dynamo.reset()
    try:
        compiled = torch.compile(Sequential(times=2), backend="eager")
        logits, targets = MultiMix(compiled, classifier="block", n=10, num_classes=K)(*batch())
        assert logits.shape == targets.shape == (10, K)
        torch._dynamo.reset()
        compiled = torch.compile(TwoViews(), backend="eager")
        with pytest.raises(RuntimeError, match="called 2 times"):
            MultiMix(compiled, classifier="fc", n=10, num_classes=K)(*batch())
    finally:
        torch._dynamo.reset()


class MaskedBlock(nn.Module):
    """A block taking a mask before its input, as some attention layers do."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(D, D)

    def forward(self, mask: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h) * mask


class MaskedModel(nn.Module):
    def __init__(self, two_views: bool) -> None:
        super().__init__()
        self.body, self.block, self.fc = nn.Linear(6, D), MaskedBlock(), nn.Linear(D, K)
        self.two_views = two_views

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        mask = torch.ones(D)
        if self.two_views:
            return self.fc(self.block(mask, h) + self.block(mask, torch.tanh(h)))
        return self.fc(self.block(mask, self.block(mask, h)))


@pytest.mark.parametrize("two_views", [False, True])
def test_any_argument_on_the_mixed_rows_makes_a_call_sequential(two_views):
    mixer = ManifoldMixup(MaskedModel(two_views), layers=["block"], num_classes=K)
    if two_views:
        with pytest.raises(RuntimeError, match="'block' was called 2 times"):
            mixer(*batch())
    else:
        logits, targets = mixer(*batch())
        assert logits.shape == targets.shape


# -- a classifier whose number of outputs is not num_classes ----------------------------------


class ConvNet(nn.Module):
    def __init__(self, k: int = K, linear: bool = True) -> None:
        super().__init__()
        self.features = nn.Conv1d(4, 8, 3, padding=1)
        self.fc = nn.Linear(8, k) if linear else nn.Sequential(nn.Linear(8, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(2))


@pytest.mark.parametrize("attention", ["none", "pooled", "cam"])
@pytest.mark.parametrize("shortcut", [True, False])
def test_dense_multimix_names_num_classes_and_the_classifiers_outputs(shortcut, attention):
    with pytest.raises(ValueError, match=r"num_classes=5 .*classifier 'fc' gives 3 outputs"):
        DenseMultiMix(
            ConvNet(),
            features="features",
            classifier="fc",
            num_classes=5,
            linear_shortcut=shortcut,
            attention=attention,
        )


@pytest.mark.parametrize("linear", [True, False])
def test_dense_multimix_soft_targets_of_other_classes_fail_before_any_indexing(linear):
    # No num_classes to check at construction: the targets' classes are checked against the
    # classifier's outputs when they meet (for a linear classifier before anything is indexed).
    mixer = DenseMultiMix(ConvNet(linear=linear), features="features", classifier="fc", n=5)
    y = torch.softmax(torch.randn(4, 5), dim=1)
    with pytest.raises(ValueError, match=r"gives 3 outputs .* soft targets y have 5 classes"):
        mixer(torch.randn(4, 4, 7), y)


MIXERS_OF = {
    "mixup": lambda model, **kw: Mixup(model, **kw),
    "cutmix": lambda model, **kw: CutMix(model, **kw),
    "mixup-or-cutmix": lambda model, **kw: MixupOrCutMix(model, **kw),
    "confmix": lambda model, **kw: ConfMix(model, **kw),
    "manifold": lambda model, **kw: ManifoldMixup(model, layers=["features"], **kw),
    "multimix": lambda model, **kw: MultiMix(model, classifier="fc", n=7, **kw),
    "multimix no shortcut": lambda model, **kw: MultiMix(
        model, classifier="fc", n=7, linear_shortcut=False, **kw
    ),
    "dense": lambda model, **kw: DenseMultiMix(
        model, features="features", classifier="fc", n=5, **kw
    ),
}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("kind", list(MIXERS_OF))
def test_every_mixer_names_both_numbers_of_classes(kind, soft, training):
    # A 3-output classifier and targets of 5 classes: one error naming both, in training and eval.
    x = torch.randn(4, 4, 7)
    if soft:
        mixer, y, given = MIXERS_OF[kind](ConvNet()), torch.full((4, 5), 0.2), "have 5 classes"
    elif kind == "dense":
        return  # refused at construction (test above)
    else:
        mixer, y, given = (
            MIXERS_OF[kind](ConvNet(), num_classes=5),
            torch.arange(4),
            "num_classes=5",
        )
    mixer.train(training)
    with pytest.raises(ValueError, match=rf"gives 3 outputs .*{given}"):
        mixer(x, y)
    mixer.eval()
    assert mixer(x)[0].shape == (4, K)  # no targets, nothing to compare


# -- attacks under the caller's grad mode -------------------------------------------------------


class BNNet(nn.Module):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(6, D), nn.BatchNorm1d(D), nn.Linear(D, K)
        self.fail = fail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail:
            raise KeyError("boom")
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "fgsm":
        return fgsm(model, x, y, eps=0.1, clamp=(-2.0, 2.0))
    return pgd(model, x, y, eps=0.1, steps=3, generator=gen(7))


MODES = {
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
    "set_grad_enabled(False)": lambda: torch.set_grad_enabled(False),
}


@pytest.mark.parametrize("inputs_made_in_mode", [False, True])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_attacks_take_gradients_whatever_the_callers_mode(name, mode, inputs_made_in_mode):
    torch.manual_seed(0)
    model = BNNet()
    x, y = batch(8)
    expected = attack(name, model, x, y)
    with MODES[mode]():
        if inputs_made_in_mode:  # under inference_mode: inference tensors
            x, y = x.clone(), y.clone()
        adv = attack(name, model, x, y)
        assert not torch.is_grad_enabled()  # the caller's mode is the caller's again
        assert torch.is_inference_mode_enabled() == (mode == "inference_mode")
    assert torch.equal(adv, expected) and not adv.requires_grad and not adv.is_inference()


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_attacks_leave_the_model_as_they_found_it(name, training):
    model = BNNet().train(training)
    model.fc1.weight.grad = torch.ones_like(model.fc1.weight)  # a gradient the caller accumulated
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = batch(8)
    x.requires_grad_(True)
    with torch.no_grad():
        attack(name, model, x, y)
    assert model.training == training
    assert torch.equal(model.fc1.weight.grad, torch.ones_like(model.fc1.weight))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc1.weight")
    assert x.grad is None
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BN stats too


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_an_attack_that_raises_restores_the_training_flag(name):
    model = BNNet(fail=True).train()
    with pytest.raises(KeyError, match="boom"):
        attack(name, model, *batch(8))
    assert model.training


def test_a_model_built_under_inference_mode_is_refused_by_name():
    with torch.inference_mode():
        model = BNNet()
    with pytest.raises(ValueError, match=r"'fc1.weight' is an inference tensor"):
        fgsm(model, *batch(8), eps=0.1)


def test_robust_accuracy_under_inference_mode():
    model = BNNet()
    x, y = batch(8)
    expected = robust_accuracy(
        model, x, y, attack="pgd", eps=0.1, steps=2, batch_size=3, random_start=False
    )
    with torch.inference_mode():
        got = robust_accuracy(
            model, x, y, attack="pgd", eps=0.1, steps=2, batch_size=3, random_start=False
        )
    assert got == expected


# -- ConfMix on a diverged model ------------------------------------------------------------------


class Diverged(nn.Module):
    """A linear model whose outputs hold ``value`` (NaN or ±inf) for the examples in ``rows``."""

    def __init__(self, value: float, rows: slice = slice(None)) -> None:
        super().__init__()
        self.fc = nn.Linear(6, K)
        self.value, self.rows = value, rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x).clone()
        out[self.rows, 0] = self.value
        return out


@pytest.mark.parametrize("layers", [("input",), ("fc",)])
@pytest.mark.parametrize("rows", [slice(None), slice(2, 3)])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_confmix_on_a_diverged_model_says_so(value, rows, layers):
    model = Diverged(value, rows)
    mixer = ConfMix(model, layers=layers, num_classes=K)
    with pytest.raises(
        FloatingPointError, match="outputs on the clean batch are not finite"
    ) as info:
        mixer(*batch())
    assert "lower the learning rate" in str(info.value) and "alpha must" not in str(info.value)
    assert model.training  # the confidence pass's eval mode was undone
    model.value = 1e30  # huge but finite: the confidence is defined
    logits, targets = mixer(*batch())
    assert logits.shape == targets.shape
