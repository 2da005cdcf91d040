"""Plots a person would rather look at than read: decision boundaries of 2-D classifiers."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn


@torch.no_grad()
def plot_decision_boundaries(
    models: dict[str, nn.Module],
    x: Tensor,
    y: Tensor,
    path: str | Path,
    *,
    resolution: int = 300,
    title: str | None = None,
) -> None:
    """One panel per model: predicted class over the plane, the points (x (n, 2), y (n,)) on top.

    Written atomically as PNG at ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from multimix._io import atomic_write

    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"x must be 2-D points (n, 2), got shape {tuple(x.shape)}")
    lo, hi = x.min(0).values - 0.2, x.max(0).values + 0.2
    gx, gy = torch.meshgrid(
        torch.linspace(lo[0], hi[0], resolution),
        torch.linspace(lo[1], hi[1], resolution),
        indexing="xy",
    )
    grid = torch.stack([gx.flatten(), gy.flatten()], dim=1)
    fig, axes = plt.subplots(
        1, len(models), figsize=(3.2 * len(models), 3.3), dpi=120, squeeze=False
    )
    for ax, (name, model) in zip(axes[0], models.items(), strict=True):
        model.eval()
        pred = model(grid).argmax(1).reshape(resolution, resolution)
        ax.contourf(gx, gy, pred, levels=int(y.max()) + 1, cmap="coolwarm", alpha=0.35)
        ax.scatter(x[:, 0], x[:, 1], c=y, cmap="coolwarm", s=4, edgecolors="none")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
