"""Telling a person how a run goes: a progress bar or log lines, and TensorBoard, behind one interface.

The loop calls ``reporter.epoch(record)`` after each epoch and ``reporter.close()`` at the end, and
nothing else; what is shown depends on the reporters :func:`make_reporter` puts together (a
:class:`NullReporter` where nothing is: processes other than rank 0).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from multimix.train.config import ConfigError, TrainConfig

# The name users filter on, kept from when the loop logged
log = logging.getLogger("multimix.train.trainer")


class Reporter(Protocol):
    """Receives each epoch's record (the line ``metrics.jsonl`` gets)."""

    def epoch(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class NullReporter:
    """Reports nothing."""

    def epoch(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def epoch_line(config: TrainConfig, record: dict[str, Any]) -> str:
    """One epoch in a line: dataset, method, seed, epoch, loss, validation (and test) accuracy, time."""
    return (
        f"{config.dataset} {config.method} s{config.seed}: epoch {record['epoch']}/{config.epochs} · "
        f"train loss {record['train_loss']:.3f} · val {100 * record['val_acc']:.1f}% · "
        + (f"test {100 * record['test_acc']:.1f}% · " if record["test_acc"] is not None else "")
        + f"{record['time_s']:.2f} s"
    )


class ProgressReporter:
    """A progress bar over the epochs (``show_bar``), and log lines: without a bar, a line every tenth
    of the run at INFO; every epoch at DEBUG."""

    def __init__(self, config: TrainConfig, *, show_bar: bool, initial: int) -> None:
        self.config = config
        self.show_bar = show_bar
        self.log_every = max(1, config.epochs // 10)
        self.bar = tqdm(
            total=config.epochs,
            initial=initial,
            desc=f"{config.method} s{config.seed}",
            unit="epoch",
            disable=not show_bar,
            leave=False,
        )

    def epoch(self, record: dict[str, Any]) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{record['train_loss']:.3f}", val=f"{record['val_acc']:.3f}")
        epoch = record["epoch"]
        loud = not self.show_bar and (epoch % self.log_every == 0 or epoch == self.config.epochs)
        log.log(logging.INFO if loud else logging.DEBUG, "%s", epoch_line(self.config, record))

    def close(self) -> None:
        self.bar.close()


def tensorboard_writer(out: Path, *, purge_step: int | None = None) -> Any:
    """A SummaryWriter on ``out/tensorboard``; a clear error if the package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "--tensorboard needs the tensorboard package: pip install tensorboard "
            "(or multimix[tensorboard])"
        ) from None
    return SummaryWriter(str(out / "tensorboard"), purge_step=purge_step)


class TensorBoardReporter:
    """Every number of each epoch's record as a scalar ``train/<key>`` at step = epoch. Resuming purges
    events logged after the checkpoint's epoch, so the curves show the run that counts, and logs that
    epoch (``last``, its record) again: a kill between the checkpoint and its events loses none."""

    def __init__(self, out: Path, *, initial: int, last: dict[str, Any] | None = None) -> None:
        self.writer = tensorboard_writer(out, purge_step=initial if last else initial + 1)
        if last:
            self.epoch(last)

    def epoch(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if key != "epoch" and value is not None:
                self.writer.add_scalar(f"train/{key}", value, record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Reporters:
    """Several reporters as one."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters

    def epoch(self, record: dict[str, Any]) -> None:
        for reporter in self.reporters:
            reporter.epoch(record)

    def close(self) -> None:
        for reporter in self.reporters:
            reporter.close()


def make_reporter(
    config: TrainConfig,
    out: Path,
    *,
    main: bool,
    progress: bool | None,
    history: list[dict[str, Any]],
) -> Reporter:
    """What rank 0 shows: a bar (``progress``; None: only on a terminal) or log lines, and TensorBoard if
    asked; a :class:`NullReporter` on the other ranks. ``history``: the epochs already done (a resumed
    run's), whose last is logged to TensorBoard again."""
    if not main:
        return NullReporter()
    show_bar = sys.stderr.isatty() if progress is None else progress
    initial = len(history)
    reporters: list[Reporter] = [ProgressReporter(config, show_bar=show_bar, initial=initial)]
    if config.tensorboard:
        last = history[-1] if history else None
        reporters.append(TensorBoardReporter(out, initial=initial, last=last))
    return Reporters(*reporters)


__all__ = [
    "Reporter",
    "NullReporter",
    "ProgressReporter",
    "TensorBoardReporter",
    "Reporters",
    "make_reporter",
    "tensorboard_writer",
    "epoch_line",
]
