"""Files written atomically, with the permissions a plain write would give them, and strict JSON.

Used by every layer that writes results (training, analysis, evaluation), so it sits below all of them.
A write that fails — a full disk, a quota, a file-size limit, a permission — raises an
:class:`OSError` naming the file that was being written (not the temporary file beside it), and leaves
the previous version of that file untouched.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def _new_file_mode(path: Path) -> int:
    """The permission bits a plain ``open(path, "w")`` would leave: the existing file's, else 0o666 − umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux says it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere os.umask can only be read by setting it; set it back at once.
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


class _WatchedFile:
    """A binary file that remembers the first :class:`OSError` its ``write`` raised.

    Writers such as ``torch.save`` turn the OSError of a failed write into their own RuntimeError
    ("unexpected pos ..."), which says nothing of the disk; remembered here, the real cause is raised.
    """

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it into place.

    A reader sees the old file or the whole new one, never part of one; the new file gets the
    permissions a plain write would give it (mkstemp's private 0600 would hide results from the
    other users of a shared machine). Any failure of the file system raises an :class:`OSError`
    whose ``filename`` is ``path``.
    """
    path = Path(path)
    tmp: str | None = None
    watched: _WatchedFile | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _new_file_mode(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            watched = _WatchedFile(f)
            write(watched)  # type: ignore[arg-type]  # a BinaryIO in all it is used for
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        cause = watched.error if watched is not None and watched.error is not None else exc
        if isinstance(cause, OSError):
            # OSError(errno, ...) is the subclass for that errno (PermissionError, ...)
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from exc
        raise


def json_safe(obj: Any) -> Any:
    """``obj`` with every float that is not finite (NaN, ±inf) replaced by None.

    JSON has no such numbers: Python's ``NaN``/``Infinity`` tokens are not JSON, and other readers
    (``jq``, browsers, pandas' strict mode) reject the file. None (``null``) says "no number here".
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def to_json(obj: Any, **kwargs: Any) -> str:
    """``obj`` as strict JSON (non-finite floats as null; see :func:`json_safe`); keys sorted."""
    return json.dumps(json_safe(obj), allow_nan=False, sort_keys=True, **kwargs)


def write_text(path: str | Path, text: str) -> None:
    """``text`` as UTF-8, written atomically. Undecodable bytes of a path read from the command line
    (``surrogateescape``, under a non-UTF-8 locale) are written back as the bytes they were."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8", "surrogateescape")))


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as strict, indented JSON (``to_json``), written atomically."""
    write_text(path, to_json(obj, indent=2) + "\n")


__all__ = ["atomic_write", "write_text", "write_json", "json_safe", "to_json"]
