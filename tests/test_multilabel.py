"""Multi-label targets in the functional layer: one_hot(multi_label=True), the mixing ops' values on
multi-hot rows (ΛY exactly, CutMix by the pasted area, nothing renormalised), the soft binary
cross-entropy (values, gradients, refusals) and a small model that learns from mixed embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import make_multilabel_classification
from sklearn.metrics import f1_score
from torch import nn

import multimix
from conftest import gen
from multimix import functional as MF


def multilabel_data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``make_multilabel_classification``: 20 features, 5 labels, a (n, 5) 0/1 indicator matrix."""
    return make_multilabel_classification(
        n_samples=n, n_features=20, n_classes=5, n_labels=2, random_state=seed
    )


def multi_hot(b: int = 8, k: int = 5, seed: int = 0) -> torch.Tensor:
    """(b, K) float64 multi-hot rows from the scikit-learn generator: rows sum to 0, 1, 2, ..."""
    _, y = multilabel_data(b, seed)
    return torch.as_tensor(y[:, :k], dtype=torch.float64)


# -- one_hot(multi_label=True) -------------------------------------------------------------------


def test_one_hot_accepts_multi_hot_float_int_and_bool_rows():
    y = multi_hot(16)
    assert (y.sum(1) != 1).any()  # not one-hot: the point of multi-label mode
    assert torch.equal(MF.one_hot(y, 5, multi_label=True), y)
    as_int = MF.one_hot(y.long(), 5, multi_label=True, dtype=torch.float64)
    assert torch.equal(as_int, y)
    as_bool = MF.one_hot(y.bool(), None, multi_label=True)
    assert as_bool.dtype == torch.get_default_dtype() and torch.equal(as_bool.double(), y)
    soft = torch.rand(4, 5, generator=gen(1))
    assert torch.equal(MF.one_hot(soft, 5, multi_label=True), soft)
    # integer class indices still mean one label per example
    assert torch.equal(MF.one_hot(torch.tensor([2, 0]), 3, multi_label=True), torch.eye(3)[[2, 0]])


def test_multi_label_smoothing_is_timms_entrywise_formula():
    y = multi_hot(16)
    eps, k = 0.1, y.shape[1]
    t = MF.one_hot(y, k, smoothing=eps, multi_label=True)
    # timm's BCE smoothing: off = ε/K, on = 1 − ε + ε/K, entry by entry
    on, off = (torch.tensor(v, dtype=torch.float64) for v in (1 - eps + eps / k, eps / k))
    expected = torch.where(y.bool(), on, off)
    assert torch.allclose(t, expected, rtol=0, atol=1e-12)
    assert not torch.allclose(t.sum(1), torch.ones(16, dtype=t.dtype))  # rows not renormalised


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.tensor([[0.5, -0.25, 1.0]]), "minimum of -0.25"),
        (torch.tensor([[0.5, 1.5, 1.0]]), "maximum of 1.5"),
        (torch.tensor([[0.5, float("nan"), 1.0]]), "finite"),
        (torch.tensor([[0.5, float("inf"), 1.0]]), "finite"),
        (torch.tensor([[0, 2, 1]]), "maximum of 2"),  # an indicator matrix holds 0s and 1s only
        (torch.tensor([[1.0, 0.0, 1.0, 0.0]]), "4 classes but num_classes=3"),
        (torch.ones(2, 3, 1), "shape"),
    ],
)
def test_one_hot_refuses_malformed_multi_label_targets(labels, message):
    with pytest.raises(ValueError, match=message):
        MF.one_hot(labels, 3, multi_label=True)


def test_one_hot_without_the_flag_refuses_multi_hot_rows_and_says_how():
    with pytest.raises(ValueError, match=r"sum to 1.*multi_label=True"):
        MF.one_hot(multi_hot(16), 5)
    with pytest.raises(ValueError, match="multi_label=True"):
        MF.one_hot(multi_hot(16).long(), 5)


# -- the mixing ops: multi-label targets mixed with the inputs' own weights ----------------------


def test_mixup_mixes_multi_hot_rows_with_the_inputs_lambda():
    y = multi_hot(8)
    x = torch.randn(8, 3, dtype=torch.float64, generator=gen(0))
    x_mixed, y_mixed = MF.mixup(
        x, y, alpha=0.4, per_sample=True, generator=gen(3), multi_label=True
    )
    lam, perm = MF.sample_mixup(8, alpha=0.4, per_sample=True, generator=gen(3))
    lam = lam.double()[:, None]
    assert torch.allclose(x_mixed, lam * x + (1 - lam) * x[perm], rtol=0, atol=1e-12)
    assert torch.allclose(y_mixed, lam * y + (1 - lam) * y[perm], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="sum to 1"):  # without the flag: single-label rows only
        MF.mixup(x, y, generator=gen(3))


