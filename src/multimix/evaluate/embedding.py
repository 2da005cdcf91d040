"""Geometry of the embedding space (Wang & Isola, 2020): alignment of same-class pairs and uniformity,
on ℓ2-normalised embeddings, and the embeddings a model feeds its classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multimix.mixers import find_module


def _normalised(z: Tensor) -> Tensor:
    if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(
            f"z must be (N, d) embeddings with N >= 2, got "
            f"{tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}"
        )
    return F.normalize(z.float(), dim=1)


def alignment(z: Tensor, labels: Tensor, *, alpha: float = 2.0) -> float:
    """Mean over same-class pairs i ≠ j of ‖ẑ_i − ẑ_j‖^α (lower: tighter classes)."""
    zn = _normalised(z)
    if labels.shape != z.shape[:1]:
        raise ValueError(f"labels must have shape ({z.shape[0]},), got {tuple(labels.shape)}")
    same = labels[:, None] == labels[None, :]
    same.fill_diagonal_(False)
    if not bool(same.any()):
        raise ValueError("alignment needs at least two examples of one class")
    return float(torch.cdist(zn, zn)[same].pow(alpha).mean())


def uniformity(z: Tensor, *, t: float = 2.0) -> float:
    """log of the mean over pairs i ≠ j of exp(−t‖ẑ_i − ẑ_j‖²) (lower: more uniformly spread)."""
    zn = _normalised(z)
    sq = torch.pdist(zn).pow(2)
    return float(torch.logsumexp(-t * sq, dim=0) - torch.log(torch.tensor(float(sq.numel()))))


@torch.no_grad()
def embeddings(
    model: nn.Module, x: Tensor, layer: str, *, batch_size: int = 1000, return_logits: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """The input of submodule ``layer`` (e.g. the classifier) for every example of x: (N, d), in eval mode.

    ``return_logits``: also the model's outputs (N, K) from the same forward passes.
    """
    module = find_module(model, layer, argument="layer")
    captured: list[Tensor] = []
    outputs: list[Tensor] = []
    handle = module.register_forward_pre_hook(
        lambda m, args: captured.append(args[0].detach().flatten(1).cpu())
    )
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        for start in range(0, len(x), batch_size):
            out = model(x[start : start + batch_size].to(device))
            if return_logits:
                outputs.append(out.detach().cpu())
    finally:
        handle.remove()
        model.train(was_training)
    return (torch.cat(captured), torch.cat(outputs)) if return_logits else torch.cat(captured)


__all__ = ["alignment", "uniformity", "embeddings"]
