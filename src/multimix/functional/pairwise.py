"""Pairwise mixup: sample (λ, partner permutation), apply to any batch-first tensor.

The formulas, defaults and references: docs/concepts/pairwise.md.
"""

from __future__ import annotations

import torch
from torch import Tensor

from multimix._deprecation import deprecated_alias
from multimix._validation import (
    check_alpha,
    check_int,
    check_same_batch,
    check_tensor,
)
from multimix.functional.sampling import _sampling_device, sample_beta
from multimix.functional.targets import check_targets


def sample_mixup(
    batch_size: int,
    *,
    alpha: float = 1.0,
    per_sample: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample the parameters of one pairwise mixup: mixing factors and a partner permutation.

    Formerly ``mixup_params`` (still importable, deprecated). ``alpha`` (Beta(α, α), > 0) defaults
    to 1, as :class:`multimix.Mixup`'s.

    Returns:
        ``(lam, perm)``: ``lam`` float32 (b,) — one value repeated when ``per_sample`` is False, one
        per pair otherwise — and ``perm`` int64 (b,), a random permutation π. Example i is mixed as
        ``lam[i] * x[i] + (1 - lam[i]) * x[perm[i]]``. Both are on ``device``.
    """
    b = check_int(batch_size, "batch_size")
    alpha = check_alpha(alpha)
    dev = _sampling_device(generator, device)
    lam = sample_beta(b if per_sample else 1, alpha, generator=generator, device=dev).expand(b)
    perm = torch.randperm(b, generator=generator, device=dev)
    if device is not None and torch.device(device) != dev:
        lam, perm = lam.to(device, non_blocking=True), perm.to(device, non_blocking=True)
    return lam, perm


def mix_pairs(x: Tensor, lam: Tensor, perm: Tensor) -> Tensor:
    """Apply pairwise mixing: ``lam[i] * x[i] + (1 - lam[i]) * x[perm[i]]`` for any x of shape (b, ...).

    ``lam`` is cast to x's dtype, so half-precision hidden states stay in half precision.
    """
    if x.shape[0] != perm.shape[0]:
        raise ValueError(
            f"x has batch size {x.shape[0]} but the mixing parameters are for {perm.shape[0]}"
        )
    weight = lam.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    # lerp(a, b, w) = a + w (b - a): one fused op, and exact when lam is 0 or 1.
    return torch.lerp(x[perm.to(x.device)], x, weight)


def mixup(
    x: Tensor,
    targets: Tensor,
    *,
    alpha: float = 1.0,
    per_sample: bool = False,
    generator: torch.Generator | None = None,
    multi_label: bool = False,
) -> tuple[Tensor, Tensor]:
    """Pairwise mixup of inputs (or hidden states) and their soft targets.

    The formulas and defaults: docs/concepts/pairwise.md.

    Args:
        x: (b, ...) any shape, batch first; any b >= 1.
        targets: soft targets (b, K); use :func:`one_hot` for integer labels.
        alpha: Beta(α, α) concentration, > 0; default 1, as :class:`multimix.Mixup`'s.
        per_sample: one λ per pair instead of one per batch.
        multi_label: the targets are multi-label, entries in [0, 1] whose rows need not sum to 1
            (from ``one_hot(..., multi_label=True)``); they are mixed with the same weights.

    Returns:
        ``(x_mixed, targets_mixed)`` with the shapes of the inputs.
    """
    check_tensor(x, "x")
    # rows of probabilities (or of per-class probabilities), as the mixers check
    check_targets(targets, multi_label=multi_label)
    check_same_batch(x, targets)
    lam, perm = sample_mixup(
        x.shape[0], alpha=alpha, per_sample=per_sample, generator=generator, device=x.device
    )
    return mix_pairs(x, lam, perm), mix_pairs(targets, lam, perm)


mixup_params = deprecated_alias(sample_mixup, "mixup_params", where="multimix.functional")
