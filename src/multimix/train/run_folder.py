"""The run folder: every file a run writes, in what order, and which process writes it.

A run's folder (``--out``) holds

- ``.lock``          held while the run is alive (:mod:`.runlock`): one run per folder;
- ``config.yaml``    the configuration, with the values the run actually used (defaults resolved);
- ``best.pt``        the model's weights at the epoch chosen on validation accuracy;
- ``checkpoint.pt``  the run's whole state (:class:`~multimix.train.state.RunState`), every epoch;
- ``metrics.jsonl``  one JSON line per epoch, derived from the checkpoint's history;
- ``summary.json``   the final figures, once the run has finished: ``best`` (the epoch chosen on
  validation accuracy, the run's result), ``final`` (the last epoch), ``best_test_over_epochs``
  (the highest test accuracy of any epoch, the papers' optimistic convention; null unless the
  test set was measured every epoch, absent from summaries of earlier versions), the time per epoch.

Every file is written atomically (a temporary file renamed over the target), and in an order that a
kill at any moment cannot make lose anything: ``best.pt`` before the checkpoint (a resumed run
redoes the epoch and rewrites it), the checkpoint before the metrics derived from it. Under torchrun
rank 0 alone holds the lock and writes; the methods here are no-ops on the other ranks, and what
rank 0 reads is broadcast to them.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor

from multimix._io import to_json
from multimix.train import checkpoint, distributed
from multimix.train.checkpoint import CheckpointError
from multimix.train.config import ConfigError, TrainConfig
from multimix.train.runlock import FolderInUse, RunLock

#: Errors rank 0 may meet when it opens the folder, re-raised on every rank by name.
_OPEN_ERRORS = {e.__name__: e for e in (ConfigError, CheckpointError, FolderInUse)}


class RunFolder:
    """The files of one run in ``path``, written by rank 0 of ``world``."""

    def __init__(self, path: str | Path, world: distributed.Dist) -> None:
        self.path = Path(path)
        self.world = world
        self.checkpoint_path = self.path / "checkpoint.pt"

    @property
    def writes(self) -> bool:
        """Whether this process writes (rank 0)."""
        return self.world.is_main

    # -- opening --------------------------------------------------------------------------

    def open(
        self, config: TrainConfig, *, resume: bool, stack: contextlib.ExitStack
    ) -> dict[str, Any] | None:
        """Lock the folder for the lifetime of ``stack`` and read the checkpoint to continue from (None
        for a new run). Rank 0 does both; every rank learns the outcome, so an error there ends every
        process with the same message instead of leaving them waiting."""
        outcome: tuple[str, Any] = ("ok", None)
        if self.writes:
            try:
                stack.enter_context(RunLock(self.path))
                outcome = ("ok", self._resume_state(config, resume))
            except tuple(_OPEN_ERRORS.values()) as exc:
                if self.world.world_size == 1:
                    raise
                outcome = ("error", (type(exc).__name__, str(exc)))
        shared: tuple[str, Any] = distributed.broadcast_object(outcome, self.world)  # type: ignore[assignment]
        status, value = shared
        if status == "error":
            name, message = value
            raise _OPEN_ERRORS[name](message)
        return value

    def _resume_state(self, config: TrainConfig, resume: bool) -> dict[str, Any] | None:
        """The checkpoint to continue from (checked against ``config``), or None for a new run."""
        out, ckpt_path = self.path, self.checkpoint_path
        if not ckpt_path.exists():
            if not resume:
                return None
            started = (
                " (a run started there but stopped before its first epoch ended)"
                if (out / "config.yaml").exists()
                else ""
            )
            raise ConfigError(
                f"nothing to resume in {out}: it holds no checkpoint.pt{started}; "
                "to start a new run there, leave out --resume"
            )
        if not resume:
            raise ConfigError(
                f"{out} already holds a run (checkpoint.pt); pass --resume to continue it, "
                "or choose another --out"
            )
        state = checkpoint.load(ckpt_path)
        saved = checkpoint.saved_config(state, ckpt_path)
        best = self.path / "best.pt"
        if best.exists() or best.is_symlink():
            # Read only at the end (to test the chosen epoch): a damaged one is found now, not then
            checkpoint.verify(best)
        if config.epochs != saved.epochs:
            why = (
                "its cosine learning-rate schedule spans all its epochs"
                if saved.scheduler == "cosine"
                else "the number of epochs is part of what defines a run"
            )
            raise ConfigError(
                f"cannot resume {out} with epochs {config.epochs}: it was started for {saved.epochs} epochs, and "
                f"{why}, so a run stretched to {config.epochs} would not be the run asked for. To train for "
                f"{config.epochs} epochs, start a new run (same options, --epochs {config.epochs}, another --out)"
            )
        if diffs := config.differences(saved):
            raise CheckpointError(
                f"{ckpt_path} belongs to a run with other settings (given vs saved): {'; '.join(diffs)}. "
                "A run resumes with the settings it started with: give --resume and --out alone, "
                "or start a new run in another --out"
            )
        return state

    def mismatch(self, exc: BaseException) -> CheckpointError:
        """The error for a checkpoint whose contents do not fit the run built from its configuration."""
        return CheckpointError(
            f"{self.checkpoint_path} does not match this run ({checkpoint.first_line(exc, 300)}); "
            "move it aside or delete it to start over"
        )

    # -- writing ----------------------------------------------------------------------------

    def write_config(self, values: dict[str, Any]) -> None:
        """``config.yaml``: the run's configuration, as the values it uses."""
        if self.writes:
            self.path.mkdir(parents=True, exist_ok=True)
            checkpoint.write_text(
                self.path / "config.yaml", yaml.safe_dump(values, sort_keys=False)
            )

    def save_epoch(self, state: dict[str, Any], *, improved: bool) -> None:
        """After an epoch: ``best.pt`` if the epoch is the best on validation so far, then the checkpoint
        ``state``, then the metrics derived from its history — in that order (see the module's doc)."""
        if not self.writes:
            return
        if improved:
            checkpoint.save(
                self.path / "best.pt",
                {
                    "config": state["config"],
                    "model": state["model"],
                    "epoch": len(state["history"]),
                },
            )
        checkpoint.save(self.checkpoint_path, state)
        self.write_metrics(state["history"])

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """``metrics.jsonl``: one line per epoch of ``history``."""
        if self.writes:
            checkpoint.write_text(
                self.path / "metrics.jsonl",
                "".join(to_json(r) + "\n" for r in history),
            )

    def write_summary(self, summary: dict[str, Any]) -> None:
        """``summary.json``: the run's final figures; written last, it marks the run finished."""
        if self.writes:
            checkpoint.write_json(self.path / "summary.json", summary)

    # -- reading ----------------------------------------------------------------------------

    def read_best_weights(self) -> dict[str, Tensor]:
        """The weights in ``best.pt``, read by rank 0 and broadcast to every process (a collective)."""
        weights = checkpoint.load(self.path / "best.pt")["model"] if self.writes else None
        return distributed.broadcast_object(weights, self.world)  # type: ignore[return-value]


def read_summary(path: str | Path) -> dict[str, Any]:
    """A run's ``summary.json``: the figures of a finished run, or the record of one that diverged.

    Raises:
        OSError: the file cannot be read (absent, a permission).
        ValueError: it is not a run's summary (cut short, not UTF-8, not a mapping, keys missing).
    """
    summary = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(summary, dict) or not (
        "diverged" in summary or {"best", "final", "time_per_epoch_s"} <= summary.keys()
    ):
        raise ValueError("not a run's summary")
    return summary


__all__ = ["RunFolder", "read_summary"]
