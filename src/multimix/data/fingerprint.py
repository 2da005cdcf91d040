"""What identifies the data a run trained on, so that a run resumed on other data is refused.

A fingerprint is a plain dict (it is saved in the checkpoint, which holds only plain containers):

.. code-block:: text

    version    of this layout (fingerprints of another version are not compared)
    dataset    the dataset's name
    data_dir   the folder given (absolute; the one the files were found in without one), or None for
               a generated dataset: shown in messages, never compared
    files      file datasets: per file, by its name in the release (gz or not):
               {"name": path under data_dir, "bytes": size on disk, "sha256": of its contents}
    tensors    generated datasets: {"train", "val", "test": sha256 of the split's tensors}

Files are compared by the SHA-256 of their contents (a gzipped IDX file's decompressed bytes: the same
data gzipped or not is the same data), never by where they are: the same files moved or copied to
another folder, or machine, resume.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any

from torch.utils.data import TensorDataset

#: The layout :func:`of_files` and :func:`of_tensors` write.
VERSION = 1
_GZIP_MAGIC = b"\x1f\x8b"


def of_files(name: str, data_dir: str | Path | None, paths: dict[str, Path]) -> dict[str, Any]:
    """The fingerprint of ``name``'s files ``paths`` (keyed by their name in the release).

    Cost: one read of every file (the page cache usually holds them, as they were just loaded) and a
    SHA-256 over it, ~0.1 s for the 50 MB of an MNIST-family release, ~0.3 s for CIFAR's 180 MB; once
    per run start.
    """
    # Without data_dir the files were found in a system folder (Debian's): messages name that one
    first = next(iter(paths.values()))
    root = (first.parent if data_dir is None else Path(data_dir).expanduser()).resolve()
    files = {}
    for key, path in sorted(paths.items()):
        shown = path.resolve()
        if shown.is_relative_to(root):
            shown = shown.relative_to(root)
        files[key] = {
            "name": str(shown),
            "bytes": path.stat().st_size,
            "sha256": content_sha256(path),
        }
    return {
        "version": VERSION,
        "dataset": name,
        "data_dir": str(root),
        "files": files,
    }


def of_tensors(name: str, splits: dict[str, TensorDataset]) -> dict[str, Any]:
    """The fingerprint of a generated dataset: the SHA-256 of each split's tensors (their dtype, shape
    and bytes), which also tells a generator that changed between versions of a library."""
    tensors = {}
    for split, dataset in splits.items():
        digest = hashlib.sha256()
        for t in dataset.tensors:
            digest.update(f"{t.dtype} {tuple(t.shape)};".encode())
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        tensors[split] = digest.hexdigest()
    return {"version": VERSION, "dataset": name, "data_dir": None, "tensors": tensors}


def content_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's contents, decompressed if it is gzipped (1 MiB blocks)."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == _GZIP_MAGIC
    digest = hashlib.sha256()
    with gzip.open(path, "rb") if gzipped else open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, one phrase each ('X: before vs now'); empty when they
    identify the same data, or when either is of another layout (nothing to compare them by)."""
    if before.get("version") != VERSION or now.get("version") != VERSION:
        return []
    if before.get("dataset") != now.get("dataset"):
        return [f"dataset: {before.get('dataset')} vs {now.get('dataset')}"]
    out = []
    if "files" in before or "files" in now:
        old, new = before.get("files", {}), now.get("files", {})
        for key in sorted(old.keys() | new.keys()):
            a, b = old.get(key), new.get(key)
            if a is None or b is None or a["sha256"] != b["sha256"]:
                out.append(f"{key}: {_describe(a)} vs {_describe(b)}")
    old_t, new_t = before.get("tensors", {}), now.get("tensors", {})
    for split in sorted(old_t.keys() | new_t.keys()):
        if old_t.get(split) != new_t.get(split):
            out.append(
                f"the generated {split} set: sha256 {str(old_t.get(split))[:12]} vs "
                f"{str(new_t.get(split))[:12]}"
            )
    return out


def _describe(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "no such file"
    return f"{entry['name']} ({entry['bytes']} bytes, sha256 {entry['sha256'][:12]})"


__all__ = ["VERSION", "of_files", "of_tensors", "content_sha256", "differences"]