@pytest.mark.parametrize("shape", [(8, 3, 12, 10), (8, 2, 30), (8, 30)])
def test_cutmix_mixes_multi_hot_rows_by_the_pasted_area(shape):
    y = multi_hot(8)
    x = torch.randn(*shape, dtype=torch.float64, generator=gen(0))
    x_mixed, y_mixed = MF.cutmix(x, y, per_sample=True, generator=gen(5), multi_label=True)
    mask, _, perm = MF.sample_cutmix(shape, per_sample=True, generator=gen(5))
    # the weight of the example's own labels is the share of its own positions in what it shows
    own = 1.0 - mask.flatten(1).double().mean(1)[:, None]
    # (to float32 rounding: CutMix's λ is drawn in float32)
    assert torch.allclose(y_mixed, own * y + (1 - own) * y[perm], rtol=0, atol=1e-6)
    assert not torch.equal(own, torch.ones_like(own))  # something was pasted
    pasted = mask.unsqueeze(1) if x.dim() > 2 else mask
    assert torch.equal(x_mixed, torch.where(pasted, x[perm], x))


@pytest.mark.parametrize("m", [2, 3, None])
def test_multimix_mixed_targets_are_exactly_lambda_y(m):
    y = multi_hot(8)
    z = torch.randn(8, 6, dtype=torch.float64, generator=gen(0))
    z_mixed, y_mixed = MF.multimix(z, y, n=200, m=m, generator=gen(7), multi_label=True)
    lam = MF.tuples_to_weights(MF.sample_multimix_tuples(8, n=200, m=m, generator=gen(7))).double()
    assert torch.allclose(y_mixed, lam @ y, rtol=0, atol=1e-12)
    assert torch.allclose(z_mixed, lam @ z, rtol=0, atol=1e-12)
    # not renormalised: each mixed row's mass is the mix of its members' label counts
    assert torch.allclose(y_mixed.sum(1), lam @ y.sum(1), rtol=0, atol=1e-12)
    assert (y_mixed.sum(1) > 1.01).any()


def test_multimix_mixes_float32_multi_label_targets_with_other_dtypes_too():
    y = multi_hot(8).float()
    z = torch.randn(8, 6, dtype=torch.float64, generator=gen(0))  # the two-pass path
    _, y_mixed = MF.multimix(z, y, n=50, m=3, generator=gen(2), multi_label=True)
    lam = MF.tuples_to_weights(MF.sample_multimix_tuples(8, n=50, m=3, generator=gen(2)))
    assert y_mixed.dtype == torch.float32
    assert torch.allclose(y_mixed, lam @ y, atol=1e-6)


def test_dense_multimix_mixes_multi_hot_rows_per_position():
    y = multi_hot(6)
    z = torch.randn(6, 4, 3, 3, dtype=torch.float64, generator=gen(0))
    _, y_mixed = MF.dense_multimix(z, y, n=40, m=3, generator=gen(9), multi_label=True)
    members, weights = MF.sample_dense_multimix_weights(6, 9, n=40, m=3, generator=gen(9))
    # out[k, j] = Σ_i weights[k, i, j] · Y[members[k, i]]
    expected = torch.einsum("kij,kic->kjc", weights.double(), y[members])
    assert y_mixed.shape == (40, 9, 5)
    assert torch.allclose(y_mixed, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("op", ["mixup", "cutmix", "multimix", "dense_multimix"])
def test_mixing_ops_refuse_malformed_multi_label_targets(op):
    z = torch.randn(4, 3, 5)
    call = getattr(MF, op)
    for bad, message in [
        (torch.tensor([[0.0, 1.2]] * 4), "maximum of 1.2"),
        (torch.tensor([[-0.1, 1.0]] * 4), "minimum of -0.1"),
        (torch.tensor([[float("nan"), 1.0]] * 4), "finite"),
        (torch.ones(4, 2, 1), "shape"),
    ]:
        with pytest.raises(ValueError, match=message):
            call(z, bad, multi_label=True)
    with pytest.raises(TypeError, match="floating dtype"):
        call(z, torch.ones(4, 2, dtype=torch.long), multi_label=True)


# -- soft_binary_cross_entropy --------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_soft_bce_matches_torch_and_the_formula(reduction):
    logits = torch.randn(7, 5, dtype=torch.float64, generator=gen(0)) * 3
    targets = torch.rand(7, 5, dtype=torch.float64, generator=gen(1))
    got = MF.soft_binary_cross_entropy(logits, targets, reduction=reduction)
    want = F.binary_cross_entropy_with_logits(logits, targets, reduction=reduction)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)
    p = torch.sigmoid(logits)
    entries = -(targets * p.log() + (1 - targets) * (1 - p).log())
    reduce = {"mean": torch.mean, "sum": torch.sum, "none": lambda t: t}[reduction]
    assert torch.allclose(got, reduce(entries), atol=1e-10)
    assert multimix.soft_binary_cross_entropy is MF.soft_binary_cross_entropy


