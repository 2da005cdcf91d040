"""Draw docs/figures/hull.png: where pairwise mixup and MultiMix put their mixed points.

    python docs/figures/hull.py [OUT.png]

Eight embeddings of a mini-batch in 2-D (three classes). Pairwise mixup (left) mixes each example with
one partner: its points lie on the segments between pairs. MultiMix (right) draws n = 1000 rows of
Dirichlet weights over tuples of the batch (here the whole batch, α = 0.5): its points spread over the
convex hull of the batch. The sampling is the library's own (``multimix.functional``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Polygon

from multimix.functional import sample_mixup, sample_multimix_weights

OUT = Path(__file__).with_name("hull.png")
COLOURS = ["tab:blue", "tab:orange", "tab:green"]


def _hull(points: torch.Tensor) -> torch.Tensor:
    """The convex hull of 2-D points, counter-clockwise (Andrew's monotone chain)."""
    pts = sorted(map(tuple, points.tolist()))

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    upper: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return torch.tensor(lower[:-1] + upper[:-1])


def draw(out: Path = OUT) -> Path:
    g = torch.Generator().manual_seed(3)
    z = torch.rand(8, 2, generator=g) * 2 - 1  # a batch of b = 8 embeddings
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    colour = [COLOURS[int(c)] for c in y]

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharex=True, sharey=True)
    # Pairwise mixup: one λ per example, partners by a random permutation, many draws.
    pair_points = []
    for _ in range(125):
        lam, perm = sample_mixup(8, alpha=1.0, per_sample=True, generator=g)
        pair_points.append(lam[:, None] * z + (1 - lam[:, None]) * z[perm])
    pairs = torch.cat(pair_points)
    # MultiMix: n = 1000 rows of Λ over the whole batch (m = b, α = 0.5).
    lam_matrix = sample_multimix_weights(8, n=1000, m=None, alpha=0.5, generator=g)
    mixed = lam_matrix @ z

    hull = _hull(z)
    for ax, points, title in (
        (axes[0], pairs, "pairwise mixup: segments between pairs"),
        (axes[1], mixed, "MultiMix: the convex hull of the batch"),
    ):
        ax.add_patch(Polygon(hull.numpy(), closed=True, fill=True, alpha=0.08, color="grey"))
        ax.scatter(points[:, 0], points[:, 1], s=3, color="0.35", alpha=0.5, linewidths=0)
        ax.scatter(z[:, 0], z[:, 1], s=70, c=colour, edgecolors="black", zorder=3)
        ax.set_title(title, fontsize=11)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("8 embeddings of a mini-batch (colour: class) and 1000 mixed points", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(draw(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
