"""Datasets: every loader returns :class:`Splits` with train / validation / test.

>>> splits = load_dataset("mnist1d", data_seed=0)
>>> splits.train.tensors[0].shape    # (3600, 40): 10% of the 4000 training examples went to val
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

import torch

from multimix.data import cifar, digits, fingerprint, idx_images, mnist1d
from multimix.data.files import CorruptDataFile, DataFilesMissing, FileSummary
from multimix.data.splits import Splits, make_splits, split_indices, stratified_split
from multimix.data.toy import GaussianMixtureProblem, spirals

__all__ = [
    "DATASETS",
    "FILE_DATASETS",
    "DatasetInfo",
    "dataset_info",
    "check_files",
    "check_subset",
    "summarise_files",
    "data_fingerprint",
    "DataFilesMissing",
    "CorruptDataFile",
    "FileSummary",
    "Splits",
    "load_dataset",
    "split_indices",
    "stratified_split",
    "GaussianMixtureProblem",
    "spirals",
]

#: Dataset names as the CLI spells them.
DATASETS = (
    "mnist1d",
    "mnist1d-shuffled",
    "digits",
    "toy",
    "spirals",
    "fashion-mnist",
    "mnist",
    "kmnist",
    "cifar10",
    "cifar100",
)

#: Datasets read from files (``data_dir``), not generated: they may be missing.
FILE_DATASETS = ("fashion-mnist", "mnist", "kmnist", "cifar10", "cifar100")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is like, known without loading it: enough to check a run before any work.

    Attributes:
        input_shape: shape of one example, without the batch dimension.
        num_classes: K.
        train_size: examples in the training set, before the validation split; None where only
            reading the files would tell (CIFAR from a local folder).
    """

    input_shape: tuple[int, ...]
    num_classes: int
    train_size: int | None


def dataset_info(
    name: str,
    *,
    toy_classes: int = 3,
    toy_dim: int = 2,
    train_size: int = 1000,
    train_subset: int | None = None,
) -> DatasetInfo:
    """The :class:`DatasetInfo` of the dataset :func:`load_dataset` would load with these arguments.

    ``train_size`` is then the size of the training set used: a ``train_subset`` when there is one,
    as long as the whole set is not known to be smaller (:func:`check_subset` says when it is).
    """
    info = _full_info(name, toy_classes=toy_classes, toy_dim=toy_dim, train_size=train_size)
    if train_subset and (info.train_size is None or train_subset < info.train_size):
        return DatasetInfo(info.input_shape, info.num_classes, train_subset)
    return info


def check_subset(name: str, train_subset: int | None, **kwargs: int) -> None:
    """Raise ValueError if ``train_subset`` asks for more examples than ``name``'s training set is known to hold."""
    full = _full_info(name, **kwargs).train_size
    if train_subset and full is not None and train_subset > full:
        raise ValueError(
            f"train_subset must be at most the {full} training examples of {name}, got {train_subset}"
        )


def _full_info(
    name: str, *, toy_classes: int = 3, toy_dim: int = 2, train_size: int = 1000
) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    if name in ("mnist1d", "mnist1d-shuffled"):
        return DatasetInfo((mnist1d.LENGTH,), 10, mnist1d.TRAIN_SIZE)
    if name == "digits":
        return DatasetInfo((1, 8, 8), 10, digits.TRAIN_SIZE)
    if name == "toy":
        return DatasetInfo((toy_dim,), toy_classes, train_size)
    if name == "spirals":
        return DatasetInfo((2,), 2, train_size)
    if name in idx_images.RELEASES:  # all three releases hold 60 000 training images
        return DatasetInfo(
            (1, idx_images.SIDE, idx_images.SIDE), idx_images.NUM_CLASSES, idx_images.TRAIN_SIZE
        )
    return DatasetInfo((3, 32, 32), cifar.SPECS[name].num_classes, None)


def check_files(name: str, data_dir: str | None = None, *, download: bool = False) -> None:
    """Raise :class:`DataFilesMissing`, saying where to put or get them, unless ``name``'s files are
    found (or may be downloaded). Reads nothing; generated datasets always pass."""
    if name in cifar.SPECS:
        cifar.check_files(name, data_dir, download=download)
    elif name in idx_images.RELEASES:
        idx_images.check_files(name, data_dir, download=download)


