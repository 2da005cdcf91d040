"""Train / validation / test splits shared by every dataset."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import TensorDataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splits:
    """A dataset ready for training: three ``TensorDataset`` of ``(x float32, y int64)``.

    Attributes:
        name: dataset name as the CLI spells it.
        train: the training split.
        val: the validation split, carved from the original training set.
        test: the test split; the three are disjoint.
        num_classes: K.
        input_shape: shape of one example, without the batch dimension.
        augment: name of the train-time augmentation the trainer applies (None for none).
    """

    name: str
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    input_shape: tuple[int, ...]
    augment: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def stratified_split(y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices ``(keep, held_out)`` with ``held_out`` a stratified ``fraction`` of ``range(len(y))``.

    Stratified where it can be: every class present has 2 examples and each part has room for one of
    each class; a plain random split otherwise (``class_counts_of_split`` tells which classes a
    part then lacks).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction!r}")
    n_held = math.ceil(fraction * len(y))  # as scikit-learn rounds
    index = torch.arange(len(y)).numpy()
    stratify = y.numpy() if _stratifiable(y, n_held, len(y) - n_held) else None
    keep, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    return torch.as_tensor(keep).sort().values, torch.as_tensor(held).sort().values


def stratified_subset(y: Tensor, size: int, seed: int) -> Tensor:
    """Sorted indices of a stratified subset of ``size`` examples of ``range(len(y))`` (1 <= size < len(y))."""
    index = torch.arange(len(y)).numpy()
    stratify = y.numpy() if _stratifiable(y, size, len(y) - size) else None
    keep, _ = train_test_split(index, train_size=size, random_state=seed, stratify=stratify)
    return torch.as_tensor(keep).sort().values


def _stratifiable(y: Tensor, *part_sizes: int) -> bool:
    """Whether scikit-learn can stratify ``y`` into parts of these sizes: every class present has 2
    examples and every part room for one of each class (it raises otherwise)."""
    counts = torch.bincount(y)
    present = counts[counts > 0]
    return bool((present >= 2).all()) and min(part_sizes) >= len(present)


def split_indices(
    y: Tensor, *, val_fraction: float, seed: int, train_subset: int | None = None
) -> tuple[Tensor, Tensor]:
    """Indices into ``y`` of the training and validation parts ``make_splits`` makes: a stratified
    ``train_subset`` first (when it is less than ``len(y)``), then the stratified validation split."""
    index = torch.arange(len(y))
    if train_subset and train_subset < len(y):
        index = index[stratified_subset(y, train_subset, seed)]
    keep, held = stratified_split(y[index], val_fraction, seed)
    return index[keep], index[held]


def class_counts_of_split(
    y: Tensor, num_classes: int, *, val_fraction: float, seed: int, train_subset: int | None = None
) -> tuple[Tensor, Tensor]:
    """Examples of each class, int64 of shape (num_classes,), in the training and in the validation
    part of :func:`split_indices`: what a check before any work needs to know of the split."""
    keep, held = split_indices(y, val_fraction=val_fraction, seed=seed, train_subset=train_subset)
    return (
        torch.bincount(y[keep], minlength=num_classes),
        torch.bincount(y[held], minlength=num_classes),
    )


def make_splits(
    name: str,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    num_classes: int,
    val_fraction: float,
    seed: int,
    augment: str | None = None,
    info: dict[str, Any] | None = None,
    train_subset: int | None = None,
) -> Splits:
    """Carve a stratified validation split from the training data and wrap everything.

    ``train_subset``: first keep a stratified subset of this many training examples, drawn with
    ``seed`` (None or 0: all of them; more than there are: all, with a warning); the validation split
    is then carved from the subset.
    """
    if train_subset and train_subset > len(y_train):
        # A dataset's known size is checked before any work (multimix.data.check_subset); files smaller
        # than their release (a user's own, a test's) reach here: they are used whole.
        log.warning(
            "%s: train_subset %d is more than its %d training examples; using all of them",
            name,
            train_subset,
            len(y_train),
        )
    keep, held = split_indices(
        y_train, val_fraction=val_fraction, seed=seed, train_subset=train_subset
    )
    x_train, y_train = x_train.float(), y_train.long()
    return Splits(
        name=name,
        train=TensorDataset(x_train[keep], y_train[keep]),
        val=TensorDataset(x_train[held], y_train[held]),
        test=TensorDataset(x_test.float(), y_test.long()),
        num_classes=num_classes,
        input_shape=tuple(x_train.shape[1:]),
        augment=augment,
        info=info or {},
    )
