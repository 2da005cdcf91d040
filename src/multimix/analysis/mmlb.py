"""The mixup misclassification lower bound (MMLB) of a problem with a known Bayes classifier.

Derivation and references: docs/concepts/toy-problems.md.

With equal priors π_k = 1/K,

    R_low = Σ_k π_k² · P_{x, x' ~ class k, λ ~ Beta(α, α)} [ h*(λ x + (1 − λ) x') ≠ k ],

the probability mass that mixup, mixing two examples of the *same* class k, puts where the Bayes
classifier says another class: no classifier trained to fit those mixed points can avoid it.
"Normalised MMLB" here is R_low / Σ_k π_k², i.e. the average over classes of that same-class
mixed-point misclassification probability (a number in [0, 1], comparable across K).
"""

from __future__ import annotations

import math

import torch

from multimix._validation import check_int
from multimix.data.toy import GaussianMixtureProblem
from multimix.functional import sample_beta


def mmlb(
    problem: GaussianMixtureProblem,
    *,
    alpha: float = 1.0,
    n_samples: int = 200_000,
    normalised: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Monte Carlo estimate of the MMLB, ``(value, standard_error)``, in one batched pass.

    n_samples same-class pairs are drawn, split evenly over the classes (stratified), each with its
    own λ ~ Beta(α, α).
    """
    n_samples = check_int(n_samples, "n_samples", low=problem.num_classes)
    k = problem.num_classes
    per_class = n_samples // k
    labels = torch.arange(k).repeat_interleave(per_class)
    x = problem.sample_class(labels, generator=generator)
    x_other = problem.sample_class(labels, generator=generator)
    lam = sample_beta(len(labels), alpha, generator=generator, dtype=torch.float64)[:, None]
    wrong = (
        (problem.bayes_predict(lam * x + (1 - lam) * x_other) != labels).double().view(k, per_class)
    )
    rate = wrong.mean(dim=1)  # per-class misclassification probability of same-class mixes
    var = wrong.var(dim=1) / per_class
    weight = 1.0 / k  # π_k² / Σ π_k² for the normalised value; π_k² = 1/K² otherwise
    if normalised:
        value, se = (weight * rate).sum().item(), math.sqrt((weight**2 * var).sum().item())
    else:
        w = 1.0 / k**2
        value, se = (w * rate).sum().item(), math.sqrt((w**2 * var).sum().item())
    return value, se
