"""Toy problems with a known Bayes classifier: Gaussian mixtures and spirals.

The formulas and references: docs/concepts/toy-problems.md.

A :class:`GaussianMixtureProblem` has K classes with equal priors; class k is a mixture of N
equal-weight isotropic Gaussians N(μ_kj, σ² I) with one σ shared by all. Because the densities are
known, the Bayes classifier is exact: the class whose log-sum-exp of component log-densities is
largest.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from multimix._validation import check_int

#: Default ranges of :meth:`GaussianMixtureProblem.random` (the seed paper does not state its ranges).
MEAN_RANGE = (-1.0, 1.0)
SIGMA_RANGE = (0.1, 0.3)


class GaussianMixtureProblem:
    """K classes, each a mixture of N isotropic Gaussians with a shared σ, equal class priors.

    Args:
        means: (K, N, D) component means.
        sigma: shared standard deviation, > 0.
    """

    def __init__(self, means: Tensor, sigma: float) -> None:
        if not isinstance(means, Tensor) or means.dim() != 3:
            raise ValueError(
                f"means must be a (K, N, D) tensor, got {getattr(means, 'shape', type(means))}"
            )
        if means.shape[0] < 2:
            raise ValueError(f"means must hold at least 2 classes, got K={means.shape[0]}")
        if not float(sigma) > 0 or not math.isfinite(float(sigma)):
            raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
        self.means = means.double()
        self.sigma = float(sigma)

    @classmethod
    def random(
        cls,
        num_classes: int,
        components: int,
        *,
        dim: int = 2,
        seed: int,
        mean_range: tuple[float, float] = MEAN_RANGE,
        sigma_range: tuple[float, float] = SIGMA_RANGE,
    ) -> GaussianMixtureProblem:
        """Draw means uniformly in ``mean_range``^D and σ uniformly in ``sigma_range``."""
        check_int(num_classes, "num_classes", low=2)
        check_int(components, "components")
        check_int(dim, "dim")
        g = torch.Generator().manual_seed(int(seed))
        lo, hi = mean_range
        means = lo + (hi - lo) * torch.rand(
            num_classes, components, dim, generator=g, dtype=torch.float64
        )
        s_lo, s_hi = sigma_range
        sigma = s_lo + (s_hi - s_lo) * torch.rand((), generator=g, dtype=torch.float64).item()
        return cls(means, sigma)

    @property
    def num_classes(self) -> int:
        return self.means.shape[0]

    @property
    def components(self) -> int:
        return self.means.shape[1]

    @property
    def dim(self) -> int:
        return self.means.shape[2]

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw n examples: y uniform over classes, a component uniform within the class.

        Returns:
            ``(x float32 (n, D), y int64 (n,))``.
        """
        n = check_int(n, "n")
        y = torch.randint(self.num_classes, (n,), generator=generator)
        return self.sample_class(y, generator=generator).float(), y

    def sample_class(self, labels: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw one example of each requested class: x (n, D) float64 with ``labels`` (n,) given."""
        j = torch.randint(self.components, labels.shape, generator=generator)
        noise = torch.randn(len(labels), self.dim, generator=generator, dtype=torch.float64)
        return self.means[labels, j] + self.sigma * noise

    def class_log_density(self, x: Tensor) -> Tensor:
        """log p(x | k) up to a constant shared by all classes, (n, K), computed in float64."""
        x = x.double()
        # Squared distances to every component: (n, K, N).
        d2 = (
            torch.cdist(x, self.means.reshape(-1, self.dim))
            .pow(2)
            .reshape(len(x), self.num_classes, -1)
        )
        return torch.logsumexp(-d2 / (2 * self.sigma**2), dim=2) - math.log(self.components)

    def log_posterior(self, x: Tensor) -> Tensor:
        """Exact log P(k | x) with equal priors, (n, K); each row's exp sums to 1."""
        return torch.log_softmax(self.class_log_density(x), dim=1)

    def bayes_predict(self, x: Tensor) -> Tensor:
        """The Bayes classifier h*(x), int64 (n,)."""
        return self.class_log_density(x).argmax(dim=1)


def spirals(
    n: int,
    *,
    num_classes: int = 2,
    turns: float = 1.5,
    noise: float = 0.05,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Interleaved 2-D spirals, one arm per class, radius in [0, 1].

    Returns:
        ``(x float32 (n, 2), y int64 (n,))``.
    """
    n = check_int(n, "n")
    y = torch.randint(num_classes, (n,), generator=generator)
    t = torch.rand(n, generator=generator).sqrt()  # sqrt: uniform density along the arm's area
    angle = t * turns * 2 * math.pi + y * (2 * math.pi / num_classes)
    x = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], dim=1)
    return (x + noise * torch.randn(n, 2, generator=generator)).float(), y
