"""Targets: integer labels to soft rows, and the cross-entropies against soft targets.

Single-label targets are probability rows (one class per example); multi-label targets are rows of
independent per-class probabilities in [0, 1] (``one_hot(..., multi_label=True)``), trained with
:func:`soft_binary_cross_entropy`.
"""

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
    multi_label: bool = False,
) -> Tensor:
    """Turn integer labels (b,) into float targets (b, K), or validate soft targets (b, K).

    Args:
        labels: integer class indices of shape (b,) in ``[0, num_classes)``, or soft targets of
            shape (b, K): non-negative rows that sum to 1. With ``multi_label=True``, also
            multi-hot or soft multi-label targets (b, K): every entry in [0, 1], rows summing to
            anything (a bool or integer (b, K) indicator matrix of 0s and 1s is accepted too).
        num_classes: K. Required for integer labels; for soft targets, when given, it must match.
        smoothing: label smoothing ε in [0, 1): the result is ``(1 - ε) * targets + ε / K``.
            In multi-label mode the same formula applies entrywise, as timm's binary
            cross-entropy smooths its targets: a present label becomes 1 − ε + ε/K, an absent one
            ε/K.
        dtype: floating dtype of the result; default ``torch.get_default_dtype()`` for integer
            labels and the input's dtype for soft targets.
        multi_label: the labels are multi-label targets (each class present or not, independently)
            rather than one class per example: see ``labels``.

    Returns:
        Float tensor (b, K): rows on the probability simplex, or with ``multi_label=True`` entries
        in [0, 1] (rows not renormalised).
    """
    check_tensor(labels, "labels")
    if not 0.0 <= float(smoothing) < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    if num_classes is not None:
        num_classes = check_int(num_classes, "num_classes", low=1)

    if labels.is_floating_point() or (multi_label and labels.dim() == 2):
        targets = _validated_soft(labels, num_classes, dtype, multi_label=multi_label)
    else:
        if labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(
                f"labels must be integer class indices or float soft targets, got {labels.dtype}"
            )
        if labels.dim() != 1:
            raise ValueError(
                f"integer labels must have shape (b,), got shape {tuple(labels.shape)}"
                + ("" if multi_label else "; pass multi_label=True for a (b, K) multi-hot matrix")
            )
        if num_classes is None:
            raise ValueError("num_classes is required when labels are integer class indices")
        targets = _scatter_one_hot(labels, num_classes, dtype)

    return _smooth(targets, smoothing, targets.shape[1])


def _validated_soft(
    labels: Tensor, num_classes: int | None, dtype: torch.dtype | None, *, multi_label: bool
) -> Tensor:
    """Soft (or, in multi-label mode, multi-hot) targets (b, K), checked and cast to ``dtype``."""
    if multi_label:
        if labels.is_complex():
            raise TypeError(f"multi-label labels must be real, got {labels.dtype}")
        if not labels.is_floating_point():  # a bool or integer indicator matrix
            labels = labels.to(dtype or torch.get_default_dtype())
        check_multi_label_targets(labels, "labels")
    else:
        try:
            check_soft_targets(labels, "labels")
        except ValueError as err:
            if "sum to 1" not in str(err):
                raise
            raise ValueError(f"{err}; for multi-label targets pass multi_label=True") from err
    if num_classes is not None and labels.shape[1] != num_classes:
        raise ValueError(
            f"soft labels have {labels.shape[1]} classes but num_classes={num_classes}"
        )
    return labels if dtype is None else labels.to(dtype)


def _scatter_one_hot(labels: Tensor, num_classes: int, dtype: torch.dtype | None) -> Tensor:
    """One-hot rows (b, K) of integer class indices (b,), checked on the CPU."""
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
    return targets.scatter_(1, labels.long()[:, None], 1.0)