def summarise_files(name: str, data_dir: str | None = None) -> FileSummary | None:
    """What ``name``'s files hold (the training labels, the test set's size), read without their
    pixels and checked as :func:`load_dataset` checks them; None for a generated dataset.

    Raises :class:`DataFilesMissing` if the files are not found, :class:`CorruptDataFile` naming the
    file (and record) at fault: a bad header, a size that does not fit it, an empty set, a label out
    of range, fewer labels than images.
    """
    if name in cifar.SPECS:
        if data_dir is None:
            cifar.check_files(name, data_dir)  # raises, saying --data-dir is needed
        assert data_dir is not None
        return cifar.summarise(name, data_dir)
    if name in idx_images.RELEASES:
        return idx_images.summarise(name, data_dir)
    return None


def data_fingerprint(name: str, data_dir: str | None, splits: Splits) -> dict[str, Any]:
    """What identifies the data of ``splits`` (loaded by :func:`load_dataset` with ``name`` and
    ``data_dir``): its files' contents, or a generated set's tensors (``multimix.data.fingerprint``)."""
    if name in cifar.SPECS:
        assert data_dir is not None  # load_dataset needs it
        spec = cifar.SPECS[name]
        folder = cifar.find_folder(name, data_dir)
        files = {f: folder / f for f in spec.train_files + spec.test_files}
        return fingerprint.of_files(name, data_dir, files)
    if name in idx_images.RELEASES:
        return fingerprint.of_files(name, data_dir, idx_images.find_files(name, data_dir))
    return fingerprint.of_tensors(
        name, {"train": splits.train, "val": splits.val, "test": splits.test}
    )


class _SplitArguments(TypedDict):
    """The arguments of ``make_splits`` that every dataset of :func:`load_dataset` shares."""

    val_fraction: float
    seed: int
    train_subset: int | None


def load_dataset(
    name: str,
    *,
    data_seed: int = 0,
    val_fraction: float = 0.1,
    data_dir: str | None = None,
    download: bool = False,
    toy_classes: int = 3,
    toy_components: int = 3,
    toy_dim: int = 2,
    train_size: int = 1000,
    test_size: int = 10_000,
    train_subset: int | None = None,
) -> Splits:
    """Load a dataset by name, with a stratified validation split carved from train.

    Args:
        name: one of :data:`DATASETS`.
        data_seed: seeds the validation split and, for ``toy``/``spirals``, the problem and samples.
            Runs of a comparison share it, so that they differ only by their training seed.
        val_fraction: fraction of the training set held out for validation (stratified).
        data_dir: folder of the dataset's files (CIFAR binaries, IDX files); for Fashion-MNIST,
            Debian's package folder is searched when it is None.
        download: for file datasets, fetch the official files (MD5-checked) when they are missing.
        toy_classes, toy_components, toy_dim: K, N and D of the ``toy`` Gaussian-mixture problem.
        train_size, test_size: sample sizes for ``toy`` and ``spirals``.
        train_subset: keep a stratified subset of this many training examples, drawn with
            ``data_seed``, before the validation split (None or 0: all); the test set stays whole.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    common = _SplitArguments(val_fraction=val_fraction, seed=data_seed, train_subset=train_subset)
    if name in ("mnist1d", "mnist1d-shuffled"):
        xtr, ytr, xte, yte = mnist1d.load(shuffled=name.endswith("shuffled"))
        return make_splits(name, xtr, ytr, xte, yte, num_classes=10, **common)
    if name == "digits":
        xtr, ytr, xte, yte = digits.load()
        return make_splits(name, xtr, ytr, xte, yte, num_classes=10, **common)
    if name == "toy":
        problem = GaussianMixtureProblem.random(
            toy_classes, toy_components, dim=toy_dim, seed=data_seed
        )
        g = torch.Generator().manual_seed(data_seed + 1)
        xtr, ytr = problem.sample(train_size, generator=g)
        xte, yte = problem.sample(test_size, generator=g)
        return make_splits(
            name, xtr, ytr, xte, yte, num_classes=toy_classes, info={"problem": problem}, **common
        )
    if name == "spirals":
        g = torch.Generator().manual_seed(data_seed)
        xtr, ytr = spirals(train_size, generator=g)
        xte, yte = spirals(test_size, generator=g)
        return make_splits(name, xtr, ytr, xte, yte, num_classes=2, **common)
    if name in idx_images.RELEASES:
        xtr, ytr, xte, yte = idx_images.load(name, data_dir, download_if_missing=download)
        return make_splits(
            name,
            xtr,
            ytr,
            xte,
            yte,
            num_classes=idx_images.NUM_CLASSES,
            augment=idx_images.RELEASES[name].augment,
            **common,
        )
    xtr, ytr, xte, yte = cifar.load(name, data_dir, download_if_missing=download)
    return make_splits(
        name,
        xtr,
        ytr,
        xte,
        yte,
        num_classes=cifar.SPECS[name].num_classes,
        augment="crop-flip",
        **common,
    )
