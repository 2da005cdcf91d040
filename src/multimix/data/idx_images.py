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
from multimix.data.files import CorruptDataFile, DataFilesMissing
from multimix.data.idx import read_idx

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
    image shape, label range, and as many labels as images.
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


def _pair(images_path: Path, labels_path: Path) -> tuple[Tensor, Tensor]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise CorruptDataFile(
            f"{images_path} holds {images.dtype} values of shape {images.shape}, "
            f"expected unsigned bytes of shape (N, {SIDE}, {SIDE})"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise CorruptDataFile(
            f"{labels_path} holds {labels.dtype} values of shape {labels.shape}, "
            "expected unsigned bytes of shape (N,)"
        )
    if len(labels) != len(images):
        raise CorruptDataFile(
            f"{labels_path} holds {len(labels)} labels but {images_path} holds {len(images)} images"
        )
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise CorruptDataFile(
            f"{labels_path} holds label {int(labels.max())}, expected labels in [0, {NUM_CLASSES})"
        )
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


__all__ = ["RELEASES", "FILES", "folders", "find_files", "check_files", "download", "load"]
