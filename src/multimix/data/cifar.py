"""CIFAR-10 / CIFAR-100 from the official *binary* format in a local folder.

Record layout (Krizhevsky, 2009): CIFAR-10 records are 1 label byte + 3072 pixel bytes; CIFAR-100
records are 1 coarse-label byte + 1 fine-label byte + 3072 pixel bytes. Pixels are 3 planes (R, G, B)
of 32×32, row-major. Nothing is downloaded unless ``download=True``; the archive is then MD5-checked
and only the expected members are extracted (no arbitrary paths, no pickle).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from multimix.data.files import CorruptDataFile, DataFilesMissing, FileSummary, first_bad_label

log = logging.getLogger(__name__)

PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarSpec:
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_bytes: int  # bytes before the pixels; the label used is the last of them (fine label)
    num_classes: int
    url: str
    md5: str


SPECS = {
    "cifar10": CifarSpec(
        folder="cifar-10-batches-bin",
        train_files=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        test_files=("test_batch.bin",),
        label_bytes=1,
        num_classes=10,
        url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        md5="c32a1d4ab5d03f1284b67883e8d87530",
    ),
    "cifar100": CifarSpec(
        folder="cifar-100-binary",
        train_files=("train.bin",),
        test_files=("test.bin",),
        label_bytes=2,
        num_classes=100,
        url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        md5="03b5dce01913d631647c71ecec9e9cb8",
    ),
}

# Per-channel statistics of the CIFAR-10 training set, used to standardise inputs.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class CifarFilesMissing(DataFilesMissing):
    """The binary files are not in the data folder (and no download was asked for)."""


#: Classes of CIFAR-100's coarse label, the first of its two label bytes.
COARSE_CLASSES = 20


def read_binary(
    path: str | Path, *, label_bytes: int, num_classes: int | None = None
) -> tuple[Tensor, Tensor]:
    """Read one binary batch file; with ``num_classes``, every label byte is checked to be a class.

    Returns:
        ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``.
    """
    _record_count(Path(path), label_bytes)
    raw = np.fromfile(path, dtype=np.uint8)
    rows = raw.reshape(-1, label_bytes + PIXELS)
    if num_classes is not None:
        _check_labels(Path(path), rows[:, :label_bytes], num_classes)
    labels = torch.from_numpy(rows[:, label_bytes - 1].astype(np.int64))
    images = torch.from_numpy(rows[:, label_bytes:].copy()).reshape(-1, 3, 32, 32)
    return images, labels


def _record_count(path: Path, label_bytes: int) -> int:
    """Records in a binary batch file, told by its size; CorruptDataFile if the size is not a positive
    multiple of the record."""
    record = label_bytes + PIXELS
    size = path.stat().st_size
    if size == 0:
        raise CorruptDataFile(
            f"{path} is empty (0 bytes): it holds no records, and every CIFAR batch file holds some; "
            "put the official binary files in --data-dir (an interrupted copy or download?)"
        )
    if size % record:
        raise CorruptDataFile(
            f"{path} is not a CIFAR binary file: {size} bytes is not a positive multiple of the "
            f"{record}-byte record ({label_bytes} label byte(s) + {PIXELS} pixels)"
        )
    return size // record


def _check_labels(path: Path, label_rows: np.ndarray, num_classes: int) -> None:
    """Each record's label byte(s) (``label_rows``, (N, label_bytes)) in range, else CorruptDataFile
    naming the file, the record and its byte offset."""
    label_bytes = label_rows.shape[1]
    # CIFAR-100's first byte is its coarse label, the second the (fine) label used
    kinds = (
        [("label", num_classes)]
        if label_bytes == 1
        else [
            ("coarse label", COARSE_CLASSES),
            ("label", num_classes),
        ]
    )
    for column, (what, k) in enumerate(kinds):
        bad = first_bad_label(label_rows[:, column], k)
        if bad is not None:
            offset = bad * (label_bytes + PIXELS) + column
            raise CorruptDataFile(
                f"{path}: record {bad} (counting from 0; byte {offset}) has {what} "
                f"{int(label_rows[bad, column])}, expected one in [0, {k}); not a "
                f"{'CIFAR-10' if label_bytes == 1 else 'CIFAR-100'} file, or damaged?"
            )


def summarise(name: str, data_dir: str | Path) -> FileSummary:
    """What ``name``'s binary files hold, from their sizes (the record counts) and label bytes alone,
    checked as :func:`load` checks them, before any work.

    The label bytes are read through a memory map: one byte in 3073 is used, but the OS reads whole
    pages, so this reads the files once (~180 MB for CIFAR-10, under a second; the load then finds
    them in the page cache).
    """
    spec = SPECS[name]
    folder = find_folder(name, data_dir)
    record = spec.label_bytes + PIXELS
    labels, test_size = [], 0
    for f in spec.train_files + spec.test_files:
        path = folder / f
        count = _record_count(path, spec.label_bytes)
        rows = np.memmap(path, dtype=np.uint8, mode="r", shape=(count, record))
        label_rows = np.array(rows[:, : spec.label_bytes])
        del rows  # closes the map
        _check_labels(path, label_rows, spec.num_classes)
        if f in spec.train_files:
            labels.append(label_rows[:, -1].astype(np.int64))
        else:
            test_size += count
    return FileSummary(
        train_labels=np.concatenate(labels),
        test_size=test_size,
        train_source=f"{', '.join(spec.train_files)} in {folder}",
    )


def find_folder(name: str, data_dir: str | Path) -> Path:
    """The folder holding ``name``'s binary files: ``data_dir`` itself or ``data_dir/<official folder>``."""
    spec = SPECS[name]
    root = Path(data_dir).expanduser()
    for candidate in (root, root / spec.folder):
        if all((candidate / f).is_file() for f in spec.train_files + spec.test_files):
            return candidate
    expected = ", ".join(spec.train_files + spec.test_files)
    raise CifarFilesMissing(
        f"{name} binary files not found in {root} or {root / spec.folder} (expected {expected}). "
        f"Download the binary version from {spec.url} and extract it into {root}, "
        "or pass --download (with --data-dir) to fetch it, MD5-checked."
    )


