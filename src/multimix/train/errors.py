"""The training package's user-facing errors: a bad option, named with what is valid; a run that diverged."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message says which and what is valid."""


class RunDiverged(RuntimeError):
    """Training stopped because its loss was not finite (NaN or ±inf): the run has no result.

    Attributes:
        epoch: the epoch (1-based) whose training loss was not finite.
        summary: the run's ``summary.json`` contents, which record the divergence.
    """

    def __init__(self, message: str, *, epoch: int, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.summary = summary

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in a worker process, it crosses to the parent by pickling: keep its keywords.
        return _rebuild_diverged, (str(self), self.epoch, self.summary)


def _rebuild_diverged(message: str, epoch: int, summary: dict[str, Any]) -> RunDiverged:
    return RunDiverged(message, epoch=epoch, summary=summary)


__all__ = ["ConfigError", "RunDiverged"]