def test_soft_bce_of_mixed_targets_is_the_mix_of_the_losses():
    logits = torch.randn(6, 5, dtype=torch.float64, generator=gen(0))
    a, b, lam = multi_hot(6, seed=1), multi_hot(6, seed=2), 0.3
    loss = MF.soft_binary_cross_entropy(logits, lam * a + (1 - lam) * b)
    mixed = lam * MF.soft_binary_cross_entropy(logits, a)
    mixed = mixed + (1 - lam) * MF.soft_binary_cross_entropy(logits, b)
    assert torch.allclose(loss, mixed, rtol=0, atol=1e-12)


def test_soft_bce_gradcheck_float64():
    logits = torch.randn(4, 3, dtype=torch.float64, generator=gen(0), requires_grad=True)
    targets = torch.rand(4, 3, dtype=torch.float64, generator=gen(1), requires_grad=True)
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(
            lambda x, t: MF.soft_binary_cross_entropy(x, t, reduction=reduction),  # noqa: B023
            (logits, targets),
        )


def test_soft_bce_takes_per_position_targets_and_casts_them():
    logits = torch.randn(3, 4, 5, generator=gen(0))
    targets = torch.rand(3, 4, 5, dtype=torch.float64, generator=gen(1))
    got = MF.soft_binary_cross_entropy(logits, targets)
    assert got.dtype == torch.float32
    assert torch.allclose(got, F.binary_cross_entropy_with_logits(logits, targets.float()))


@pytest.mark.parametrize(
    ("logits", "targets", "error", "message"),
    [
        (torch.zeros(4, 3), torch.full((4, 3), 1.5), ValueError, "maximum of 1.5"),
        (torch.zeros(4, 3), torch.full((4, 3), -0.5), ValueError, "minimum of -0.5"),
        (torch.zeros(4, 3), torch.full((4, 3), float("nan")), ValueError, "finite"),
        (torch.zeros(4, 3), torch.zeros(4, 2), ValueError, r"same shape.*\(4, 3\) and \(4, 2\)"),
        (torch.zeros(4), torch.zeros(4), ValueError, "at least 2 dimension"),
        (torch.zeros(4, 3), torch.zeros(4, 3, dtype=torch.long), TypeError, "floating dtype"),
        (torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, 3), TypeError, "floating dtype"),
    ],
)
def test_soft_bce_refuses_malformed_input(logits, targets, error, message):
    with pytest.raises(error, match=message):
        MF.soft_binary_cross_entropy(logits, targets)


def test_soft_bce_refuses_an_unknown_reduction():
    with pytest.raises(ValueError, match="reduction must be one of"):
        MF.soft_binary_cross_entropy(torch.zeros(2, 2), torch.zeros(2, 2), reduction="avg")


# -- a small model learns multi-label targets from mixed embeddings ---------------------------------


def test_mlp_with_functional_multimix_learns_make_multilabel_classification():
    # 60 steps of a 20-64-5 MLP: about a second on one core (no wall-clock assertion: under load
    # it would measure the machine, not the code).
    x_np, y_np = multilabel_data(600, seed=0)
    x = torch.as_tensor(x_np, dtype=torch.float32)
    x = (x - x[:450].mean(0)) / x[:450].std(0)  # standardised by the training part's statistics
    y = MF.one_hot(torch.as_tensor(y_np), 5, multi_label=True)
    x_train, y_train, x_test, y_test = x[:450], y[:450], x[450:], y_np[450:]

    with torch.random.fork_rng():
        torch.manual_seed(0)
        encoder = nn.Sequential(nn.Linear(20, 64), nn.ReLU())
        classifier = nn.Linear(64, 5)
    params = [*encoder.parameters(), *classifier.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-2, weight_decay=1e-4)
    g = gen(0)
    for _ in range(20):
        order = torch.randperm(450, generator=g)
        for batch in order.split(150):
            z = encoder(x_train[batch])  # (b, 64) embeddings
            b = z.shape[0]
            tuples = MF.sample_multimix_tuples(b, n=2 * b, m=2, generator=g)
            z_mixed = MF.interpolate_tuples(tuples, z)  # Z̃ = Λ Z
            y_mixed = MF.interpolate_tuples(tuples, y_train[batch])  # Ỹ = Λ Y, the same Λ
            loss = MF.soft_binary_cross_entropy(classifier(z_mixed), y_mixed)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    with torch.no_grad():
        predicted = (classifier(encoder(x_test)) > 0).numpy().astype(int)
    majority = np.broadcast_to((y_np[:450].mean(0) > 0.5).astype(int), y_test.shape)
    f1 = f1_score(y_test, predicted, average="micro", zero_division=0)
    f1_majority = f1_score(y_test, majority, average="micro", zero_division=0)
    subset = (predicted == y_test).all(1).mean()
    subset_majority = (majority == y_test).all(1).mean()
    assert f1 > f1_majority + 0.2 and f1 > 0.6, (f1, f1_majority)
    assert subset > subset_majority + 0.1, (subset, subset_majority)
