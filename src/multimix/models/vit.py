"""A small Vision Transformer (Dosovitskiy et al., 2021) for 28×28 and 32×32 images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class ViT(nn.Module):
    """Patch embedding (a p×p convolution of stride p), a class token, learned position embeddings,
    ``depth`` pre-norm encoder blocks, a final LayerNorm, and a linear head on the class token
    (``pool="cls"``) or on the mean of the patch tokens (``pool="mean"``).

    Named submodules: ``patch`` (the convolution), ``blocks.0 … blocks.{depth-1}`` (tokens (b, 1+T, d)
    in and out), ``norm`` (the token embedding (b, 1+T, d): Dense MultiMix's features, channels last,
    the class token first) and the classifier ``fc``. The default (d = 64, depth 4, 4 heads, patches
    of 4) has 0.14 M parameters and costs 13 MFLOPs per 28×28 image. Inputs (b, C, H, W) with H and W
    divisible by ``patch_size``.
    """

    classifier_layer = "fc"
    feature_layer = "norm"
    feature_layout = "channels_last"
    feature_prefix_tokens = 1  # the class token is not a position of the image

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        patch_size: int = 4,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: int = 2,
        pool: str = "cls",
    ):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(
                f"vit needs image inputs (C, H, W), got input shape {tuple(input_shape)}"
            )
        c, h, w = input_shape
        if h % patch_size or w % patch_size:
            raise ValueError(
                f"vit needs H and W divisible by patch_size={patch_size}, got input shape {tuple(input_shape)}"
            )
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.pool = pool
        self.patch = nn.Conv2d(c, dim, patch_size, stride=patch_size)
        tokens = (h // patch_size) * (w // patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + tokens, dim) * 0.02)
        self.blocks = nn.Sequential(
            *[
                nn.TransformerEncoderLayer(
                    dim,
                    heads,
                    dim_feedforward=mlp_ratio * dim,
                    dropout=0.0,
                    activation="gelu",
                    batch_first=True,
                    norm_first=True,
                )
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)
        self.manifold_layers = ["input"] + [f"blocks.{i}" for i in range(min(depth, 2))]

    def forward(self, x: Tensor) -> Tensor:
        patches = self.patch(x).flatten(2).transpose(1, 2)  # (b, T, d)
        tokens = (
            torch.cat([self.cls_token.expand(x.shape[0], -1, -1), patches], dim=1) + self.pos_embed
        )
        tokens = self.norm(self.blocks(tokens))
        return self.fc(tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(1))
