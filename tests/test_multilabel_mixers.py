"""Multi-label targets through the nn.Module mixers and the teacher (issue 25 §5).

The values are checked without reproducing any draw: the inputs carry their own targets (the first K
features of every example are its multi-hot row Y) and the model reads them out unchanged, so the
mixed logits are the inputs' (or embeddings') mixture of Y, which the mixed targets must equal exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_multilabel_classification
from sklearn.metrics import f1_score
from torch import nn

import multimix
import multimix.mixers.pairwise as pairwise_mixers
from conftest import gen
from multimix import functional as MF
from multimix.mixers.dense import _class_weights

K = 5
STEPS = 100  # full-batch Adam steps of the learning test


def multi_hot(b: int = 12, seed: int = 0) -> torch.Tensor:
    """(b, K) float multi-hot rows from scikit-learn's generator; row sums 0, 1, 2, ..."""
    _, y = make_multilabel_classification(
        n_samples=b, n_features=20, n_classes=K, n_labels=2, random_state=seed
    )
    return torch.as_tensor(y, dtype=torch.float32)


class ReadOut(nn.Module):
    """``fc(encoder(x))`` where ``encoder`` is the identity and ``fc`` returns the first k features:
    whatever mixes the inputs or the embedding, the logits are the same mixture of those features."""

    def __init__(self, d: int = 8, k: int = K) -> None:
        super().__init__()
        self.encoder = nn.Identity()
        self.fc = nn.Linear(d, k)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(k, d))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(x))


