"""α schedules and ConfMix's per-example α (multimix.schedules), the ConfMix mixer, and both in training
and in the config."""

from __future__ import annotations

import pytest
import torch

from conftest import gen, tiny_config
from multimix import ConfMix, soft_cross_entropy
from multimix.functional import mix_pairs, one_hot, sample_beta, sample_mixup
from multimix.models import build_model
from multimix.schedules import Constant, Exponential, Linear, confmix_alpha, make_schedule
from multimix.train import ConfigError, TrainConfig, train


def test_confmix_alpha_endpoints():
    k = 5
    assert torch.allclose(confmix_alpha(torch.full((3, k), 1 / k)), torch.zeros(3))
    assert torch.allclose(confmix_alpha(torch.eye(k)), torch.ones(k))
    half = torch.tensor([[0.6, 0.1, 0.1, 0.1, 0.1]])
    assert torch.allclose(confmix_alpha(half), torch.tensor([k / (k - 1) * (0.6 - 0.2)]))
    with pytest.raises(ValueError, match=r"probs must have shape \(b, K\) with K >= 2"):
        confmix_alpha(torch.ones(3))


def test_schedules_hit_endpoints_and_half_life():
    assert Constant(0.5)(0) == Constant(0.5)(99) == 0.5
    lin = Linear(0.0, 1.0, epochs=50)
    assert lin(0) == 0 and lin(25) == 0.5 and lin(50) == 1 and lin(80) == 1
    up, down = Exponential(0.0, 1.0, half_life=25), Exponential(1.0, 0.0, half_life=25)
    assert up(0) == 0 and down(0) == 1
    assert (
        up(25) == pytest.approx(0.5)
        and up(50) == pytest.approx(0.75)
        and down(25) == pytest.approx(0.5)
    )
    assert up(1000) == pytest.approx(1.0)
    assert make_schedule("exp", start=1, end=0, epochs=10, half_life=5)(5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="half_life must be a finite number > 0"):
        Exponential(0, 1, half_life=0)
    with pytest.raises(ValueError, match="start must be a finite number >= 0"):
        Linear(-1, 1, epochs=3)
    with pytest.raises(ValueError, match="schedule must be one of constant, linear, exp"):
        make_schedule("cosine", start=0, end=1, epochs=3)


def test_confmix_mixes_confident_examples_only():
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(2,), num_classes=3)
    with torch.no_grad():  # make the model certain of class 0 for x[:, 0] > 0, undecided otherwise
        for layer in (model.layer1[0], model.layer2[0], model.layer3[0]):
            layer.weight.zero_()
            layer.bias.zero_()
        model.layer1[0].weight[0, 0] = 1.0
        model.layer2[0].weight[0, 0] = 1.0
        model.layer3[0].weight[0, 0] = 1.0
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        model.fc.weight[0, 0] = 100.0
    x = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [6.0, 0.0], [-6.0, 0.0]])
    y = torch.tensor([0, 1, 0, 2])
    with torch.no_grad():
        alpha = confmix_alpha(torch.softmax(model(x), dim=1))
    assert torch.allclose(alpha, torch.tensor([1.0, 0.0, 1.0, 0.0]), atol=1e-4)
    for scale in (1.0, 0.5):
        # The mixer draws λ_i ~ Beta(scale·α_i) and a partner permutation, after its layer choice.
        g = gen(0)
        torch.rand((), generator=g)  # the (single) layer's choice
        lam = sample_beta(4, scale * alpha, generator=g)
        _, perm = sample_mixup(4, generator=g)
        logits, targets = ConfMix(model, num_classes=3, scale=scale, generator=gen(0))(x, y)
        assert torch.allclose(targets, mix_pairs(one_hot(y, 3), lam, perm), atol=1e-6)
    # α_i = 0: λ_i ∈ {0, 1}, so those rows' targets are one-hot (never NaN).
    assert torch.isfinite(targets).all() and torch.isfinite(logits).all()
    assert set(targets[[1, 3]].flatten().tolist()) <= {0.0, 1.0}
    soft_cross_entropy(logits, targets).backward()


@pytest.mark.parametrize(
    "extra",
    [
        {"method": "confmix", "confmix_warmup": 1},
        {"method": "confmix", "confmix_warmup": 0, "layers": "layer2", "confmix_scale": 0.5},
        {
            "method": "mixup",
            "alpha_schedule": "exp",
            "alpha_start": 0,
            "alpha_end": 1,
            "half_life": 1,
        },
        {"method": "multimix", "alpha_schedule": "linear", "alpha_start": 1, "alpha_end": 0},
    ],
)
def test_confmix_and_schedules_train_without_nan(tmp_path, extra):
    summary = train(tiny_config(epochs=3, **extra), tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "NaN" not in "".join(lines)
    assert summary["final"]["val_loss"] == summary["final"]["val_loss"]


def test_schedule_and_confmix_config_errors():
    with pytest.raises(ConfigError, match=r"alpha_start.*required by alpha_schedule='exp'"):
        TrainConfig.from_dict({"method": "mixup", "alpha_schedule": "exp", "alpha_end": 1})
    with pytest.raises(
        ConfigError,
        match=r"alpha_schedule applies to methods with an α \(mixup, manifold, .*\), not to 'erm'",
    ):
        TrainConfig.from_dict({"alpha_schedule": "linear", "alpha_start": 0, "alpha_end": 1})
    with pytest.raises(
        ConfigError,
        match="invalid value for alpha_schedule: 'cos'; valid values: constant, linear, exp",
    ):
        TrainConfig.from_dict({"method": "mixup", "alpha_schedule": "cos"})
