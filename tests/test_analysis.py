"""Bayes error, excess risk and MMLB (multimix.analysis) on toy problems with an exact Bayes classifier."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import gen
from multimix.analysis import bayes_error, excess_risk, mmlb
from multimix.data.toy import GaussianMixtureProblem


def two_gaussians(mu: float, sigma: float) -> GaussianMixtureProblem:
    return GaussianMixtureProblem(torch.tensor([[[-mu]], [[mu]]]), sigma)


@pytest.mark.parametrize(("mu", "sigma"), [(1.0, 1.0), (0.5, 1.0), (2.0, 0.8)])
def test_bayes_error_of_two_gaussians_is_phi(mu, sigma):
    error, se = bayes_error(two_gaussians(mu, sigma), n_samples=200_000, generator=gen(1))
    exact = 0.5 * math.erfc(mu / sigma / math.sqrt(2))  # Φ(−μ/σ)
    assert abs(error - exact) < 3 * se


def test_excess_risk_of_bayes_is_zero_and_of_a_bad_rule_is_positive():
    problem = two_gaussians(1.0, 1.0)
    r = excess_risk(problem.bayes_predict, problem, n_samples=50_000, generator=gen(0))
    assert r.absolute == 0 and r.relative_percent == 0
    flipped = excess_risk(
        lambda x: (x[:, 0] < 0.5).long(), problem, n_samples=50_000, generator=gen(0)
    )
    assert flipped.absolute > 5 * flipped.standard_error
    assert flipped.relative_percent == pytest.approx(100 * flipped.absolute / flipped.bayes_error)
    # An nn.Module is accepted too: a linear model implementing the Bayes rule.
    model = torch.nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        model.bias.zero_()
    assert excess_risk(model, problem, n_samples=20_000, generator=gen(1)).absolute == 0


def test_mmlb_is_zero_for_separated_unimodal_classes():
    problem = GaussianMixtureProblem(torch.tensor([[[-3.0, 0.0]], [[3.0, 0.0]], [[0.0, 4.0]]]), 0.2)
    value, se = mmlb(problem, n_samples=60_000, generator=gen(0))
    assert value == 0.0 and se == 0.0


def test_mmlb_is_large_for_a_class_split_around_another():
    # Class 0 has components at ±3, class 1 sits at 0 (σ = 0.3, boundary near ±1.5). Mixing the two
    # components of class 0 (probability ½) with λ in (¼, ¾) lands in class 1: normalised MMLB ≈ ¼ · ½.
    problem = GaussianMixtureProblem(torch.tensor([[[-3.0], [3.0]], [[0.0], [0.0]]]), 0.3)
    value, se = mmlb(problem, alpha=1.0, n_samples=200_000, normalised=True, generator=gen(0))
    assert abs(value - 0.125) < 4 * se + 0.003
    raw, raw_se = mmlb(problem, alpha=1.0, n_samples=200_000, generator=gen(0))
    assert raw == pytest.approx(value / 2) and raw_se == pytest.approx(se / 2)  # Σ π_k² = 1/2
