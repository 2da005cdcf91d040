"""Calibration: expected and maximum calibration error (equal-width confidence bins), NLL, Brier score,
and a reliability diagram."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


def _check(probs: Tensor, labels: Tensor) -> None:
    if not isinstance(probs, Tensor) or probs.dim() != 2 or probs.shape[0] == 0:
        raise ValueError(
            f"probs must be a (N, K) tensor of probabilities with N >= 1, got "
            f"{tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__}"
        )
    if not isinstance(labels, Tensor) or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"labels must be a (N,) tensor matching probs' {probs.shape[0]} rows, got "
            f"{tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__}"
        )


def _bins(probs: Tensor, labels: Tensor, bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per bin: (count, mean confidence, accuracy); bin b holds confidences in (b/B, (b+1)/B], bin 0 also 0."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
    confidence, predicted = probs.float().max(dim=1)
    correct = (predicted == labels).float()
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    count = torch.bincount(index, minlength=bins).float()
    conf_sum = torch.zeros(bins).index_add_(0, index, confidence)
    acc_sum = torch.zeros(bins).index_add_(0, index, correct)
    safe = count.clamp_min(1)
    return count, conf_sum / safe, acc_sum / safe


def expected_calibration_error(probs: Tensor, labels: Tensor, *, bins: int = 15) -> float:
    """``Σ_b (n_b / N)·|accuracy_b − confidence_b|`` over ``bins`` equal-width bins of the top-class confidence.

    Args:
        probs: (N, K) predicted probabilities. labels: (N,) int class indices.
    """
    _check(probs, labels)
    count, conf, acc = _bins(probs, labels, bins)
    return float((count / count.sum() * (acc - conf).abs()).sum())


def calibration(probs: Tensor, labels: Tensor, *, bins: int = 15) -> dict[str, float]:
    """ECE, MCE (the largest bin gap among non-empty bins), NLL (nats) and Brier score (Σ_k over classes)."""
    _check(probs, labels)
    count, conf, acc = _bins(probs, labels, bins)
    gaps = (acc - conf).abs()[count > 0]
    p = probs.float()
    true = p.gather(1, labels.long()[:, None]).squeeze(1)
    onehot = torch.zeros_like(p).scatter_(1, labels.long()[:, None], 1.0)
    return {
        "ece": float((count / count.sum() * (acc - conf).abs()).sum()),
        "mce": float(gaps.max()),
        "nll": float(-true.clamp_min(1e-12).log().mean()),
        "brier": float(((p - onehot) ** 2).sum(1).mean()),
    }


def reliability_diagram(
    probs: Tensor, labels: Tensor, path: str | Path, *, bins: int = 15, title: str = ""
) -> None:
    """Accuracy per confidence bin against the diagonal, the gap shaded, the ECE in the title; PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from multimix._io import atomic_write

    count, conf, acc = (t.numpy() for t in _bins(probs, labels, bins))
    ece = expected_calibration_error(probs, labels, bins=bins)
    centres = ((torch.arange(bins) + 0.5) / bins).numpy()
    shown = count > 0
    fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
    ax.bar(
        centres[shown],
        acc[shown],
        width=1 / bins,
        edgecolor="black",
        color="#4C72B0",
        label="accuracy",
    )
    ax.bar(
        centres[shown],
        (conf - acc)[shown],
        bottom=acc[shown],
        width=1 / bins,
        color="#C44E52",
        alpha=0.4,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"{title + ': ' if title else ''}ECE {100 * ece:.2f}%", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
