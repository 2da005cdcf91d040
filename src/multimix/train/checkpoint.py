"""Atomic checkpoint files that load without executing code.

``save`` writes to a temporary file in the same folder and renames it over the target, so a run
killed at any moment leaves either the previous checkpoint or the new one, never half of one.
``load`` uses ``torch.load(weights_only=True)``: only tensors and plain containers are accepted.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import torch

from multimix.train.config import ConfigError, TrainConfig

FORMAT = "multimix-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not belong to the run being resumed."""


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


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it into place.

    A reader sees the old file or the whole new one, never part of one; the new file gets the
    permissions a plain write would give it (mkstemp's private 0600 would hide results from the
    other users of a shared machine).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Save a checkpoint dict (tensors, numbers, strings, lists, dicts) atomically."""
    atomic_write(path, lambda f: torch.save({"format": FORMAT, "version": VERSION, **state}, f))


def first_line(exc: BaseException, limit: int = 200) -> str:
    """``exc`` as one short line for an error message, even when its message is empty."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint saved by :func:`save`, never executing code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # empty or truncated file, random bytes, a pickle with code in it, ...
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({first_line(exc)}); move it aside or delete it to start over"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a multimix checkpoint; move it aside or delete it to start over")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {state.get('version')!r}, this multimix reads {VERSION}; "
            "resume it with the version that wrote it, or move it aside to start over"
        )
    return state


def saved_config(state: dict[str, Any], path: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` a checkpoint was trained with, or CheckpointError if this version cannot
    read it (a key it does not know, a value it rejects): the file is at fault, not the user's options."""
    raw = state.get("config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds no run configuration; move it aside or delete it to start over")
    try:
        return TrainConfig.from_dict(raw, source="saved")
    except ConfigError as exc:
        raise CheckpointError(
            f"{path} was written by another version of multimix ({exc}); "
            "resume it with that version, or move it aside to start over"
        ) from None
