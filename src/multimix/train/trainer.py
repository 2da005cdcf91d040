"""The training loop, read top to bottom.

``train(config, out)`` trains one model with one method and writes into the run folder ``out``
(:mod:`.run_folder` lists the files). Each concern is owned by one object built here:

- processes and devices: :func:`.distributed.process_group` (torchrun's group, or one process);
- the run's parts — model and wrappers, mixer, optimiser, generators: :func:`.components.build_run`;
- the run's state, which is the checkpoint: :class:`.state.RunState`;
- one training step, eager or in CUDA graphs: :class:`.step.TrainStep`;
- validation and the test policy (``--test-every``): :class:`.evaluator.Evaluator`;
- every file and the rank-0 rule: :class:`.run_folder.RunFolder`;
- the progress bar, log lines and TensorBoard: :func:`.reporting.make_reporter`.

Before any of that, :func:`multimix.train.preflight.check_runnable` checks everything that can be
known without data (device, model against dataset, layer names, ...). Resuming (``resume=True``)
restarts from the last completed epoch; because every random draw comes from generators whose
states are in the checkpoint, a run killed at any moment and resumed ends with exactly the weights
and metrics of the same run never interrupted (on the CPU).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from multimix.data import Splits
from multimix.mixers import Mixer
from multimix.train import allocator, distributed
from multimix.train.checkpoint import CheckpointError
from multimix.train.components import Run, build_run, load_splits, model_from_checkpoint
from multimix.train.config import ConfigError, TrainConfig
from multimix.train.errors import RunDiverged
from multimix.train.evaluator import Evaluator, evaluate, select_best
from multimix.train.methods import build_mixer
from multimix.train.preflight import check_runnable
from multimix.train.reporting import make_reporter, tensorboard_writer
from multimix.train.run_folder import RunFolder
from multimix.train.step import TrainData, TrainStep, epoch_batches, steps_per_epoch

log = logging.getLogger(__name__)


def train(
    config: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool | None = None
) -> dict[str, Any]:
    """Train as ``config`` says, writing into ``out``; returns the summary (also in summary.json).

    Args:
        config: a validated :class:`TrainConfig`.
        out: output folder (created), held locked for the whole run: a second run on it is refused
            with :class:`multimix.train.runlock.FolderInUse`.
        resume: continue the run in ``out`` from its checkpoint, which must exist, with the same
            settings (runtime ones such as ``device`` aside). Without it, an ``out`` that already
            holds a checkpoint is refused.
        progress: show a progress bar; None shows it only on a terminal. Without a bar, a line is
            logged every tenth of the epochs (every epoch at DEBUG level).

    Everything that can be checked without data is checked before the folder is touched. Started by
    ``torchrun``, every process calls this: they join one process group (:mod:`.distributed`), rank 0
    alone holds the folder and writes into it, and every rank returns the same summary.
    """
    config.validate()
    check_runnable(config)
    with distributed.process_group(config.device) as world, contextlib.ExitStack() as stack:
        folder = RunFolder(out, world)
        saved = folder.open(config, resume=resume, stack=stack)
        return _train(config, folder, saved, progress=progress)


def _train(
    config: TrainConfig, folder: RunFolder, saved: dict[str, Any] | None, *, progress: bool | None
) -> dict[str, Any]:
    world = folder.world
    if config.threads:
        torch.set_num_threads(config.threads)
    device = distributed.rank_device(config.device, world)
    if device.type == "cpu":  # large CPU buffers reused, not page-faulted in every step
        allocator.keep_large_buffers()
    splits = load_splits(config)
    data = TrainData.on(splits.train, splits.num_classes, splits.augment, device)
    run = build_run(
        config,
        splits,
        world,
        device,
        steps_per_epoch=steps_per_epoch(len(data.y), config.batch_size),
    )
    state = run.state
    _restore(run, saved, folder)
    folder.write_config(_config_record(config, run, splits, world))
    # Derived from the checkpoint, rewritten from it: a kill between the checkpoint and its metrics
    # line (or a finished run's summary) loses nothing.
    if saved is not None:
        folder.write_metrics(state.history)

    step = TrainStep(state, net=run.nets.train, data=data, config=config, device=device)
    evaluator = Evaluator(
        net=run.nets.eval, model=run.nets.model, splits=splits, config=config, device=device
    )
    reporter = make_reporter(
        config, folder.path, main=world.is_main, progress=progress, history=state.history
    )
    for epoch in range(state.epoch + 1, config.epochs + 1):
        run.nets.train.train()
        mixer = run.mixer_at(epoch)  # its α from the schedule; None during an ERM warm-up
        start = time.perf_counter()
        record: dict[str, Any] = {"epoch": epoch, "train_loss": _epoch_loss(step, mixer)}
        record["time_s"] = time.perf_counter() - start  # training alone, not the evaluation
        if not math.isfinite(record["train_loss"]):  # the same on every rank: an all-reduced mean
            reporter.close()
            raise _diverged(config, folder, state.history, record)
        record |= evaluator.after_epoch(epoch, state.history)
        record |= {
            "lr": float(state.optimizer.param_groups[0]["lr"]),
            "alpha": getattr(mixer, "alpha", None),
        }
        state.history.append(record)
        improved = select_best(state.history) is record
        folder.save_epoch(state.state_dict(), improved=improved)  # state_dict: a collective
        # No rank starts the next epoch before rank 0 has saved this one: a kill then loses no more
        # than the epoch under way, on every rank alike.
        distributed.barrier(world)
        reporter.epoch(record)
    reporter.close()
    if run.mixer is not None:
        run.mixer.close()

    best, measured_now = evaluator.finish(state.history, folder.read_best_weights)
    if measured_now:
        folder.write_metrics(state.history)
    summary = _summary(config, world, state.history, best)
    folder.write_summary(summary)
    return summary


def _epoch_loss(step: TrainStep, mixer: Mixer | None) -> float:
    """The epoch's mean training loss; NaN where the model's outputs stopped being finite during it
    (ConfMix reads them to set α and raises FloatingPointError: the run has diverged all the same)."""
    try:
        return step.epoch(mixer)
    except FloatingPointError:
        return math.nan


def _restore(run: Run, saved: dict[str, Any] | None, folder: RunFolder) -> None:
    """Continue from the checkpoint ``saved`` (None: a new run), and say which it is."""
    config, world = run.state.config, folder.world
    if saved is None:
        log.info(
            "%s %s s%d: training %s for %d epochs into %s%s",
            config.dataset,
            config.method,
            config.seed,
            config.model_name,
            config.epochs,
            folder.path,
            f" with {world.world_size} processes" if world.world_size > 1 else "",
        )
        return
    try:
        run.state.load_state_dict(saved, source=folder.checkpoint_path)
    except ConfigError as exc:  # another number of processes: the user's command to fix
        raise ConfigError(
            f"cannot resume {folder.path} with {world.world_size} process(es): {exc}"
        ) from None
    except CheckpointError:  # already says what does not fit (e.g. other data files)
        raise
    except (KeyError, RuntimeError, ValueError) as exc:  # the file's contents do not fit this run
        raise folder.mismatch(exc) from None
    log.info(
        "%s %s s%d: resuming %s after epoch %d of %d",
        config.dataset,
        config.method,
        config.seed,
        folder.path,
        run.state.epoch,
        config.epochs,
    )


def _diverged(
    config: TrainConfig,
    folder: RunFolder,
    history: list[dict[str, Any]],
    record: dict[str, Any],
) -> RunDiverged:
    """The error for a run whose epoch ``record`` ended with a loss that is not finite, once its
    ``summary.json`` records the divergence. The checkpoint of the last finite epoch is kept."""
    epoch, loss = record["epoch"], record["train_loss"]
    summary = {
        **_identity(config, folder.world),
        "diverged": {"epoch": epoch, "train_loss": str(loss), "lr": config.lr},
        "completed_epochs": len(history),
        "final": None,
        "best": None,
    }
    folder.write_summary(summary)
    kept = (
        f"the checkpoint of epoch {len(history)} is kept in {folder.path}"
        if history
        else f"no epoch ended with a finite loss, so {folder.path} holds no checkpoint"
    )
    return RunDiverged(
        f"the run diverged: its training loss was {loss} in epoch {epoch} of {config.epochs} "
        f"(method {config.method}, optimizer {config.optimizer}, lr {config.lr:g}); {kept}. "
        "Its figures are not a result: start a new run (another --out) with a lower --lr"
        + (" or --amp none" if config.amp == "fp16" else ""),
        epoch=epoch,
        summary=summary,
    )


def _config_record(
    config: TrainConfig, run: Run, splits: Splits, world: distributed.Dist
) -> dict[str, Any]:
    """``config.yaml``'s contents: the configuration with the values the run uses where a default was
    resolved (the model's name, α, the layers mixed at)."""
    rows = min(config.batch_size, len(splits.train))  # one draw's rows: the batch, ...
    if config.mix_scope == "local":  # ... or rank 0's share of it
        mine = distributed.share(rows, 0, world.world_size)
        rows = mine.stop - mine.start
    return {
        **config.to_dict(),
        "model": config.model_name,
        **run.method.values_used(config, run.nets.model, rows=rows),
    }


def _identity(config: TrainConfig, world: distributed.Dist) -> dict[str, Any]:
    """What run a summary is of."""
    return {
        "dataset": config.dataset,
        "model": config.model_name,
        "method": config.method,
        "seed": config.seed,
        "epochs": config.epochs,
        "processes": world.world_size,
    }


def _summary(
    config: TrainConfig,
    world: distributed.Dist,
    history: list[dict[str, Any]],
    best: dict[str, Any],
) -> dict[str, Any]:
    """``summary.json``'s figures. ``best`` is the epoch chosen on validation accuracy — the run's
    result; ``best_test_over_epochs`` is the papers' convention, reported beside it (see
    :func:`_best_test_over_epochs`)."""
    keys = ("epoch", "val_acc", "test_acc", "val_loss", "test_loss")
    return {
        **_identity(config, world),
        "final": {k: history[-1][k] for k in keys},
        "best": {k: best[k] for k in keys},
        "best_test_over_epochs": _best_test_over_epochs(config, history),
        "time_per_epoch_s": sum(r["time_s"] for r in history) / len(history),
    }


#: Said in ``summary.json`` beside the figure, so that the file read alone cannot mislead.
BEST_TEST_NOTE = (
    "the highest test accuracy of any epoch (ties: the earliest), the MultiMix/AlignMixup papers' "
    "convention: the epoch is chosen on the test set, so the figure is optimistic; the run's "
    "result is 'best', the epoch chosen on validation"
)


def _best_test_over_epochs(
    config: TrainConfig, history: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The epoch with the highest test accuracy and that accuracy, or None where the test set was
    not measured at every epoch (``--test-every improvement`` or ``end``, or a run resumed from one
    that was): the maximum over the epochs measured would not be the maximum over the epochs."""
    if config.test_every != "epoch" or any(r["test_acc"] is None for r in history):
        return None
    top = max(history, key=lambda r: r["test_acc"])  # the first of equals: the earliest epoch
    return {"epoch": top["epoch"], "test_acc": top["test_acc"], "note": BEST_TEST_NOTE}


__all__ = [
    "train",
    "evaluate",
    "select_best",
    "build_mixer",
    "load_splits",
    "model_from_checkpoint",
    "epoch_batches",
    "steps_per_epoch",
    "tensorboard_writer",
]
