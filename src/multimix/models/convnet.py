"""The seed-2 small CNN: conv32 → conv64 → fc64 → fc K."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn


class ConvNet(nn.Module):
    """Two conv blocks (3×3 conv, ReLU, 2×2 max-pool), a 64-unit hidden layer, a linear classifier.

    Named submodules: ``conv1``, ``conv2`` (its output is what "manifold mixing before the first fully
    connected layer" mixes), ``fc1`` (Linear + ReLU, the 64-d embedding) and ``fc``.
    Input: images (b, C, H, W) with H, W divisible by 4.
    """

    classifier_layer = "fc"
    feature_layer = None  # no spatial map: Dense MultiMix does not apply
    feature_layout = "channels_first"
    manifold_layers: ClassVar[list[str]] = ["input", "conv1", "conv2", "fc1"]

    def __init__(self, input_shape: Sequence[int], num_classes: int):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(
                f"convnet needs image inputs (C, H, W), got input shape {tuple(input_shape)}"
            )
        c, h, w = input_shape
        self.conv1 = nn.Sequential(nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.flatten = nn.Flatten()
        self.fc1 = nn.Sequential(nn.Linear(64 * (h // 4) * (w // 4), 64), nn.ReLU())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.fc1(self.flatten(self.conv2(self.conv1(x)))))
