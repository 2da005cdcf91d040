"""Batched train-time augmentation on tensors, drawn from a seedable generator."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop_flip(
    x: Tensor, *, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """Random crop (after zero padding) and, if ``flip``, random horizontal flip of images (b, C, H, W).

    Every image gets its own offsets and flip; one gather, no loop over images.
    """
    b, _, h, w = x.shape
    dev = generator.device if generator is not None else x.device
    dy = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=dev).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=dev).to(x.device)
    cols = torch.arange(w, device=x.device).expand(b, w)
    if flip:
        flipped = (torch.rand(b, 1, generator=generator, device=dev) < 0.5).to(x.device)
        cols = torch.where(flipped, w - 1 - cols, cols)
    cols = cols + dx
    rows = torch.arange(h, device=x.device).expand(b, h) + dy
    padded = F.pad(x, (padding,) * 4)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (b, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


#: Train-time augmentations by name: CIFAR's pad-4 crop and flip; for 28×28 images a pad-2 crop, with
#: flips only where mirrored examples keep their class (clothes, not digits or kana).
AUGMENTATIONS: dict[str, Callable[..., Tensor]] = {
    "crop-flip": random_crop_flip,
    "pad-crop": functools.partial(random_crop_flip, padding=2, flip=False),
    "pad-crop-flip": functools.partial(random_crop_flip, padding=2),
}
