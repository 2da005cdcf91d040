"""Bayes error and excess risk on problems with a known Bayes classifier.

Definitions and references: docs/concepts/toy-problems.md.

Both are Monte Carlo estimates on a fresh sample, returned with their standard error. The excess
risk of a model is its error minus the Bayes error *on the same sample*, which removes most of the
sampling noise from the difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from multimix._validation import check_int
from multimix.data.toy import GaussianMixtureProblem

Predictor = Callable[[Tensor], Tensor]


def _standard_error(indicator: Tensor) -> float:
    n = indicator.numel()
    p = indicator.double().mean().item()
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def bayes_error(
    problem: GaussianMixtureProblem,
    *,
    n_samples: int = 200_000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Error rate of the exact Bayes classifier, ``(error, standard_error)``, on n_samples draws."""
    n_samples = check_int(n_samples, "n_samples")
    x, y = problem.sample(n_samples, generator=generator)
    wrong = problem.bayes_predict(x) != y
    return wrong.double().mean().item(), _standard_error(wrong)


@dataclass(frozen=True)
class ExcessRisk:
    """Model error, Bayes error and their difference on one sample (fractions, not %)."""

    model_error: float
    bayes_error: float
    absolute: float  # model_error - bayes_error
    relative_percent: float  # 100 * absolute / bayes_error (inf when the Bayes error is 0)
    standard_error: float  # of `absolute` (paired: the same sample for both)


def _as_predictor(model_or_fn: nn.Module | Predictor, batch_size: int = 65_536) -> Predictor:
    if not isinstance(model_or_fn, nn.Module):
        return model_or_fn
    model = model_or_fn

    @torch.no_grad()
    def predict(x: Tensor) -> Tensor:
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            out = [model(chunk.float().to(device)).argmax(1).cpu() for chunk in x.split(batch_size)]
        finally:
            model.train(was_training)
        return torch.cat(out)

    return predict


def excess_risk(
    model_or_predict_fn: nn.Module | Predictor,
    problem: GaussianMixtureProblem,
    *,
    n_samples: int = 200_000,
    generator: torch.Generator | None = None,
) -> ExcessRisk:
    """Excess risk of a classifier over the Bayes classifier, estimated on n_samples fresh draws.

    Args:
        model_or_predict_fn: an ``nn.Module`` returning logits (b, K), or a function x -> labels.
    """
    n_samples = check_int(n_samples, "n_samples")
    x, y = problem.sample(n_samples, generator=generator)
    model_wrong = _as_predictor(model_or_predict_fn)(x).cpu() != y
    bayes_wrong = problem.bayes_predict(x) != y
    diff = model_wrong.double() - bayes_wrong.double()
    m_err, b_err = model_wrong.double().mean().item(), bayes_wrong.double().mean().item()
    absolute = m_err - b_err
    return ExcessRisk(
        model_error=m_err,
        bayes_error=b_err,
        absolute=absolute,
        relative_percent=100 * absolute / b_err if b_err > 0 else math.inf,
        standard_error=diff.std().item() / math.sqrt(n_samples),
    )
