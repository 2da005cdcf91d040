"""scikit-learn's bundled 8×8 handwritten digits (1797 images, 10 classes), as (1, 8, 8) images."""

from __future__ import annotations

import math

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

TEST_FRACTION = 0.2
SPLIT_SEED = 0  # the train/test split is fixed, whatever the run's seeds
NUM_EXAMPLES = 1797  # the size of scikit-learn's bundled set
TRAIN_SIZE = NUM_EXAMPLES - math.ceil(TEST_FRACTION * NUM_EXAMPLES)  # as train_test_split rounds


def load() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(x_train (N, 1, 8, 8), y_train, x_test, y_test)``, pixels scaled to [0, 1]."""
    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    train, test = train_test_split(
        torch.arange(len(y)).numpy(),
        test_size=TEST_FRACTION,
        random_state=SPLIT_SEED,
        stratify=y.numpy(),
    )
    train, test = torch.as_tensor(train), torch.as_tensor(test)
    return x[train], y[train], x[test], y[test]


def load_28x28() -> torch.Tensor:
    """All 1797 digits framed as MNIST's are, (1797, 1, 28, 28) in [0, 1]: each 8×8 image resized
    (bilinear) to 20×20 and centred in a 28×28 black frame, as MNIST centres its digits in a 20×20 box.

    A real handwritten-digit set that ships with scikit-learn, so a 28×28 model can be given
    digits as out-of-distribution inputs where MNIST's files are not at hand (no downloads).
    """
    x = torch.as_tensor(load_digits().data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    x = torch.nn.functional.interpolate(
        x, size=(20, 20), mode="bilinear", align_corners=False
    ).clamp_(0, 1)
    return torch.nn.functional.pad(x, (4, 4, 4, 4))
