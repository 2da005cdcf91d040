"""The IDX file format of MNIST and its successors (LeCun et al.), gzipped or not.

Layout: two zero bytes, a type byte, the number of dimensions n, then n big-endian uint32 sizes, then
the values, big-endian, in row-major order. Every check is made before the data is used, and every
error names the file.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from multimix.data.files import CorruptDataFile

#: IDX type byte -> NumPy dtype (big-endian where it matters).
DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (gzip recognised by its magic bytes, whatever the name)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise CorruptDataFile(
                f"{path} is not a readable gzip file ({exc}); truncated download?"
            ) from None
    dtype, shape = _parse_header(path, raw)
    header = 4 + 4 * len(shape)
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        raise CorruptDataFile(
            f"{path} holds {len(raw) - header} bytes of values, expected {expected} for shape "
            f"{shape} of {dtype.name}; truncated or not this dataset's file?"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def read_idx_header(path: str | Path) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """The dtype and shape an IDX file announces, read from its first bytes only (a gzipped file is
    decompressed no further than its header): what the file holds, known without reading it.

    A plain file's size is checked against the header too; a gzipped one's values are checked when it
    is read (:func:`read_idx`).
    """
    path, gzipped = Path(path), False
    try:
        with path.open("rb") as f:
            gzipped = f.read(2) == _GZIP_MAGIC
        opener = gzip.open if gzipped else open
        with opener(path, "rb") as f:
            head = f.read(4)
            head += f.read(4 * head[3]) if len(head) == 4 else b""
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptDataFile(
            f"{path} is not a readable {'gzip' if gzipped else 'IDX'} file ({exc}); truncated download?"
        ) from None
    dtype, shape = _parse_header(path, head)
    if not gzipped:
        expected = 4 + 4 * len(shape) + math.prod(shape) * dtype.itemsize
        size = path.stat().st_size
        if size != expected:
            raise CorruptDataFile(
                f"{path} is {size} bytes, expected {expected} for its header's shape {shape} of "
                f"{dtype.name}; truncated or not this dataset's file?"
            )
    return dtype, shape


def _parse_header(path: Path, raw: bytes) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """The dtype and shape of the IDX header at the start of ``raw`` (CorruptDataFile naming ``path``)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in DTYPES or raw[3] == 0:
        raise CorruptDataFile(
            f"{path} is not an IDX file: its magic number is {raw[:4].hex() or 'missing'}, "
            "expected 0000 followed by a type byte (08 for unsigned bytes) and a dimension count"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDataFile(
            f"{path}: the IDX header announces {ndim} dimensions but the file ends before them"
        )
    return DTYPES[raw[2]], tuple(struct.unpack(f">{ndim}I", raw[4:header]))


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file; gzipped if ``compress`` (default: when the name ends in .gz)."""
    path = Path(path)
    array = np.asarray(array)
    code = next(
        (
            c
            for c, d in DTYPES.items()
            if (d.kind, d.itemsize) == (array.dtype.kind, array.dtype.itemsize)
        ),
        None,
    )
    if code is None:
        raise ValueError(
            f"array must have one of the IDX dtypes {[d.name for d in DTYPES.values()]}, got {array.dtype}"
        )
    data = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(DTYPES[code], copy=False).tobytes()
    if path.name.endswith(".gz") if compress is None else compress:
        data = gzip.compress(data)
    path.write_bytes(data)


__all__ = ["read_idx", "read_idx_header", "write_idx", "DTYPES"]
