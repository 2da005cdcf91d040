"""Argument checks shared by the functional ops and the mixers.

Every check raises before any work is done, with a message that names the argument, what was
expected and what was given, so a user can fix the call without reading the source.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from torch import Tensor

# Tolerance on the row sums of soft targets and mixing weights: loose enough for float16 inputs,
# tight enough to catch unnormalised scores passed by mistake.
SIMPLEX_ATOL = 1e-2


def check_alpha(alpha: object, name: str = "alpha") -> float:
    """Return ``alpha`` as a float after checking it is a finite number > 0."""
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise TypeError(f"{name} must be a finite number > 0, got {type(alpha).__name__} {alpha!r}")
    value = float(alpha)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {alpha!r}")
    return value


def check_alpha_range(alpha: object, name: str = "alpha") -> tuple[float, float]:
    """Return a range of concentrations ``(low, high)`` as floats after checking 0 < low <= high < inf."""
    if isinstance(alpha, (str, bytes)) or not isinstance(alpha, (tuple, list)) or len(alpha) != 2:
        raise TypeError(
            f"{name} as a range must be a pair (low, high) of numbers > 0, got {alpha!r}"
        )
    low, high = (
        check_alpha(a, f"{name} {end}") for a, end in zip(alpha, ("low", "high"), strict=True)
    )
    if low > high:
        raise ValueError(f"{name} must be a range (low, high) with low <= high, got {alpha!r}")
    return low, high


def check_alpha_or_range(alpha: object, name: str = "alpha") -> float | tuple[float, float]:
    """A concentration (a number > 0, :func:`check_alpha`) or a range of them (:func:`check_alpha_range`)."""
    if isinstance(alpha, (tuple, list)):
        return check_alpha_range(alpha, name)
    return check_alpha(alpha, name)


def check_int(value: object, name: str, *, low: int = 1, high: int | None = None) -> int:
    """Return ``value`` as an int after checking ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_probability(value: object, name: str) -> float:
    """Return ``value`` as a float after checking it lies in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_tensor(x: object, name: str, *, min_dim: int = 1) -> Tensor:
    """Check ``x`` is a tensor with at least ``min_dim`` dimensions and a non-empty batch."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimension(s) (batch first), got shape {tuple(x.shape)}"
        )
    if x.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one example, got shape {tuple(x.shape)}")
    return x


def check_same_batch(
    x: Tensor, targets: Tensor, x_name: str = "x", t_name: str = "targets"
) -> None:
    if x.shape[0] != targets.shape[0]:
        raise ValueError(
            f"{x_name} and {t_name} must have the same batch size, got {x.shape[0]} and {targets.shape[0]}"
        )


def check_soft_targets(targets: Tensor, name: str = "targets", *, values: bool = True) -> Tensor:
    """Check ``targets`` is a (b, K) floating tensor of probability rows.

    With ``values=False`` only the shape and dtype are checked: reading the values synchronises
    with the device, which the per-step functional ops avoid when their caller (a mixer, via
    :func:`multimix.functional.one_hot`) has already validated them.
    """
    check_tensor(targets, name)
    if not targets.is_floating_point():
        raise TypeError(
            f"{name} must be soft targets of floating dtype with shape (b, K), got dtype {targets.dtype}; "
            "convert integer labels with multimix.functional.one_hot(labels, num_classes)"
        )
    if targets.dim() != 2:
        raise ValueError(f"{name} must have shape (b, K), got shape {tuple(targets.shape)}")
    if values:
        if not bool(torch.isfinite(targets).all()):
            raise ValueError(f"{name} must be finite")
        if bool((targets < 0).any()):
            raise ValueError(
                f"{name} must be non-negative, got a minimum of {targets.min().item():.4g}"
            )
        sums = targets.float().sum(dim=1)
        worst = (sums - 1).abs().max().item()
        if worst > SIMPLEX_ATOL:
            raise ValueError(
                f"each row of {name} must sum to 1, got a row summing to "
                f"{sums[(sums - 1).abs().argmax()].item():.4g}"
            )
    return targets
