"""multimix: embedding-space mixup for PyTorch.

Mixers wrap any ``nn.Module`` and mix at a named submodule::

    from multimix import MultiMix, soft_cross_entropy
    mixer = MultiMix(model, classifier="fc", num_classes=10)
    logits, targets = mixer(x, y)          # (n, K) each in training mode
    loss = soft_cross_entropy(logits, targets)

The pure tensor operations live in :mod:`multimix.functional`.
"""

import logging

from multimix import functional
from multimix.functional import one_hot, soft_binary_cross_entropy, soft_cross_entropy
from multimix.mixers import (
    ConfMix,
    CutMix,
    DenseMultiMix,
    ManifoldMixup,
    Mixer,
    Mixup,
    MixupOrCutMix,
    MultiMix,
    OneOf,
    find_module,
)
from multimix.teacher import EMATeacher

__version__ = "0.1.0"

__all__ = [
    "functional",
    "one_hot",
    "soft_cross_entropy",
    "soft_binary_cross_entropy",
    "Mixup",
    "ManifoldMixup",
    "ConfMix",
    "CutMix",
    "MixupOrCutMix",
    "OneOf",
    "MultiMix",
    "DenseMultiMix",
    "EMATeacher",
    "Mixer",
    "find_module",
]

# Library code never prints; applications decide where log records go.
logging.getLogger(__name__).addHandler(logging.NullHandler())
