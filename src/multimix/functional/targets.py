"""Targets: integer labels to soft rows, and the cross-entropy against soft targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from multimix._validation import check_int, check_soft_targets, check_tensor


def one_hot(
    labels: Tensor,
    num_classes: int | None,
    *,
    smoothing: float = 0.0,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Turn integer labels (b,) into float targets (b, K), or validate soft targets (b, K).

    Args:
        labels: integer class indices of shape (b,) in ``[0, num_classes)``, or soft targets of
            shape (b, K): non-negative rows that sum to 1.
        num_classes: K. Required for integer labels; for soft targets, when given, it must match.
        smoothing: label smoothing ε in [0, 1): the result is ``(1 - ε) * targets + ε / K``.
        dtype: floating dtype of the result; default ``torch.get_default_dtype()`` for integer
            labels and the input's dtype for soft targets.

    Returns:
        Float tensor (b, K) whose rows lie on the probability simplex.
    """
    check_tensor(labels, "labels")
    if not 0.0 <= float(smoothing) < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    if num_classes is not None:
        num_classes = check_int(num_classes, "num_classes", low=1)

    if labels.is_floating_point():
        check_soft_targets(labels, "labels")
        if num_classes is not None and labels.shape[1] != num_classes:
            raise ValueError(
                f"soft labels have {labels.shape[1]} classes but num_classes={num_classes}"
            )
        targets = labels if dtype is None else labels.to(dtype)
        num_classes = labels.shape[1]
    else:
        if labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(
                f"labels must be integer class indices or float soft targets, got {labels.dtype}"
            )
        if labels.dim() != 1:
            raise ValueError(
                f"integer labels must have shape (b,), got shape {tuple(labels.shape)}"
            )
        if num_classes is None:
            raise ValueError("num_classes is required when labels are integer class indices")
        if labels.device.type == "cpu":
            low_t, high_t = torch.aminmax(labels)
            low, high = int(low_t), int(high_t)
            if low < 0 or high >= num_classes:
                bad = low if low < 0 else high
                raise ValueError(
                    f"labels must lie in [0, {num_classes}) for num_classes={num_classes}, got {bad}"
                )
        # A scatter of ones into zeros, in the target dtype: two ops where one_hot + cast are more.
        # On a GPU it needs no check on the host (reading the labels back would wait for the device
        # at every step): a label out of range stops it with a device-side assertion, as torch's own
        # one_hot does there.
        targets = torch.zeros(
            labels.shape[0],
            num_classes,
            dtype=dtype or torch.get_default_dtype(),
            device=labels.device,
        )
        targets = targets.scatter_(1, labels.long()[:, None], 1.0)

    return _smooth(targets, smoothing, num_classes)


def _smooth(targets: Tensor, smoothing: float, num_classes: int) -> Tensor:
    """Label smoothing: (1 − ε)·targets + ε/K (the targets themselves for ε = 0)."""
    if smoothing > 0:
        targets = targets * (1.0 - smoothing) + smoothing / num_classes
    return targets


#: Below this many classes, :func:`soft_cross_entropy` on the CPU takes its log-softmax across rows.
_CPU_LASTDIM_MIN_K = 16


def class_major_is_faster(num_classes: int, device: torch.device) -> bool:
    """Whether many (N, K) rows of logits or targets are best stored class-major, (K, N), here.

    True on the CPU for K < 16 (fewer classes than an AVX-512 vector of floats): there PyTorch's
    log-softmax over the last dimension, and any elementwise op broadcasting over it, run K values
    at a time, too few to fill a vector, while over the N rows they run in long contiguous loops.
    :func:`soft_cross_entropy` then works on the transpose, and DenseMultiMix lays its many mixed
    rows out class-major. ``benchmarks/results/overhead_floor.md`` measures that loss's share of a
    step ("ERM, 10 000-row loss"); no result file compares the two layouts side by side, a case
    ``benchmarks/functional_ops.py`` would hold.
    """
    return device.type == "cpu" and num_classes < _CPU_LASTDIM_MIN_K


def soft_cross_entropy(logits: Tensor, targets: Tensor, *, reduction: str = "mean") -> Tensor:
    """Cross-entropy against soft targets: ``-Σ_c targets[:, c] · log_softmax(logits)[:, c]``.

    Args:
        logits: (N, K) unnormalised scores.
        targets: (N, K) probability rows (any floating dtype; cast to the logits' dtype).
        reduction: "mean" (over rows), "sum" or "none" (returns (N,)).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")
    check_tensor(logits, "logits", min_dim=2)
    check_soft_targets(targets, values=False)
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must have the same shape (N, K), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    targets = targets.to(logits.dtype)
    if logits.dim() == 2 and class_major_is_faster(logits.shape[1], logits.device):
        # On the CPU a log-softmax over fewer classes than an AVX-512 vector of floats cannot fill
        # a vector: each row's K values are a loop too short to vectorise. Seen as (1, K, N), the
        # same sums run over dim 1 and vectorise across the N rows, forward and backward, best of all
        # when the logits are stored class-major (DenseMultiMix's on the CPU). Same values up to
        # rounding; a view, no copy of the logits. Measured: see class_major_is_faster.
        loss = F.cross_entropy(
            logits.t().unsqueeze(0), targets.t().unsqueeze(0), reduction=reduction
        )
        return loss.squeeze(0) if reduction == "none" else loss
    # torch's cross_entropy accepts class probabilities as targets (a fused log-softmax + dot).
    return F.cross_entropy(logits, targets, reduction=reduction)
