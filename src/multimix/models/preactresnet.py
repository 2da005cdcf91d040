"""Pre-activation ResNets (He et al., 2016): ResNet-18 as used by manifold mixup and MultiMix, and a
small one for 28×28 and 32×32 images, cheap enough to train on Fashion-MNIST on a CPU (its cost per
step and per epoch: ``benchmarks/results/model_cost.md``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn


class PreActBlock(nn.Module):
    """BN-ReLU-conv ×2 with an identity (or 1×1 conv) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    """A small pre-activation ResNet: a 3×3 stem, three stages (widths w, 2w, 4w; strides 1, 2, 2) of
    ``blocks`` pre-activation blocks each, BN-ReLU, global average pooling, a linear classifier.

    The default (w = 32, one block per stage: 8 weight layers, 308 k parameters) costs 74 MFLOPs per
    28×28 image forward; w = 16 costs 19 MFLOPs. Their time per step and per Fashion-MNIST epoch on
    a CPU: ``benchmarks/results/model_cost.md`` (``benchmarks/model_cost.py``). Any image size; 1 or
    3 channels.

    Named submodules: ``conv1``, ``layer1 … layer3``, ``final`` (the spatial embedding, (b, 4w, H/4, W/4)),
    ``pool`` and the classifier ``fc``.
    """

    classifier_layer = "fc"
    feature_layer = "final"
    feature_layout = "channels_first"
    manifold_layers: ClassVar[list[str]] = ["input", "layer1", "layer2"]
    # Registered in __init__ with add_module; declared here for the type checker only.
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, *, width: int = 32, blocks: int = 1
    ):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(
                f"preactresnet8 needs image inputs (C, H, W), got input shape {tuple(input_shape)}"
            )
        self.conv1 = nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False)
        cin = width
        for i, (mult, stride) in enumerate([(1, 1), (2, 2), (4, 2)], start=1):
            cout = width * mult
            stage = [PreActBlock(cin, cout, stride)] + [
                PreActBlock(cout, cout, 1) for _ in range(blocks - 1)
            ]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            cin = cout
        self.final = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(self.pool(self.final(h)))


class PreActResNet18(nn.Module):
    """PreAct ResNet-18 for 32×32 images (28×28 and 1 channel work too). Named submodules:
    ``conv1``, ``layer1 … layer4``, ``final`` (BN + ReLU: the spatial embedding, (b, 512, H/8, W/8)),
    ``pool`` ((b, 512)) and the classifier ``fc``."""

    classifier_layer = "fc"
    feature_layer = "final"
    feature_layout = "channels_first"
    manifold_layers: ClassVar[list[str]] = ["input", "layer1", "layer2"]
    # Registered in __init__ with add_module; declared here for the type checker only.
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, width: int = 64):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(
                f"preactresnet18 needs image inputs (C, H, W), got input shape {tuple(input_shape)}"
            )
        self.conv1 = nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False)
        cin = width
        for i, (mult, stride) in enumerate([(1, 1), (2, 2), (4, 2), (8, 2)], start=1):
            cout = width * mult
            self.add_module(
                f"layer{i}",
                nn.Sequential(PreActBlock(cin, cout, stride), PreActBlock(cout, cout, 1)),
            )
            cin = cout
        self.final = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(x)
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))
        return self.fc(self.pool(self.final(h)))
