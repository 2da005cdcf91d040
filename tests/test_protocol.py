"""The MultiMix paper's protocol as options (issue 26 §1): per-member α ranges, one mixer per batch
among several (OneOf, and the trainer's --input-mixup-prob), the step learning-rate schedule and the
named recipe ``--recipe alignmixup``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import MLPNet, gen, tiny_config
from multimix import DenseMultiMix, Mixup, MultiMix, OneOf, soft_cross_entropy
from multimix.functional import (
    sample_dense_multimix_weights,
    sample_dirichlet_of,
    sample_member_alphas,
    sample_multimix_tuples,
)
from multimix.train.components import build_scheduler
from multimix.train.config import TrainConfig
from multimix.train.errors import ConfigError
from multimix.train.recipes import NAMED_RECIPES

K = 4


# -- α drawn per member ------------------------------------------------------------------------


def test_member_alphas_are_uniform_in_the_range():
    a = sample_member_alphas(20_000, (0.5, 2.0), generator=gen())
    assert a.shape == (20_000,) and a.min() >= 0.5 and a.max() <= 2.0
    assert abs(a.mean().item() - 1.25) < 0.01  # U(0.5, 2): mean 1.25, std 0.43


def test_a_tuples_weights_follow_the_dirichlet_of_its_members_alphas():
    # b = m = 2: every row mixes members 0 and 1 with weights ~ Dirichlet(α0, α1), so within one call
    # the first weight's mean is α0 / (α0 + α1), which changes from call to call (α redrawn).
    g = gen(3)
    means = []
    for _ in range(12):
        state = g.get_state()
        alphas = sample_member_alphas(2, (0.5, 2.0), generator=g)  # what the call draws first
        g.set_state(state)
        tuples = sample_multimix_tuples(2, n=20_000, m=2, alpha=(0.5, 2.0), generator=g)
        assert torch.equal(tuples.indices, torch.tensor([0, 1]).expand(20_000, 2))
        w0 = tuples.weights[:, 0]
        expected = (alphas[0] / alphas.sum()).item()
        # Beta(α0, α1) has std <= 0.5: the mean of 20 000 draws is within 0.011 at 3 sigmas
        assert abs(w0.mean().item() - expected) < 0.011
        means.append(expected)
    assert max(means) - min(means) > 0.1  # the concentrations really are redrawn per call


def test_a_degenerate_range_is_the_symmetric_dirichlet():
    w = sample_multimix_tuples(50, n=40_000, m=3, alpha=(0.5, 0.5), generator=gen()).weights
    # Dirichlet(0.5, 0.5, 0.5): each weight ~ Beta(0.5, 1): mean 1/3, variance (0.5·1)/(1.5²·2.5) = 0.0889
    assert abs(w.mean().item() - 1 / 3) < 0.005
    assert abs(w.var().item() - 0.5 / (1.5**2 * 2.5)) < 0.004
    assert torch.allclose(w.sum(1), torch.ones(40_000))


def test_dirichlet_of_given_concentrations():
    c = torch.tensor([[1.0, 3.0]]).expand(30_000, 2)
    w = sample_dirichlet_of(c, generator=gen())
    assert torch.allclose(w.sum(1), torch.ones(30_000)) and (w >= 0).all()
    assert abs(w[:, 1].mean().item() - 0.75) < 0.01
    # Tiny concentrations stay finite (normalised in log space)
    tiny = sample_dirichlet_of(torch.full((1000, 5), 1e-3), generator=gen())
    assert torch.isfinite(tiny).all() and torch.allclose(tiny.sum(1), torch.ones(1000))


def test_dense_weights_with_a_range_sum_to_one_per_position():
    members, w = sample_dense_multimix_weights(
        8, 5, n=30, m=None, alpha=(0.5, 2.0), generator=gen()
    )
    assert members.shape == (30, 8) and w.shape == (30, 8, 5)
    assert torch.allclose(w.sum(1), torch.ones(30, 5))
    # Reproducible from the generator's seed
    again = sample_dense_multimix_weights(8, 5, n=30, m=None, alpha=(0.5, 2.0), generator=gen())
    assert torch.equal(w, again[1])


@pytest.mark.parametrize(
    ("alpha", "error"),
    [
        ((2.0, 0.5), "low <= high"),
        ((0.0, 1.0), "alpha low must be a finite number > 0"),
        ((1.0, math.inf), "alpha high must be a finite number > 0"),
        ((1.0,), "a pair"),
        ("0.5,2", "finite number > 0"),
    ],
)
def test_bad_ranges_are_refused_by_the_mixers_and_the_functional_ops(alpha, error):
    with pytest.raises((ValueError, TypeError), match=error):
        MultiMix(MLPNet(), classifier="fc", alpha=alpha, num_classes=K)
    with pytest.raises((ValueError, TypeError), match=error):
        sample_multimix_tuples(8, n=4, alpha=alpha)


def test_multimix_and_dense_train_with_a_range_and_a_schedule_replaces_it():
    torch.manual_seed(0)
    model = MLPNet(k=K)
    mixer = MultiMix(model, classifier="fc", n=64, m=None, alpha=(0.5, 2.0), num_classes=K)
    assert "alpha=U(0.5, 2.0)" in repr(mixer)
    logits, targets = mixer(torch.randn(10, 6), torch.randint(0, K, (10,)))
    assert logits.shape == targets.shape == (64, K)
    soft_cross_entropy(logits, targets).backward()
    assert model.fc.weight.grad is not None
    mixer.set_alpha(0.3)
    assert mixer.alpha == 0.3 and mixer.alpha_range is None

    conv = nn.Sequential()
    conv.add_module("features", nn.Conv1d(2, 8, 3, padding=1))
    conv.add_module("pool", nn.AdaptiveAvgPool1d(1))
    conv.add_module("flat", nn.Flatten())
    conv.add_module("fc", nn.Linear(8, K))
    dense = DenseMultiMix(
        conv, features="features", classifier="fc", n=16, m=None, alpha=(0.5, 2), num_classes=K
    )
    logits, targets = dense(torch.randn(6, 2, 5), torch.randint(0, K, (6,)))
    assert logits.shape == targets.shape == (16 * 5, K)


# -- one mixer per batch ---------------------------------------------------------------------


def _coin(model: nn.Module, p: float = 0.3, seed: int = 1) -> OneOf:
    return OneOf(
        [
            Mixup(model, alpha=1.0, num_classes=K, generator=gen(2)),
            MultiMix(model, classifier="fc", n=40, num_classes=K, generator=gen(3)),
        ],
        probs=[p, 1 - p],
        generator=gen(seed),
    )


def test_oneof_draws_each_mixer_with_its_probability():
    mixer = _coin(MLPNet(k=K), p=0.3)
    x, y = torch.randn(8, 6), torch.randint(0, K, (8,))
    rows = [mixer(x, y)[0].shape[0] for _ in range(600)]
    share = rows.count(8) / len(rows)  # input mixup keeps b rows, MultiMix gives n = 40
    assert set(rows) == {8, 40}
    assert abs(share - 0.3) < 0.06  # binomial std 0.019


def test_oneof_decided_ahead_draws_what_it_would_have_drawn():
    x, y = torch.randn(8, 6), torch.randint(0, K, (8,))
    torch.manual_seed(0)
    model = MLPNet(k=K)
    eager, ahead = _coin(model), _coin(model)
    for _ in range(20):
        choice = ahead.decide()
        assert isinstance(hash(choice), int)  # a CUDA graph's key
        a, b = eager(x, y), ahead(x, y)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert a[0].shape[0] == (8 if choice[0] == 0 else 40)


def test_oneof_state_travels_and_resumes_the_draws():
    model = MLPNet(k=K)
    x, y = torch.randn(8, 6), torch.randint(0, K, (8,))
    first = _coin(model)
    for _ in range(3):
        first(x, y)
    state = first.state_dict()
    assert set(state) == {"_extra_state", "mixers.0._extra_state", "mixers.1._extra_state"}
    second = _coin(model, seed=9)
    second.load_state_dict(state)
    for _ in range(5):
        assert torch.equal(first(x, y)[1], second(x, y)[1])


def test_oneof_runs_unmixed_in_eval_and_passes_alpha_and_model_on():
    model = MLPNet(k=K)
    mixer = _coin(model)
    mixer.eval()
    x = torch.randn(5, 6)
    assert torch.equal(mixer(x)[0], model(x))
    mixer.train()
    mixer.set_alpha(0.0)  # a schedule at zero: every member off
    logits, targets = mixer(x, torch.randint(0, K, (5,)))
    assert logits.shape == targets.shape == (5, K) and torch.equal(logits, model(x))
    wrapper = nn.DataParallel(model)
    mixer.model = wrapper
    assert all(m.model is wrapper for m in mixer.mixers)


def test_oneof_refuses_what_it_cannot_combine():
    model = MLPNet(k=K)
    mix = Mixup(model, num_classes=K)
    with pytest.raises(ValueError, match="same model"):
        OneOf([mix, Mixup(MLPNet(k=K), num_classes=K)])
    with pytest.raises(ValueError, match="agree on num_classes"):
        OneOf([mix, Mixup(model, num_classes=K + 1)])
    with pytest.raises(TypeError, match=r"mixers\[1\] must be a multimix mixer"):
        OneOf([mix, model])
    with pytest.raises(ValueError, match="non-empty list"):
        OneOf([])
    with pytest.raises(ValueError, match="sum to 1"):
        OneOf([mix, Mixup(model, num_classes=K)], probs=[0.5, 0.6])
    with pytest.raises(ValueError, match="one probability per mixer"):
        OneOf([mix], probs=[0.5, 0.5])


# -- the trainer's options -------------------------------------------------------------------


def test_step_schedule_multiplies_the_rate_at_each_milestone():
    config = tiny_config(scheduler="step", milestones="0.25,0.5,0.75", lr_decay=0.1, lr=1.0)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(config, opt, total_steps=100)
    rates = []
    for _ in range(100):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert rates[24] == 1.0 and math.isclose(rates[25], 0.1) and math.isclose(rates[49], 0.1)
    assert math.isclose(rates[50], 0.01) and math.isclose(rates[75], 1e-3) and len(set(rates)) == 4


def test_the_coin_and_the_range_train_through_the_trainer(tmp_path):
    from multimix.train.trainer import train

    config = tiny_config(
        method="multimix", tuple_size="all", alpha_range="0.5,2", input_mixup_prob=0.5
    )
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["best"]["val_acc"] > 0
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "input_mixup_prob: 0.5" in saved and "alpha_range:" in saved


def test_the_named_recipe_sets_what_it_fixes_and_the_user_overrides_it():
    config = TrainConfig.from_dict(
        {"dataset": "fashion-mnist", "method": "multimix", "recipe": "alignmixup", "lr": "0.05"}
    )
    recipe = NAMED_RECIPES["alignmixup"]
    assert config.recipe == "alignmixup" and config.model == "preactresnet18"
    assert config.lr == 0.05  # given: the user's
    for key, value in {**recipe.settings, **recipe.mixing}.items():
        if key != "lr":
            assert getattr(config, key) == value, key
    # Epochs stay the dataset's (the paper's 2000 are not for CPUs)
    assert config.epochs == TrainConfig.from_dict({"dataset": "fashion-mnist"}).epochs
    # ERM under the recipe: the optimisation, not the mixing
    erm = TrainConfig.from_dict({"dataset": "cifar10", "recipe": "alignmixup"})
    assert erm.optimizer == "sgd" and erm.alpha_range is None and erm.input_mixup_prob == 0
    # The recorded config reads back as itself (a resume sees every value given)
    again = TrainConfig.from_dict({**config.to_dict()}, source="saved")
    assert again == config


def test_the_named_recipe_is_refused_where_it_is_not_defined():
    with pytest.raises(ConfigError, match="defined for cifar10, cifar100, fashion-mnist"):
        TrainConfig.from_dict({"dataset": "mnist1d", "recipe": "alignmixup"})
    with pytest.raises(ConfigError, match="valid values: alignmixup"):
        TrainConfig.from_dict({"recipe": "imagenet"})


def test_help_prints_what_the_recipe_sets(capsys):
    from multimix.cli import build_parser

    text = build_parser().parse_args(["train", "--recipe", "alignmixup"]).__dict__
    assert text["recipe"] == "alignmixup"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for said in (
        "alignmixup",
        "optimizer sgd",
        "lr 0.1",
        "milestones 0.25,0.5,0.75",
        "alpha-range 0.5,2",
    ):
        assert said in out, said


def test_compare_resolves_the_recipe_for_each_method():
    from multimix.cli import build_parser, resolve_config

    args = build_parser().parse_args(
        [
            "compare",
            "--dataset",
            "fashion-mnist",
            "--recipe",
            "alignmixup",
            "--methods",
            "erm,multimix",
        ]
    )
    erm, mm = (resolve_config(args, method=m) for m in ("erm", "multimix"))
    assert erm.method == "erm" and erm.alpha_range is None and erm.optimizer == "sgd"
    assert mm.method == "multimix" and mm.alpha_range == [0.5, 2.0] and mm.input_mixup_prob == 0.5
    assert mm.tuple_size is None and mm.optimizer == "sgd"
