"""MNIST, Fashion-MNIST and KMNIST from the IDX files of their original releases.

The four files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each gzipped or not) are looked for in ``data_dir`` itself, then in
``data_dir/<dataset name>``; without ``data_dir``, in the folders system packages install them to
(Debian's ``dataset-fashion-mnist`` puts Fashion-MNIST in /usr/share/datasets/fashion-mnist).
Nothing is downloaded unless asked; a download is MD5-checked against the release's published sums.

Images are float32 pixels in [0, 1], shape (N, 1, 28, 28): no normalisation here, so that attack
budgets are in pixel units; a model that wants standardised inputs standardises them itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from multimix.data import files
from multimix.data.files import CorruptDataFile, DataFilesMissing, FileSummary, first_bad_label
from multimix.data.idx import read_idx, read_idx_header

#: The four files of an IDX image release (each also found gzipped, with ``.gz``).
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
NUM_CLASSES = 10
TRAIN_SIZE, TEST_SIZE, SIDE = 60_000, 10_000, 28


@dataclass(frozen=True)
class IdxRelease:
    """Where a release lives: its mirrors (tried in order), the MD5s of its gzipped files, and the
    folders a system package installs it to."""

    mirrors: tuple[str, ...]
    md5: dict[str, str]
    system_dirs: tuple[str, ...] = ()
    package: str | None = None
    augment: str = "pad-crop"


#: The IDX image datasets, by the name the CLI uses, and where each is found.
RELEASES = {
    "mnist": IdxRelease(
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5={
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": IdxRelease(
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        package="dataset-fashion-mnist",
        augment="pad-crop-flip",  # clothes look the same mirrored; digits and kana do not
    ),
    "kmnist": IdxRelease(
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        md5={
            "train-images-idx3-ubyte": "bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte": "e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte": "5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte": "7320c461ea6c1c855c0b718fb2a4b134",
        },
    ),
}


def folders(name: str, data_dir: str | Path | None) -> list[Path]:
    """The folders searched for ``name``'s files, in order."""
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        return [root, root / name]
    return [Path(d) for d in RELEASES[name].system_dirs]


def find_files(name: str, data_dir: str | Path | None) -> dict[str, Path]:
    """The four files (plain or ``.gz``) from the first folder that holds them all."""
    for folder in folders(name, data_dir):
        found = {}
        for stem in FILES:
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    found[stem] = candidate
                    break
        if len(found) == len(FILES):
            return found
    release = RELEASES[name]
    looked = ", ".join(str(f) for f in folders(name, data_dir)) or "no folder (no --data-dir given)"
    package = f"install Debian's {release.package} package, or " if release.package else ""
    raise DataFilesMissing(
        f"{name} files not found (looked in {looked}; expected {', '.join(FILES)}, each gzipped or not): "
        f"{package}put them in --data-dir, or pass --download with --data-dir to fetch them from {release.mirrors[0]}"
    )


def check_files(name: str, data_dir: str | Path | None, *, download: bool = False) -> None:
    """Raise :class:`DataFilesMissing` unless :func:`load` will find or may download the files. Reads nothing."""
    if download:
        if data_dir is None:
            raise DataFilesMissing(
                f"--download needs --data-dir: the folder to download {name} into"
            )
        return
    find_files(name, data_dir)


def download(name: str, data_dir: str | Path) -> dict[str, Path]:
    """Fetch the four gzipped files into ``data_dir/<name>``, each MD5-checked and written atomically."""
    release = RELEASES[name]
    folder = Path(data_dir).expanduser() / name
    for stem in FILES:
        target = folder / f"{stem}.gz"
        if not (target.is_file() and files.md5sum(target) == release.md5[stem]):
            files.download(
                [m + f"{stem}.gz" for m in release.mirrors], target, md5=release.md5[stem]
            )
    return find_files(name, folder)


