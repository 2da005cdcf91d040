"""Many small MLPs trained at once: P problems' networks as stacked tensors, one batched step for all.

The seed-2 toy study trains thousands of 2-512-512-512-K networks on 1000 points each: one at a time,
the step is a few small matrix products and Python dominates. Stacking the P networks of P problems
(same K) as (P, ...) tensors makes every layer one batched product (``torch.baddbmm``), and one Adam on
the stacked tensors *is* P independent Adams: Adam is elementwise, and the summed loss gives each
network the gradient of its own loss. Each network keeps its own data order, its own λ and partner
permutation when mixing, and its own initialisation (taken from ``multimix.models.build_model``, so
that the stacked runs start where the one-model-at-a-time runs did).

Mixing at layer k (0 = the input, k = 1…L the output of hidden layer k, after its ReLU) follows
``multimix.ManifoldMixup`` with ``per_sample=True``: h ← λ h + (1 − λ) h[perm], targets alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multimix.functional import sample_beta


class StackedMLP:
    """P copies of an ``multimix.models.mlp.MLP`` architecture, as stacked leaf tensors.

    Args:
        models: P ``MLP`` instances of one shape; their current weights are the starting point.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        depth = models[0].depth
        self.depth = depth
        layers = [f"layer{i}.0" for i in range(1, depth + 1)] + ["fc"]
        self.weights, self.biases = [], []
        for name in layers:
            mods = [dict(m.named_modules())[name] for m in models]
            # Stored transposed, (P, in, out): h @ w then yields a gradient of w's own layout, which
            # autograd accumulates without the contiguous copy a transposed view's gradient needs.
            self.weights.append(
                torch.stack([m.weight.detach().t() for m in mods]).contiguous().requires_grad_()
            )
            self.biases.append(
                torch.stack([m.bias.detach() for m in mods]).clone().requires_grad_()
            )

    @property
    def parameters(self) -> list[Tensor]:
        return self.weights + self.biases

    @property
    def size(self) -> int:
        return self.weights[0].shape[0]

    def forward(self, x: Tensor, mix: tuple[int, Tensor, Tensor] | None = None) -> Tensor:
        """Logits (P, B, K) of x (P, B, D); ``mix = (k, λ (P, B), perm (P, B))`` mixes at layer k."""
        h = x
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if mix is not None and mix[0] == i:
                h = mix_rows(h, mix[1], mix[2])
            h = torch.baddbmm(b[:, None, :], h, w)
            if i < self.depth:
                h = F.relu(h)
        return h

    @torch.no_grad()
    def predict(self, x: Tensor, chunk: int = 8192) -> Tensor:
        """Predicted labels (P, N) of x (P, N, D), in chunks of N."""
        return torch.cat(
            [self.forward(x[:, i : i + chunk]).argmax(-1) for i in range(0, x.shape[1], chunk)],
            dim=1,
        )

    def load_into(self, models: Sequence[nn.Module]) -> None:
        """Copy network p's trained weights into ``models[p]``."""
        layers = [f"layer{i}.0" for i in range(1, self.depth + 1)] + ["fc"]
        with torch.no_grad():
            for p, model in enumerate(models):
                mods = dict(model.named_modules())
                for name, w, b in zip(layers, self.weights, self.biases, strict=True):
                    mods[name].weight.copy_(w[p].t())
                    mods[name].bias.copy_(b[p])


def mix_rows(h: Tensor, lam: Tensor, perm: Tensor) -> Tensor:
    """λ h + (1 − λ) h[perm] per network: h (P, B, d), λ (P, B), perm (P, B) indices into B."""
    partner = h.gather(1, perm[:, :, None].expand_as(h))
    return torch.lerp(partner, h, lam[:, :, None].to(h.dtype))


def train_stacked(
    net: StackedMLP,
    x: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    layer: int | None = None,
    alpha: float = 0.5,
    generator: torch.Generator | None = None,
    orders: Sequence[Sequence[Tensor]] | None = None,
    draws: Sequence[tuple[Tensor, Tensor]] | None = None,
) -> None:
    """Train the P networks on their own data: x (P, n, D), y (P, n) int labels.

    ``layer`` None trains ERM, else mixup at that layer with λ ~ Beta(α, α) per example and a random
    partner permutation, per network. Each epoch every network draws its own order of its n points.
    ``orders`` (epoch → (P, n) permutations) and ``draws`` (step → (λ, perm)) replace the draws, for
    tests that compare with networks trained one at a time.
    """
    P, n, _ = x.shape
    # fused: one kernel per tensor instead of ~10 elementwise passes; on these stacked (P, 512, 512)
    # tensors the unfused Adam was more than half of the step (memory-bound).
    opt = torch.optim.Adam(net.parameters, lr=lr, fused=True)
    targets = F.one_hot(y, num_classes).to(x.dtype)
    step = 0
    for epoch in range(epochs):
        order = (
            orders[epoch]
            if orders is not None
            else torch.rand(P, n, generator=generator).argsort(dim=1)
        )
        for start in range(0, n, batch_size):
            idx = order[:, start : start + batch_size]
            xb = x.gather(1, idx[:, :, None].expand(-1, -1, x.shape[2]))
            tb = targets.gather(1, idx[:, :, None].expand(-1, -1, num_classes))
            mix = None
            if layer is not None:
                if draws is not None:
                    lam, perm = draws[step]
                else:
                    b = idx.shape[1]
                    lam = sample_beta((P, b), alpha, generator=generator)
                    perm = torch.rand(P, b, generator=generator).argsort(dim=1)
                mix = (layer, lam, perm)
                tb = mix_rows(tb, lam, perm)
            logits = net.forward(xb, mix)
            # Each network's mean soft cross-entropy, summed: each gets its own loss's gradient.
            loss = -(tb * logits.log_softmax(-1)).sum(-1).mean(1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
