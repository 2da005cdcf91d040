"""Atomic checkpoint files that load without executing code.

``save`` writes to a temporary file in the same folder and renames it over the target, so a run
killed at any moment leaves either the previous checkpoint or the new one, never half of one.
``load`` uses ``torch.load(weights_only=True)``: only tensors and plain containers are accepted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from multimix._io import atomic_write, write_json, write_text
from multimix.train.config import ConfigError, TrainConfig

__all__ = [
    "atomic_write",
    "write_text",
    "write_json",
    "save",
    "load",
    "saved_config",
    "first_line",
    "CheckpointError",
    "FORMAT",
    "VERSION",
    "READABLE_VERSIONS",
]

FORMAT = "multimix-checkpoint"
#: The version written. Version 2 is the layout of :meth:`multimix.train.state.RunState.state_dict`.
VERSION = 2
#: Versions read: version 1 is brought to the current layout by :func:`multimix.train.state.upgrade`.
READABLE_VERSIONS = (1, 2)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not belong to the run being resumed."""


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
        raise CheckpointError(
            f"{path} is not a multimix checkpoint; move it aside or delete it to start over"
        )
    if state.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path} has checkpoint version {state.get('version')!r}, this multimix reads "
            f"{' and '.join(map(str, READABLE_VERSIONS))}; "
            "resume it with the version that wrote it, or move it aside to start over"
        )
    return state


def saved_config(state: dict[str, Any], path: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` a checkpoint was trained with, or CheckpointError if this version cannot
    read it (a key it does not know, a value it rejects): the file is at fault, not the user's options."""
    raw = state.get("config")
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"{path} holds no run configuration; move it aside or delete it to start over"
        )
    try:
        return TrainConfig.from_dict(raw, source="saved")
    except ConfigError as exc:
        raise CheckpointError(
            f"{path} was written by another version of multimix ({exc}); "
            "resume it with that version, or move it aside to start over"
        ) from None
