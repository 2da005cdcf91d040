"""Small reference networks. Each names its submodules so any mixer can target them:

- ``model.classifier_layer``: the name of the final linear layer (MultiMix mixes its input);
- ``model.feature_layer``: the name of the spatial embedding before pooling, or None, and
  ``model.feature_layout``: ``"channels_first"`` ``(b, C, *positions)`` or ``"channels_last"`` ``(b, *positions, C)``,
  with ``model.feature_prefix_tokens`` leading positions that are not spatial (a ViT's class token);
- ``model.manifold_layers``: the default layers of manifold mixup ("input" included).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from multimix.models.cnn1d import CNN1d
from multimix.models.convnet import ConvNet
from multimix.models.mlp import MLP
from multimix.models.preactresnet import PreActResNet, PreActResNet18
from multimix.models.vit import ViT

#: Model names as the CLI spells them -> model classes.
MODELS = {
    "mlp": MLP,
    "cnn1d": CNN1d,
    "convnet": ConvNet,
    "preactresnet8": PreActResNet,
    "preactresnet18": PreActResNet18,
    "vit": ViT,
}

#: The model each dataset uses when none is named.
DEFAULT_MODEL = {
    "mnist1d": "cnn1d",
    "mnist1d-shuffled": "cnn1d",
    "digits": "convnet",
    "toy": "mlp",
    "spirals": "mlp",
    "fashion-mnist": "preactresnet8",
    "mnist": "preactresnet8",
    "kmnist": "preactresnet8",
    "cifar10": "preactresnet18",
    "cifar100": "preactresnet18",
}

__all__ = [
    "MODELS",
    "DEFAULT_MODEL",
    "build_model",
    "MLP",
    "CNN1d",
    "ConvNet",
    "PreActResNet",
    "PreActResNet18",
    "ViT",
]


def build_model(name: str, *, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Instantiate a reference model by name for inputs of ``input_shape`` (no batch dim)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}; got {name!r}")
    return MODELS[name](tuple(input_shape), num_classes)