class SpatialReadOut(nn.Module):
    """``features`` the identity on (b, d, r), then the mean over positions into ``fc``: Dense
    MultiMix classifies every position with ``fc``, which reads each position's first K channels."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.fc = ReadOut(d).fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=2))


def flat_batch(y: torch.Tensor, d: int = 8) -> torch.Tensor:
    """(b, d) inputs whose first K features are y, the rest noise."""
    return torch.cat([y, torch.randn(y.shape[0], d - K, generator=gen(3))], dim=1)


def spatial_batch(y: torch.Tensor, d: int = 8, r: int = 6) -> torch.Tensor:
    """(b, d, r) inputs whose first K channels are y at every position, the rest noise."""
    noise = torch.randn(y.shape[0], d - K, r, generator=gen(4))
    return torch.cat([y[:, :, None].expand(-1, -1, r), noise], dim=1)


def flat_mixers(model: nn.Module, **kw: object) -> dict[str, nn.Module]:
    return {
        "Mixup": multimix.Mixup(model, alpha=1.0, per_sample=True, **kw),
        "ManifoldMixup": multimix.ManifoldMixup(model, layers=["encoder"], **kw),
        "ConfMix": multimix.ConfMix(model, layers=["encoder"], **kw),
        "MultiMix": multimix.MultiMix(model, classifier="fc", n=64, linear_shortcut=False, **kw),
        "MultiMix-shortcut": multimix.MultiMix(model, classifier="fc", n=64, m=3, **kw),
        "MultiMix-keep-clean": multimix.MultiMix(
            model, classifier="fc", n=16, keep_clean=True, **kw
        ),
    }


FLAT = list(flat_mixers(ReadOut()))


@pytest.mark.parametrize("name", FLAT)
def test_flat_mixers_mix_multi_hot_targets_with_the_inputs_weights(name):
    y = multi_hot()
    model = ReadOut().train()
    with flat_mixers(model, multi_label=True, generator=gen(1))[name] as mixer:
        logits, targets = mixer(flat_batch(y), y)
    assert targets is not None and targets.shape == logits.shape
    # the logits are the mixture of the inputs' first K features, which are Y: the targets are ΛY
    assert torch.allclose(targets, logits.detach(), atol=1e-6)
    assert ((targets >= 0) & (targets <= 1 + 1e-6)).all()
    assert (targets.sum(1) > 1.0 + 1e-3).any()  # rows not renormalised to 1


@pytest.mark.parametrize("name", ["CutMix", "MixupOrCutMix"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_cutmix_mixes_multi_hot_targets_by_the_pasted_area(name, per_sample):
    y = multi_hot(10)
    model = SpatialReadOut().train()
    cls = getattr(multimix, name)
    x = spatial_batch(y)
    for seed in range(4):  # MixupOrCutMix: both branches
        mixer = cls(model, per_sample=per_sample, multi_label=True, generator=gen(seed))
        logits, targets = mixer(x, y)
        # the model averages each channel over positions: the share of the pasted segment
        assert torch.allclose(targets, logits.detach(), atol=1e-6)


@pytest.mark.parametrize("attention", ["none", "pooled", "cam"])
@pytest.mark.parametrize("linear_shortcut", [True, False])
def test_dense_multimix_mixes_multi_hot_targets_per_position(attention, linear_shortcut):
    y = multi_hot()
    model = SpatialReadOut().train()
    mixer = multimix.DenseMultiMix(
        model,
        features="features",
        classifier="fc",
        n=32,
        attention=attention,
        linear_shortcut=linear_shortcut,
        multi_label=True,
        generator=gen(2),
    )
    logits, targets = mixer(spatial_batch(y), y)
    assert targets.shape == logits.shape == (32 * 6, K)
    assert torch.allclose(targets, logits.detach(), atol=1e-5)
    assert (targets.sum(1) > 1.0 + 1e-3).any()


def test_cam_attention_of_a_multi_hot_row_is_the_mean_of_its_classes():
    y = multi_hot(12)
    y[0] = 0.0  # a row with no label present
    z = torch.randn(12, 7, 3, 3, generator=gen(5))
    weight = torch.randn(K, 7, generator=gen(6))
    rows = _class_weights(y)
    present = y.sum(1) > 0
    assert torch.allclose(rows[present].sum(1), torch.ones(int(present.sum())))
    att = MF.cam_attention(z, weight, rows)
    # the ℓ1-normalised attention does not depend on a row's positive scale
    assert torch.allclose(att[present], MF.cam_attention(z, weight, y)[present], atol=1e-6)
    assert torch.allclose(att[0], torch.full((3, 3), 1 / 9))  # no label: uniform


def test_one_label_per_row_gives_the_single_label_result():
    labels = torch.tensor([0, 3, 1, 4, 2, 2, 0, 1])
    y = torch.eye(K)[labels]
    x = torch.randn(8, 8, generator=gen(7))
    # ConfMix's α is by design not the same: a sigmoid's confidence per class, not the softmax's
    for name in (n for n in FLAT if n != "ConfMix"):
        single = flat_mixers(ReadOut().train(), num_classes=K, generator=gen(1))[name]
        multi = flat_mixers(ReadOut().train(), multi_label=True, generator=gen(1))[name]
        logits_s, targets_s = single(x, labels)
        logits_m, targets_m = multi(x, y)
        assert torch.allclose(targets_m, targets_s, atol=1e-6), name
        assert torch.allclose(logits_m, logits_s, atol=1e-6), name
        # the invariant: row sums of ΛY are Λ times Y's row sums (all 1 here)
        assert torch.allclose(targets_m.sum(1), torch.ones(len(targets_m)), atol=1e-6), name


def test_multimix_row_sums_are_lambda_times_the_row_sums():
    y = multi_hot(16)
    # one more column, each row's label count / K: mixed with the same Λ as the labels
    y_and_sum = torch.cat([y, y.sum(1, keepdim=True) / K], dim=1)
    x = torch.cat([y_and_sum, torch.randn(16, 2, generator=gen(3))], dim=1)
    model = ReadOut(k=K + 1).train()
    mixer = multimix.MultiMix(model, classifier="fc", n=50, multi_label=True, generator=gen(1))
    _, targets = mixer(x, y_and_sum)
    # rows of ΛY sum to Λ (Y's row sums), whatever those are: nothing renormalised
    assert torch.allclose(targets[:, :K].sum(1), K * targets[:, K], atol=1e-5)
    assert not torch.allclose(targets[:, :K].sum(1), torch.ones(50))


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.int32])
def test_indicator_matrices_are_accepted(dtype):
    y = multi_hot()
    mixer = multimix.Mixup(ReadOut().train(), multi_label=True, generator=gen(1))
    logits, targets = mixer(flat_batch(y), y.to(dtype))
    assert targets.dtype == torch.float32
    assert torch.allclose(targets, logits.detach(), atol=1e-6)


def test_eval_mode_returns_the_multi_hot_targets_unchanged():
    y = multi_hot()
    mixer = multimix.MultiMix(ReadOut(), classifier="fc", multi_label=True).eval()
    logits, targets = mixer(flat_batch(y), y.long())
    assert logits.shape == (12, K) and torch.equal(targets, y)


def all_mixers(**kw: object) -> list[nn.Module]:
    flat = list(flat_mixers(ReadOut(), **kw).values())
    spatial = SpatialReadOut()
    return [
        *flat,
        multimix.CutMix(spatial, **kw),
        multimix.MixupOrCutMix(spatial, **kw),
        multimix.DenseMultiMix(spatial, features="features", classifier="fc", **kw),
    ]


def _batch_for(mixer: nn.Module, y: torch.Tensor) -> torch.Tensor:
    return spatial_batch(y) if isinstance(mixer.model, SpatialReadOut) else flat_batch(y)


BAD = [
    (lambda y: y - 0.5, ValueError, "minimum of -0.5"),
    (lambda y: y * 2, ValueError, "maximum of 2"),
    (lambda y: y[:, :4], ValueError, "4 classes but num_classes=5"),
    (lambda y: y.long() * 3, ValueError, "maximum of 3"),
    (lambda y: torch.where(y.bool(), float("nan"), 0.0), ValueError, "finite"),
]


@pytest.mark.parametrize(("bad", "error", "message"), BAD)
def test_every_mixer_refuses_malformed_multi_label_targets(bad, error, message):
    y = multi_hot()
    for mixer in all_mixers(multi_label=True, num_classes=K):
        mixer.train()
        with pytest.raises(error, match=message):
            mixer(_batch_for(mixer, y), bad(y))


def test_every_mixer_without_the_flag_refuses_multi_hot_rows_and_says_how():
    y = multi_hot()
    for mixer in all_mixers(num_classes=K):
        mixer.train()
        with pytest.raises(ValueError, match="multi_label=True"):
            mixer(_batch_for(mixer, y), y)


def test_multi_label_must_be_a_bool():
    with pytest.raises(TypeError, match="multi_label must be a bool, got str"):
        multimix.Mixup(ReadOut(), multi_label="yes")


# -- ConfMix's confidence -------------------------------------------------------------------------


def test_confmix_alpha_is_the_mean_binary_confidence(monkeypatch):
    seen = []
    real = pairwise_mixers.sample_beta

    def spy(b, alpha, **kw):
        seen.append(alpha)
        return real(b, alpha, **kw)

    monkeypatch.setattr(pairwise_mixers, "sample_beta", spy)
    y = multi_hot()
    x = flat_batch(y) * 4.0 - 2.0  # logits ±2 on the first K features
    mixer = multimix.ConfMix(ReadOut().train(), scale=0.5, multi_label=True, generator=gen(1))
    mixer(x, y)
    p = torch.sigmoid(x[:, :K])
    expected = 0.5 * (2 * p - 1).abs().mean(1)
    assert torch.allclose(seen[0], expected, atol=1e-6)
    assert torch.allclose(
        seen[0], torch.full((12,), 0.5 * (2 * torch.sigmoid(torch.tensor(2.0)) - 1))
    )


# -- the teacher's sigmoid targets ----------------------------------------------------------------


def test_teacher_probabilities_are_per_class_sigmoids():
    model = ReadOut().train()
    x = torch.randn(6, 8, generator=gen(8)) * 3
    teacher = multimix.EMATeacher(model)
    for mixer in (
        multimix.MultiMix(
            model, classifier="fc", teacher=teacher, temperature=2.0, multi_label=True
        ),
        multimix.MultiMix(model, classifier="fc", teacher=teacher, temperature=2.0),
    ):
        probs = mixer._teacher_probs(x)
        logits = x[:, :K] / 2.0
        expected = torch.sigmoid(logits) if mixer.multi_label else torch.softmax(logits, dim=1)
        assert torch.allclose(probs, expected, atol=1e-6)


@pytest.mark.parametrize("w", [0.5, 2.0])
def test_distilled_multi_label_targets_are_the_convex_combination(w):
    y = multi_hot()
    x = flat_batch(y) + 0.3 * torch.randn(12, 8, generator=gen(9))
    model = ReadOut().train()
    teacher = multimix.EMATeacher(model)

    def mixer(**kw):
        return multimix.MultiMix(
            model, classifier="fc", n=40, multi_label=True, generator=gen(1), **kw
        )

    _, distilled = mixer(teacher=teacher, distill_weight=w, temperature=0.5)(x, y)
    _, plain = mixer()(x, y)
    _, of_teacher = mixer()(x, torch.sigmoid(teacher(x) / 0.5))
    assert torch.allclose(distilled, (plain + w * of_teacher) / (1 + w), atol=1e-6)
    assert ((distilled >= 0) & (distilled <= 1)).all()
    # the loss of the combination is the weighted mean of the two losses (BCE is affine in t)
    logits = torch.randn(distilled.shape, generator=gen(10))
    bce = multimix.soft_binary_cross_entropy
    both = (bce(logits, plain) + w * bce(logits, of_teacher)) / (1 + w)
    assert torch.allclose(bce(logits, distilled), both, atol=1e-6)


def test_dense_teacher_targets_use_a_sigmoid():
    model = SpatialReadOut().train()
    mixer = multimix.DenseMultiMix(
        model,
        features="features",
        classifier="fc",
        teacher=multimix.EMATeacher(model),
        multi_label=True,
    )
    x = spatial_batch(multi_hot())
    assert torch.allclose(mixer._teacher_probs(x), torch.sigmoid(model(x)), atol=1e-6)


# -- gradients and a model that learns ------------------------------------------------------------


def test_gradients_reach_the_encoder_through_mixed_multi_hot_targets():
    y = multi_hot()
    model = nn.Sequential()
    model.add_module("encoder", nn.Linear(8, 8))
    model.add_module("fc", nn.Linear(8, K))
    mixer = multimix.MultiMix(
        model.train(), classifier="fc", n=32, multi_label=True, generator=gen(1)
    )
    logits, targets = mixer(flat_batch(y), y)
    multimix.soft_binary_cross_entropy(logits, targets).backward()
    # BCE's gradient in the logits is (σ(x) − t) / (N·K): zero only where the prediction is the target
    grad = model.encoder.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_a_model_trained_with_multilabel_multimix_learns():
    x_np, y_np = make_multilabel_classification(
        n_samples=400, n_features=20, n_classes=K, n_labels=2, random_state=0
    )
    x = torch.as_tensor((x_np - x_np.mean(0)) / x_np.std(0), dtype=torch.float32)
    y = torch.as_tensor(y_np)
    train, test = slice(0, 300), slice(300, 400)
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("encoder", nn.Sequential(nn.Linear(20, 64), nn.ReLU()))
    model.add_module("fc", nn.Linear(64, K))
    mixer = multimix.MultiMix(model, classifier="fc", n=300, multi_label=True, generator=gen(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    mixer.train()
    for _ in range(STEPS):
        logits, targets = mixer(x[train], y[train])
        loss = multimix.soft_binary_cross_entropy(logits, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    mixer.eval()
    with torch.no_grad():
        predicted = (model(x[test]) > 0).numpy().astype(int)
    truth = y_np[300:]
    # the better of two constant predictions: each label's majority (all absent here), every label
    baselines = [np.broadcast_to(y_np[:300].mean(0) > 0.5, truth.shape), np.ones_like(truth)]
    baseline = max(
        f1_score(truth, b.astype(int), average="micro", zero_division=0) for b in baselines
    )
    learned = f1_score(truth, predicted, average="micro")
    assert learned > baseline + 0.12, (learned, baseline)