def download(name: str, data_dir: str | Path) -> Path:
    """Fetch and extract the official archive into ``data_dir``; returns the folder of binary files."""
    spec = SPECS[name]
    root = Path(data_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = Path(tmp) / "archive.tar.gz"
        log.info("downloading %s", spec.url)
        try:
            with (
                urllib.request.urlopen(spec.url, timeout=60) as response,
                open(archive, "wb") as out,
            ):
                shutil.copyfileobj(response, out)
        except OSError as exc:
            raise CifarFilesMissing(f"could not download {spec.url}: {exc}") from exc
        digest = hashlib.md5(archive.read_bytes()).hexdigest()
        if digest != spec.md5:
            raise ValueError(f"{spec.url} has MD5 {digest}, expected {spec.md5}; not using it")
        staging = Path(tmp) / spec.folder
        staging.mkdir()
        wanted = set(spec.train_files + spec.test_files)
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                base = os.path.basename(member.name)
                if member.isfile() and base in wanted:
                    src = tar.extractfile(member)
                    assert src is not None  # a regular file's member always has a reader
                    with src, open(staging / base, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        target = root / spec.folder
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    return target


def check_files(name: str, data_dir: str | Path | None, *, download: bool = False) -> None:
    """Raise :class:`CifarFilesMissing`, saying what to do, unless the files are in ``data_dir`` or may
    be downloaded there. Reads nothing: a check to make before any work."""
    if data_dir is None:
        raise CifarFilesMissing(
            f"{name} needs --data-dir: a folder with the official binary files ({SPECS[name].folder}/)"
        )
    if not download:
        find_folder(name, data_dir)


def load(
    name: str, data_dir: str | Path | None, *, download_if_missing: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return ``(x_train, y_train, x_test, y_test)``: float32 (N, 3, 32, 32) standardised images.

    Every file is checked before use: a whole number of records, at least one, labels in range
    (:class:`CorruptDataFile` naming the file and the record)."""
    if name not in SPECS:
        raise ValueError(f"name must be one of {sorted(SPECS)}, got {name!r}")
    check_files(name, data_dir, download=download_if_missing)
    assert data_dir is not None  # check_files raised otherwise
    spec = SPECS[name]
    try:
        folder = find_folder(name, data_dir)
    except CifarFilesMissing:
        if not download_if_missing:
            raise
        folder = download(name, data_dir)

    def read_all(files: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        parts = [
            read_binary(folder / f, label_bytes=spec.label_bytes, num_classes=spec.num_classes)
            for f in files
        ]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    (xtr, ytr), (xte, yte) = read_all(spec.train_files), read_all(spec.test_files)
    return (xtr.float() / 255 - mean) / std, ytr, (xte.float() / 255 - mean) / std, yte
