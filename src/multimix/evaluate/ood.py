"""Out-of-distribution detection: scores from logits, AUROC, AUPR and the FPR at a given TPR.

Convention: a higher score means "in-distribution". In-distribution examples are the positives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import Tensor

#: Scores as the metrics below take them: a tensor, an array or a sequence of numbers, any shape.
Scores = Tensor | np.ndarray | Sequence[float]

#: Scores computed from logits of shape (N, K), by name. They are the maximum softmax probability
#: (the MultiMix paper's), maximum logit, and the negative energy logsumexp(logits) (Liu et al., 2020).
OOD_SCORES: dict[str, Callable[[Tensor], Tensor]] = {
    "msp": lambda logits: torch.softmax(logits.float(), dim=1).max(dim=1).values,
    "max-logit": lambda logits: logits.float().max(dim=1).values,
    "energy": lambda logits: torch.logsumexp(logits.float(), dim=1),
}


def ood_score(logits: Tensor, kind: str = "msp") -> Tensor:
    """The out-of-distribution score ``kind`` (one of :data:`OOD_SCORES`) of logits (N, K): (N,), higher
    means more in-distribution."""
    if kind not in OOD_SCORES:
        raise ValueError(f"kind must be one of {', '.join(OOD_SCORES)}, got {kind!r}")
    return OOD_SCORES[kind](logits)


def _arrays(in_scores: Scores, out_scores: Scores) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(torch.as_tensor(in_scores).detach().cpu().double()).ravel()
    b = np.asarray(torch.as_tensor(out_scores).detach().cpu().double()).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError(
            f"in_scores and out_scores must both be non-empty, got {a.size} and {b.size}"
        )
    return a, b


def auroc(in_scores: Scores, out_scores: Scores) -> float:
    """Area under the ROC curve: the probability that an in-distribution score beats an OOD one (ties: ½)."""
    a, b = _arrays(in_scores, out_scores)
    return float(roc_auc_score(np.r_[np.ones(a.size), np.zeros(b.size)], np.r_[a, b]))


def aupr(in_scores: Scores, out_scores: Scores) -> float:
    """Average precision with the in-distribution examples as positives."""
    a, b = _arrays(in_scores, out_scores)
    return float(average_precision_score(np.r_[np.ones(a.size), np.zeros(b.size)], np.r_[a, b]))


def fpr_at_tpr(in_scores: Scores, out_scores: Scores, tpr: float = 0.95) -> float:
    """The lowest false-positive rate among thresholds that keep a true-positive rate of at least ``tpr``.

    Exact over every threshold (each distinct in-distribution score; "in" means score >= threshold), so
    ties are counted as they fall — ROC helpers that drop intermediate points can overstate it.
    """
    if not 0.0 < float(tpr) <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr!r}")
    a, b = _arrays(in_scores, out_scores)
    thresholds = np.unique(a)  # ascending; a threshold above every in-score keeps no positive
    tprs = 1.0 - np.searchsorted(np.sort(a), thresholds, side="left") / a.size
    fprs = 1.0 - np.searchsorted(np.sort(b), thresholds, side="left") / b.size
    return float(fprs[tprs >= tpr - 1e-12].min())


#: Out-of-distribution sets made from the test inputs themselves (another dataset can be added by the caller).
OOD_SETS = ("gaussian", "uniform", "shuffled")


def make_ood(x: Tensor, kind: str, *, generator: torch.Generator | None = None) -> Tensor:
    """An out-of-distribution set shaped like the in-distribution inputs ``x`` (N, ...).

    ``gaussian``: N(mean, std²) of x's values, clipped to x's range; ``uniform``: uniform over x's range;
    ``shuffled``: each example's values randomly permuted (same values, no structure).
    """
    if kind not in OOD_SETS:
        raise ValueError(f"kind must be one of {', '.join(OOD_SETS)}, got {kind!r}")
    lo, hi = float(x.min()), float(x.max())
    if kind == "gaussian":
        noise = torch.randn(x.shape, generator=generator) * float(x.std()) + float(x.mean())
        return noise.clamp(lo, hi).to(x.dtype)
    if kind == "uniform":
        return (torch.rand(x.shape, generator=generator) * (hi - lo) + lo).to(x.dtype)
    flat = x.reshape(x.shape[0], -1)
    order = torch.argsort(torch.rand(flat.shape, generator=generator), dim=1)
    return flat.gather(1, order).reshape(x.shape)


__all__ = ["OOD_SCORES", "OOD_SETS", "ood_score", "make_ood", "auroc", "aupr", "fpr_at_tpr"]
