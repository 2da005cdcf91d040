"""Mixing strength that changes: α schedules over epochs, and ConfMix's per-example α.

The formulas, defaults and references: docs/concepts/schedules.md.

A schedule maps the epoch (0-based, fractional allowed) to α ≥ 0; α = 0 means no mixing. Every mixer
takes a schedule's value through ``mixer.set_alpha(schedule(epoch))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor


def confmix_alpha(probs: Tensor) -> Tensor:
    """ConfMix strength from the model's confidence: ``K/(K−1) · (max_c p_c − 1/K)``, clipped to [0, 1].

    Args:
        probs: (b, K) predicted class probabilities on the clean examples (K >= 2).

    Returns:
        (b,) α_i: 0 for a uniform prediction (no mixing for that example), 1 for a one-hot one.
    """
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must have shape (b, K) with K >= 2, got {tuple(probs.shape)}")
    k = probs.shape[1]
    return (k / (k - 1) * (probs.max(dim=1).values - 1.0 / k)).clamp(0.0, 1.0)


def _check_value(name: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Constant:
    """α(e) = value."""

    value: float

    def __post_init__(self) -> None:
        _check_value("value", self.value)

    def __call__(self, epoch: float) -> float:
        return self.value


@dataclass(frozen=True)
class Linear:
    """α goes linearly from ``start`` (epoch 0) to ``end`` (epoch ``epochs``), then stays at ``end``."""

    start: float
    end: float
    epochs: float

    def __post_init__(self) -> None:
        _check_value("start", self.start)
        _check_value("end", self.end)
        if not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs!r}")

    def __call__(self, epoch: float) -> float:
        t = min(max(epoch / self.epochs, 0.0), 1.0)
        return self.start + (self.end - self.start) * t


@dataclass(frozen=True)
class Exponential:
    """α approaches ``end`` from ``start`` exponentially: half the remaining gap closes every ``half_life`` epochs.

    α(e) = end + (start − end) · 2^(−e / half_life).
    """

    start: float
    end: float
    half_life: float = 25.0

    def __post_init__(self) -> None:
        _check_value("start", self.start)
        _check_value("end", self.end)
        if not (math.isfinite(self.half_life) and self.half_life > 0):
            raise ValueError(f"half_life must be a finite number > 0, got {self.half_life!r}")

    def __call__(self, epoch: float) -> float:
        return self.end + (self.start - self.end) * 0.5 ** (max(epoch, 0.0) / self.half_life)


#: Schedule names as the CLI and the configuration spell them (``--alpha-schedule``).
SCHEDULES = ("constant", "linear", "exp")


def make_schedule(
    kind: str, *, start: float, end: float, epochs: float, half_life: float = 25.0
) -> Constant | Linear | Exponential:
    """Build a schedule by name: ``constant`` (α = start), ``linear`` or ``exp``."""
    if kind == "constant":
        return Constant(start)
    if kind == "linear":
        return Linear(start, end, epochs)
    if kind == "exp":
        return Exponential(start, end, half_life)
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")


__all__ = ["confmix_alpha", "Constant", "Linear", "Exponential", "make_schedule", "SCHEDULES"]
