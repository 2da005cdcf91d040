"""The run's state, whose ``state_dict()`` *is* the checkpoint format.

A run continues exactly from its checkpoint because everything that changes during training is held
here — the model, optimiser, learning-rate scheduler, gradient scaler, EMA teacher, every random
generator (data order, augmentation, mixing, the mixer's host-side draws, torch's global one) and
the per-epoch history — and written and read by one pair of methods with the same keys:

.. code-block:: text

    config        the run's TrainConfig, as a dict
    world_size    processes that trained it (each has its own mixing draws)
    history       one record per finished epoch (what metrics.jsonl holds)
    model, optimizer, scheduler, scaler, teacher (None without one)
    rng           torch (global CPU generator), data, augment (None: drawn from data, on the CPU),
                  mix (one state per process), mix_host (one per process; None without one)
    data          the fingerprint of the data it trains on (``multimix.data.fingerprint``): a run
                  resumed on other data is refused; None, or absent in older checkpoints: not checked

Checkpoints of format version 1 (multimix 0.1 before this layout) are read too: :func:`upgrade`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from multimix.data import fingerprint
from multimix.teacher import EMATeacher
from multimix.train import distributed
from multimix.train.checkpoint import CheckpointError
from multimix.train.config import TrainConfig
from multimix.train.errors import ConfigError

#: The layout :meth:`RunState.state_dict` writes; :func:`upgrade` brings older ones to it.
STATE_VERSION = 2


@dataclass
class Generators:
    """The run's random generators, each one stream of draws.

    Attributes:
        data: training-set order, the same on every process (and augmentation on the CPU).
        augment: augmentation draws: ``data`` itself on the CPU, a generator on the GPU otherwise (drawing
            on the host and copying would wait for the GPU).
        mix: the mixer's draws on the training device: the same on every process under global scope,
            each process its own under local scope.
        mix_host: the mixer's host-side choices (which layer, mix or not), when its draws are on a GPU.
    """

    data: torch.Generator
    augment: torch.Generator
    mix: torch.Generator
    mix_host: torch.Generator | None = None


class RunState:
    """Everything a training run changes, saved and restored as one.

    Args:
        config: the run's configuration (saved with it; checked against on resume by the run folder).
        model: the bare model (not its DDP or compiled wrapper: their state dicts carry prefixes).
        optimizer, scheduler, scaler: the optimisation state.
        teacher: the EMA teacher, or None.
        generators: the run's generators.
        world: this process's place in the process group.
        data: the fingerprint of the data it trains on (:func:`multimix.data.data_fingerprint`),
            saved with it and compared on resume; None: not known, not checked.
    """

    def __init__(
        self,
        *,
        config: TrainConfig,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        teacher: EMATeacher | None,
        generators: Generators,
        world: distributed.Dist,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.teacher = teacher
        self.generators = generators
        self.world = world
        self.data = data
        self.history: list[dict[str, Any]] = []

    @property
    def epoch(self) -> int:
        """Epochs finished."""
        return len(self.history)

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint. A collective under torchrun (every process's mixing generators are gathered):
        every process calls it; the run folder writes rank 0's."""
        gens = self.generators
        mix = distributed.all_gather_objects(gens.mix.get_state(), self.world)
        host = distributed.all_gather_objects(
            None if gens.mix_host is None else gens.mix_host.get_state(), self.world
        )
        return {
            "config": self.config.to_dict(),
            "world_size": self.world.world_size,
            "history": list(self.history),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "teacher": None if self.teacher is None else self.teacher.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "data": gens.data.get_state(),
                "augment": None if gens.augment is gens.data else gens.augment.get_state(),
                "mix": mix,
                "mix_host": None if gens.mix_host is None else host,
            },
            "data": self.data,
        }

    def load_state_dict(self, state: dict[str, Any], *, source: str | Path | None = None) -> None:
        """Continue from ``state`` (of :meth:`state_dict`, or an older version: :func:`upgrade`), read
        from ``source`` (the checkpoint's path, named in errors; None: "its checkpoint").

        Raises CheckpointError if it was trained on other data (its fingerprint differs: other files,
        or files changed since), ConfigError if it was trained by another number of processes (each
        has its own mixing draws, so the run cannot continue as it was), and KeyError, RuntimeError
        or ValueError if the state does not fit this run's objects (the run folder names the file).
        """
        state = upgrade(state)
        self._check_data(state.get("data"), source)
        if state["world_size"] != self.world.world_size:
            raise ConfigError(
                f"it was trained with {state['world_size']} process(es), and each process's mixing "
                f"draws are part of its state; resume it with the command that started it "
                f"({state['world_size']} process(es))"
            )
        lr_form = self.optimizer.param_groups[0]["lr"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        _hold_lr_as(self.optimizer, lr_form)
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty: written by a disabled scaler (no fp16), nothing to restore
            self.scaler.load_state_dict(state["scaler"])
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        self._load_generators(state["rng"])
        self.history = list(state["history"])

    def _check_data(self, saved: dict[str, Any] | None, source: str | Path | None) -> None:
        """Refuse to continue on data other than the run's (CheckpointError saying what differs and
        what to do). Under torchrun every process reads the same data (:func:`check_same_data`) and
        compares it with the same broadcast checkpoint: every process reaches the same verdict."""
        if saved is None or self.data is None:  # an older checkpoint: nothing to compare with
            return
        diffs = fingerprint.differences(saved, self.data)
        if not diffs:
            return
        where = "this run from its checkpoint" if source is None else str(source)
        old_dir, new_dir = saved.get("data_dir"), self.data.get("data_dir")
        if "files" not in saved:  # a generated dataset: the generator itself changed
            raise CheckpointError(
                f"cannot resume {where}: the {saved.get('dataset')} data generated now differs from the "
                f"data it was trained on ({'; '.join(diffs)}; then vs now), so the run would not "
                "continue as it was; resume it with the versions of multimix and its libraries that "
                "started it, or start a new run in another --out"
            )
        moved = (
            f"the files in {new_dir} have changed since it started"
            if old_dir == new_dir
            else f"it was started on the files in {old_dir}, and --data-dir {new_dir} holds others"
        )
        raise CheckpointError(
            f"cannot resume {where}: {moved} ({'; '.join(diffs)}; then vs now). A run resumes on "
            f"the data it started with: resume with --data-dir pointing at those files (or a copy "
            f"of them), or start a new run on these files in another --out"
        )

    def _load_generators(self, rng: dict[str, Any]) -> None:
        gens, rank = self.generators, self.world.rank
        torch.set_rng_state(rng["torch"])
        gens.data.set_state(rng["data"])
        # A run resumed on another device type keeps this run's fresh augment/host generators where the
        # saved run had none (they are runtime choices; the CPU draws both from elsewhere).
        if gens.augment is not gens.data and rng["augment"] is not None:
            gens.augment.set_state(rng["augment"])
        if gens.mix_host is not None and rng["mix_host"] is not None:
            gens.mix_host.set_state(rng["mix_host"][rank])
        gens.mix.set_state(rng["mix"][rank])


def check_same_data(data: dict[str, Any] | None, world: distributed.Dist) -> None:
    """Raise :class:`ConfigError` on every process unless every process reads the same data
    (fingerprints ``data`` alike but for their folder); a collective under torchrun."""
    every = distributed.all_gather_objects(data, world)
    first = every[0]
    for rank, theirs in enumerate(every[1:], start=1):
        if not isinstance(first, dict) or not isinstance(theirs, dict):
            continue
        if diffs := fingerprint.differences(first, theirs):
            raise ConfigError(
                f"invalid value for data_dir: {theirs.get('data_dir')!r}; process {rank} reads other "
                f"data than process 0 ({'; '.join(diffs)}; process 0 vs {rank}, in "
                f"{first.get('data_dir')} and {theirs.get('data_dir')}): every process trains on the "
                "same data; give each machine a copy of the same files"
            )


def upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` in the current layout (:data:`STATE_VERSION`); a checkpoint of version 1 had one
    process's mixing state under ``mix`` beside every process's under ``mix_ranks`` (and the host
    ones under ``mix_host_ranks``), and no ``augment`` key on the CPU."""
    if state.get("version", STATE_VERSION) >= STATE_VERSION:
        return state
    rng = dict(state["rng"])
    rng["mix"] = rng.pop("mix_ranks", [rng["mix"]])
    rng["mix_host"] = rng.pop("mix_host_ranks", None)
    rng.setdefault("augment", None)
    return {
        **state,
        "rng": rng,
        "world_size": state.get("world_size", 1),
        "scaler": state.get("scaler", {}),
        "version": STATE_VERSION,
    }


def _hold_lr_as(optimizer: torch.optim.Optimizer, like: float | Tensor) -> None:
    """Hold every group's learning rate as ``like`` does: a tensor (updated in place, for CUDA graphs)
    or a float, whichever form the checkpoint was written with."""
    for group in optimizer.param_groups:
        for key in ("lr", "initial_lr"):
            if key in group:
                value = float(group[key])
                group[key] = (
                    torch.tensor(value, device=like.device) if isinstance(like, Tensor) else value
                )


__all__ = ["RunState", "Generators", "STATE_VERSION", "check_same_data", "upgrade"]
