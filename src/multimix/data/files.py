"""What every reader of dataset files shares: its two errors and a checksum-verified, atomic download."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class DataFilesMissing(FileNotFoundError):
    """A dataset's files are not where they were looked for; the message says where to put or get them."""


class CorruptDataFile(ValueError):
    """A dataset file is not in the format it should be in; the message names the file and the fault."""


@dataclass(frozen=True)
class FileSummary:
    """What a dataset's files hold, read without their pixels (headers, sizes, label bytes): enough to
    check a run's counts before any work.

    Attributes:
        train_labels: the training set's labels, int64 of shape (N,), in file order.
        test_size: examples in the test files.
        train_source: the training labels' file(s), as an error message names them.
    """

    train_labels: np.ndarray
    test_size: int
    train_source: str


def first_bad_label(labels: np.ndarray, num_classes: int) -> int | None:
    """The index of the first label outside [0, num_classes), or None when all are in range."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    return int(bad[0]) if bad.size else None


def md5sum(path: str | Path) -> str:
    """The MD5 of a file's bytes, as 32 lowercase hex digits (read in 1 MiB blocks)."""
    digest = hashlib.md5()  # the releases publish MD5s: integrity against corruption, not security
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(urls: Sequence[str], target: str | Path, *, md5: str, timeout: float = 60) -> Path:
    """Fetch the first of ``urls`` that answers into ``target``, atomically, if its MD5 is ``md5``.

    Each URL is a mirror of the same file. A file with another checksum is never kept: the error
    says which URL gave what. ``target``'s folder is created.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            log.info("downloading %s", url)
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(url, timeout=timeout) as response,
            ):
                shutil.copyfileobj(response, out)
            got = md5sum(tmp)
            if got != md5:
                failures.append(f"{url} has MD5 {got}, expected {md5}")
                continue
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
            return target
        except OSError as exc:  # URLError and HTTPError are OSErrors
            failures.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
        finally:
            Path(tmp).unlink(missing_ok=True)
    raise DataFilesMissing(f"could not download {target.name} ({'; '.join(failures)})")


__all__ = [
    "DataFilesMissing",
    "CorruptDataFile",
    "FileSummary",
    "first_bad_label",
    "md5sum",
    "download",
]