def check_multi_label_targets(
    targets: Tensor, name: str = "targets", *, values: bool = True
) -> Tensor:
    """Check ``targets`` is a floating (b, K) tensor of multi-label targets: entries in [0, 1].

    Rows need not sum to 1. With ``values=False`` only the shape and dtype are checked (reading
    the values synchronises with the device).
    """
    check_tensor(targets, name)
    if not targets.is_floating_point():
        raise TypeError(
            f"{name} must be multi-label targets of floating dtype with shape (b, K), got dtype "
            f"{targets.dtype}; convert a multi-hot matrix with "
            "multimix.functional.one_hot(labels, num_classes, multi_label=True)"
        )
    if targets.dim() != 2:
        raise ValueError(f"{name} must have shape (b, K), got shape {tuple(targets.shape)}")
    if values:
        _check_unit_interval(targets, f"multi-label {name}")
    return targets


def _check_unit_interval(targets: Tensor, name: str) -> None:
    """Raise unless every entry of ``targets`` is a finite number in [0, 1] (reads the values)."""
    if not bool(torch.isfinite(targets).all()):
        raise ValueError(f"{name} must be finite, got NaN or infinite entries")
    low, high = (float(v) for v in torch.aminmax(targets.detach().float()))
    if low < 0.0 or high > 1.0:
        bad = f"a minimum of {low:.4g}" if low < 0.0 else f"a maximum of {high:.4g}"
        raise ValueError(f"every entry of {name} must lie in [0, 1], got {bad}")


def check_targets(targets: Tensor, *, multi_label: bool, name: str = "targets") -> Tensor:
    """The functional mixing ops' check: probability rows, or multi-label rows in [0, 1]."""
    if multi_label:
        return check_multi_label_targets(targets, name)
    return check_soft_targets(targets, name)


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


def soft_binary_cross_entropy(
    logits: Tensor, targets: Tensor, *, reduction: str = "mean"
) -> Tensor:
    """Binary cross-entropy with logits against soft multi-label targets in [0, 1].

    Each class is an independent yes/no question:
    ``ℓ(x, t) = -[t · log σ(x) + (1 - t) · log(1 - σ(x))]`` per entry, computed stably (as
    ``max(x, 0) - x·t + log(1 + exp(-|x|))``) by torch's
    :func:`~torch.nn.functional.binary_cross_entropy_with_logits`, which this equals for every
    reduction. With mixed targets ``t = λ y_i + (1 - λ) y_j`` it equals
    ``λ ℓ(x, y_i) + (1 - λ) ℓ(x, y_j)``: mixing the targets is mixing the losses, as for
    :func:`soft_cross_entropy`.

    Args:
        logits: (N, K) unnormalised per-class scores (or (N, ..., K), e.g. per position).
        targets: floating tensor of the logits' shape, every entry in [0, 1] (multi-hot, smoothed
            or mixed; rows need not sum to 1); cast to the logits' dtype. On the CPU the values
            are checked; on an accelerator only the shape and dtype (reading values back would
            wait for the device at every step).
        reduction: "mean" (the default): the mean over all N·K entries, rows and classes, as
            torch's and timm's BCE (so the scale does not grow with K; the sum over classes
            averaged over rows is K times it); "sum" over all entries; "none": the (N, K) entries.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")
    check_tensor(logits, "logits", min_dim=2)
    if not logits.is_floating_point():
        raise TypeError(f"logits must be of floating dtype, got {logits.dtype}")
    check_tensor(targets, "targets")
    if not targets.is_floating_point():
        raise TypeError(
            f"targets must be of floating dtype with values in [0, 1], got dtype {targets.dtype}; "
            "convert a multi-hot matrix with one_hot(labels, num_classes, multi_label=True)"
        )
    if logits.shape != targets.shape:
        raise ValueError(
            "logits and targets must have the same shape (N, K), "
            f"got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    if targets.device.type == "cpu":
        _check_unit_interval(targets, "targets")
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction=reduction)
