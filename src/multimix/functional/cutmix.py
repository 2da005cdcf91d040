"""CutMix (Yun et al., 2019): paste a random box (a segment, for 1-D inputs) from a partner example.

As in timm, the box's side is the image's times √(1 − λ) (for a segment, its length times 1 − λ),
its centre is uniform over the image, it is clipped at the borders, and λ is then corrected to the
exact share of the example's own pixels, so that the targets say what the input holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from multimix._deprecation import deprecated_alias
from multimix._validation import check_alpha, check_same_batch, check_tensor
from multimix.functional.pairwise import mix_pairs
from multimix.functional.sampling import _sampling_device, sample_beta
from multimix.functional.targets import check_targets


def _spatial_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """The positions a box is cut from: (H, W) of (b, C, H, W); L of (b, C, L) or of (b, L)."""
    if len(shape) == 4:
        return tuple(shape[2:])
    if len(shape) in (2, 3):
        return (shape[-1],)
    raise ValueError(
        f"cutmix needs inputs (b, C, H, W), (b, C, L) or (b, L); got shape {tuple(shape)}"
    )


def sample_cutmix(
    shape: Sequence[int],
    *,
    alpha: float = 1.0,
    per_sample: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sample one CutMix operation for a batch of inputs of ``shape``.

    Formerly ``cutmix_params`` (still importable, deprecated). ``alpha`` (λ ~ Beta(α, α), > 0)
    defaults to 1, as :func:`cutmix`'s and :class:`multimix.CutMix`'s.

    Returns:
        ``(mask, lam, perm)``: ``mask`` bool ``(b or 1, *spatial)``, True where the partner's values are
        pasted (one box for the whole batch unless ``per_sample``); ``lam`` float32 (b,), the exact
        share of each example's own positions, 1 − box area / total; ``perm`` int64 (b,), the partner
        permutation. Example i becomes ``where(mask[i], x[perm[i]], x[i])`` with targets
        ``lam[i] * y[i] + (1 - lam[i]) * y[perm[i]]``.
    """
    spatial = _spatial_shape(shape)
    b = int(shape[0])
    alpha = check_alpha(alpha)
    dev = _sampling_device(generator, device)
    k = b if per_sample else 1
    lam = sample_beta(k, alpha, generator=generator, device=dev)
    side = (1.0 - lam) ** (1.0 / len(spatial))  # the box's share of each side, so its area ≈ 1 − λ
    inside = torch.ones(k, *spatial, dtype=torch.bool, device=dev)
    area = torch.ones(k, device=dev)
    for axis, size in enumerate(spatial):
        half = (size * side).floor().long() // 2
        centre = torch.randint(0, size, (k,), generator=generator, device=dev)
        low, high = (centre - half).clamp(0, size), (centre + half).clamp(0, size)
        positions = torch.arange(size, device=dev)
        along = (positions >= low[:, None]) & (positions < high[:, None])  # (k, size)
        view = [k] + [1] * len(spatial)
        view[axis + 1] = size
        inside = inside & along.reshape(view)
        area = area * (high - low)
    lam = (1.0 - area / math.prod(spatial)).float().expand(b)
    perm = torch.randperm(b, generator=generator, device=dev)
    if device is not None and torch.device(device) != dev:
        inside, lam, perm = inside.to(device), lam.to(device), perm.to(device)
    return inside, lam, perm


def paste(x: Tensor, mask: Tensor, perm: Tensor) -> Tensor:
    """``x`` with each example's masked positions taken from its partner ``x[perm]`` (every channel)."""
    if x.shape[0] != perm.shape[0]:
        raise ValueError(
            f"x has batch size {x.shape[0]} but the mixing parameters are for {perm.shape[0]}"
        )
    if x.dim() in (3, 4):  # a channel axis between batch and positions
        mask = mask.unsqueeze(1)
    return torch.where(mask.to(x.device), x[perm.to(x.device)], x)


def cutmix(
    x: Tensor,
    targets: Tensor,
    *,
    alpha: float = 1.0,
    per_sample: bool = False,
    generator: torch.Generator | None = None,
    multi_label: bool = False,
) -> tuple[Tensor, Tensor]:
    """CutMix of inputs (b, C, H, W), (b, C, L) or (b, L) and their soft targets (b, K).

    The targets are mixed by the pasted area: ``lam[i] * y[i] + (1 - lam[i]) * y[perm[i]]`` with
    ``lam`` the exact share of the example's own positions (see :func:`sample_cutmix`).

    Args:
        x: the inputs; targets: (b, K) soft targets (use :func:`one_hot` for integer labels).
        alpha: λ ~ Beta(α, α), > 0; per_sample: one box per example instead of one per batch.
        multi_label: the targets are multi-label, entries in [0, 1] whose rows need not sum to 1
            (from ``one_hot(..., multi_label=True)``); they are mixed with the same weights.

    Returns:
        ``(x_mixed, targets_mixed)`` with the shapes of the inputs; any b >= 1.
    """
    check_tensor(x, "x")
    # rows of probabilities (or of per-class probabilities), as the mixers check
    check_targets(targets, multi_label=multi_label)
    check_same_batch(x, targets)
    mask, lam, perm = sample_cutmix(
        x.shape, alpha=alpha, per_sample=per_sample, generator=generator, device=x.device
    )
    return paste(x, mask, perm), mix_pairs(targets, lam, perm)


cutmix_params = deprecated_alias(sample_cutmix, "cutmix_params", where="multimix.functional")

__all__ = ["sample_cutmix", "paste", "cutmix"]
