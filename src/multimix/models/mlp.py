"""The seed-2 toy network: input → 512 → 512 → 512 → K, ReLU between."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """Fully connected ReLU network.

    Named submodules: ``layer1 … layerL`` (Linear + ReLU; "mixing at layer k" mixes the output of
    ``layer{k}``, k = 0 is the input) and the classifier ``fc``. The embedding is ``layerL``'s output.
    Inputs of any shape (b, ...) are flattened.
    """

    classifier_layer = "fc"
    feature_layer = None  # no spatial map: Dense MultiMix does not apply
    feature_layout = "channels_first"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        hidden: Sequence[int] = (512, 512, 512),
    ):
        super().__init__()
        self.flatten = nn.Flatten()
        width = math.prod(input_shape)
        for i, h in enumerate(hidden, start=1):
            self.add_module(f"layer{i}", nn.Sequential(nn.Linear(width, h), nn.ReLU()))
            width = h
        self.depth = len(hidden)
        self.fc = nn.Linear(width, num_classes)
        self.manifold_layers = ["input"] + [f"layer{i}" for i in range(1, self.depth + 1)]

    def forward(self, x: Tensor) -> Tensor:
        h = self.flatten(x)
        for i in range(1, self.depth + 1):
            h = getattr(self, f"layer{i}")(h)
        return self.fc(h)
