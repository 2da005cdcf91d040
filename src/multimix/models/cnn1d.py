"""A small 1-D CNN for MNIST-1D: three Conv1d blocks, global average pooling, a linear classifier."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn


class CNN1d(nn.Module):
    """Conv1d ×3 → average over positions → ``fc``.

    Named submodules: ``features.conv1 … features.conv3`` (Conv1d + ReLU), ``features`` (the spatial
    embedding, (b, C, L)), ``pool`` (its mean over positions, (b, C)) and ``fc``. Because ``fc`` is
    linear and follows a mean, applying it at every position and averaging gives the same logits:
    that is what lets Dense MultiMix classify each position.

    Input: (b, L) sequences or (b, 1, L).
    """

    classifier_layer = "fc"
    feature_layer = "features"
    feature_layout = "channels_first"
    manifold_layers: ClassVar[list[str]] = ["input", "features.conv1", "features.conv2", "features"]

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, channels: int = 64):
        super().__init__()
        in_ch = 1 if len(input_shape) == 1 else input_shape[0]

        def block(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv1d(cin, cout, kernel, stride=stride, padding=kernel // 2), nn.ReLU()
            )

        self.features = nn.Sequential(
            OrderedDict(
                conv1=block(in_ch, channels, 5, 2),
                conv2=block(channels, channels, 3, 2),
                conv3=block(channels, channels, 3, 1),
            )
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.fc(self.pool(self.features(x)))