def load(
    name: str, data_dir: str | Path | None = None, *, download_if_missing: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return ``(x_train (60000, 1, 28, 28), y_train, x_test (10000, 1, 28, 28), y_test)``.

    Pixels float32 in [0, 1], labels int64 in [0, 10). Files are validated before use: IDX header,
    image shape, label range, as many labels as images, and at least one image in each set.
    """
    if name not in RELEASES:
        raise ValueError(f"name must be one of {sorted(RELEASES)}, got {name!r}")
    check_files(name, data_dir, download=download_if_missing)
    try:
        paths = find_files(name, data_dir)
    except DataFilesMissing:
        if not download_if_missing:
            raise
        assert data_dir is not None  # check_files refuses a download without a folder
        paths = download(name, data_dir)
    x_train, y_train = _pair(paths["train-images-idx3-ubyte"], paths["train-labels-idx1-ubyte"])
    x_test, y_test = _pair(paths["t10k-images-idx3-ubyte"], paths["t10k-labels-idx1-ubyte"])
    return x_train, y_train, x_test, y_test


def summarise(name: str, data_dir: str | Path | None) -> FileSummary:
    """What ``name``'s files hold, from their IDX headers and label files alone (a few kilobytes even
    for the full releases, where the images are ~50 MB): the same checks :func:`load` makes on them,
    before any work. Raises :class:`DataFilesMissing` or :class:`CorruptDataFile` naming the file."""
    paths = find_files(name, data_dir)
    labels = {}
    for split in ("train", "t10k"):
        images_path = paths[f"{split}-images-idx3-ubyte"]
        labels_path = paths[f"{split}-labels-idx1-ubyte"]
        dtype, shape = read_idx_header(images_path)
        _check_images(images_path, dtype, shape)
        dtype, count = read_idx_header(labels_path)
        _check_labels_shape(labels_path, dtype, count)
        _check_counts(images_path, shape[0], labels_path, count[0])
        labels[split] = _labels(labels_path)
    return FileSummary(
        train_labels=labels["train"].astype(np.int64),
        test_size=len(labels["t10k"]),
        train_source=str(paths["train-labels-idx1-ubyte"]),
    )


def _pair(images_path: Path, labels_path: Path) -> tuple[Tensor, Tensor]:
    images = read_idx(images_path)
    _check_images(images_path, images.dtype, images.shape)
    labels = _labels(labels_path)
    _check_counts(images_path, len(images), labels_path, len(labels))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def _check_images(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    if dtype != np.uint8 or len(shape) != 3 or shape[1:] != (SIDE, SIDE):
        raise CorruptDataFile(
            f"{path} holds {dtype} values of shape {shape}, "
            f"expected unsigned bytes of shape (N, {SIDE}, {SIDE})"
        )
    if shape[0] == 0:
        # An empty set would fail later, far from its cause (an empty split, a division by zero)
        role = "training" if path.name.startswith("train") else "test"
        raise CorruptDataFile(
            f"{path} holds no images (its IDX header announces shape {shape}), and the {role} set "
            f"needs at least one: put the release's {role} files in --data-dir"
        )


def _check_labels_shape(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    if dtype != np.uint8 or len(shape) != 1:
        raise CorruptDataFile(
            f"{path} holds {dtype} values of shape {shape}, expected unsigned bytes of shape (N,)"
        )


def _check_counts(images_path: Path, images: int, labels_path: Path, labels: int) -> None:
    if labels != images:
        raise CorruptDataFile(
            f"{labels_path} holds {labels} labels but {images_path} holds {images} images"
        )


def _labels(path: Path) -> np.ndarray:
    """The labels of an IDX label file, each checked to be a class."""
    labels = read_idx(path)
    _check_labels_shape(path, labels.dtype, labels.shape)
    bad = first_bad_label(labels, NUM_CLASSES)
    if bad is not None:
        raise CorruptDataFile(
            f"{path} holds label {int(labels[bad])} (record {bad}, counting from 0), expected labels "
            f"in [0, {NUM_CLASSES}); not this dataset's file?"
        )
    return labels


__all__ = [
    "RELEASES",
    "FILES",
    "folders",
    "find_files",
    "check_files",
    "download",
    "load",
    "summarise",
]
