"""Atomic checkpoint files that load without executing code.

``save`` writes to a temporary file in the same folder and renames it over the target, so a run
killed at any moment leaves either the previous checkpoint or the new one, never half of one.
``load`` first checks the file's integrity, then uses ``torch.load(weights_only=True)``: only tensors and
plain containers are accepted. torch.save writes a zip archive whose every record (the pickle, each
tensor's bytes) carries a CRC-32 that torch.load never checks: one flipped bit in a weight would load
as a different model. ``verify`` reads the records once and compares their checksums (the cost: one
more read of the file, ~20 ms for a 50 MB state whose pages the OS has cached).
"""

from __future__ import annotations

import zipfile
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
    "verify",
    "saved_config",
    "what_to_do",
    "first_line",
    "CheckpointError",
    "FORMAT",
    "VERSION",
    "READABLE_VERSIONS",
]

FORMAT = "multimix-checkpoint"
#: The version written. Version 2 is the layout of :meth:`multimix.train.state.RunState.state_dict`.
VERSION = 2
#: Versions read, where version 1 is brought to the current layout by :func:`multimix.train.state.upgrade`.
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


def what_to_do(path: str | Path) -> str:
    """The advice for a ``path`` that cannot be used, by its role in a run folder (told by its name).

    ``best.pt`` (the weights of the epoch chosen on validation) can be made again only by training the
    run again; the checkpoint of the last epoch can be put aside to start over.
    """
    if Path(path).name == "best.pt":
        return (
            "best.pt (the weights of the epoch chosen on validation) can be made again only by "
            "training the run again, with the same options, in another --out; meanwhile, with "
            "best.pt moved aside, `multimix evaluate` measures checkpoint.pt (the last epoch's weights)"
        )
    return "move it aside or delete it to start over"


def verify(path: str | Path) -> None:
    """Refuse a file that cannot be read, or a zip archive (torch.save's format) that is cut short or
    whose records fail their CRC-32 checksums, with a :class:`CheckpointError` naming the file.

    Files of another format (random bytes, torch's pre-1.6 pickles) pass: ``torch.load`` judges them.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:  # permissions, a folder, a file gone since it was listed
        raise CheckpointError(
            f"{path} cannot be read ({first_line(exc)}); check that it is a file this user may read"
        ) from None
    if not magic:
        raise CheckpointError(
            f"{path} is empty (0 bytes): a write or copy that never finished; {what_to_do(path)}"
        )
    if magic != b"PK\x03\x04":
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # the name of the first record whose CRC-32 fails, or None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{path} is damaged: cut short, or its zip structure is broken ({first_line(exc)}; "
            f"{path.stat().st_size} bytes); {what_to_do(path)}"
        ) from None
    if bad is not None:
        raise CheckpointError(
            f"{path} is damaged (record {bad} fails its CRC-32 checksum: its bytes changed after "
            f"it was written); {what_to_do(path)}"
        )


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint saved by :func:`save`, after :func:`verify`, never executing code from the file."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise CheckpointError(
            f"{path} is a symbolic link to {path.readlink()}, which does not exist; "
            "restore what it points to, or remove the link"
        )
    if path.exists() and not path.is_file():
        raise CheckpointError(
            f"{path} is a folder (or another kind of non-file), not a checkpoint; {what_to_do(path)}"
        )
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    verify(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # random bytes, a pickle with code in it, ...
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({first_line(exc)}); {what_to_do(path)}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a multimix checkpoint; {what_to_do(path)}")
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
