"""What a run is built from: the data, the model and its wrappers, the mixer, the optimisation.

Each builder takes the validated :class:`~multimix.train.config.TrainConfig` and returns plain
PyTorch objects; :func:`build_run` puts them together in the order that matters (the same seeded
initial weights on every process, the mixer's hooks placed before any compiled call).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multimix.data import Splits, data_fingerprint, dataset_info, load_dataset
from multimix.mixers import Mixer
from multimix.models import build_model
from multimix.schedules import make_schedule
from multimix.teacher import EMATeacher
from multimix.train import checkpoint, distributed
from multimix.train.checkpoint import CheckpointError
from multimix.train.config import TrainConfig
from multimix.train.methods import Method, build_mixer, get_method
from multimix.train.state import Generators, RunState, check_same_data


def load_splits(config: TrainConfig) -> Splits:
    """The run's train, validation and test sets (generated or read from files, then split)."""
    return load_dataset(
        config.dataset,
        data_seed=config.data_seed,
        val_fraction=config.val_fraction,
        data_dir=config.data_dir,
        download=config.download,
        toy_classes=config.toy_classes,
        toy_components=config.toy_components,
        toy_dim=config.toy_dim,
        train_size=config.train_size,
        train_subset=config.train_subset,
    )


@dataclass
class TrainedModel:
    """A run's trained model as rebuilt from one of its weight files.

    Attributes:
        model: the model, on the CPU, in eval mode.
        config: the run's configuration, as saved with the weights.
        epoch: the epoch (1-based) whose weights these are: ``best.pt``'s chosen epoch, or the last
            epoch ``checkpoint.pt`` saved; None where the file does not say.
    """

    model: nn.Module
    config: TrainConfig
    epoch: int | None


def trained_model(path: str | Path) -> TrainedModel:
    """Rebuild the trained model of a run from ``checkpoint.pt`` (last epoch) or ``best.pt`` (the epoch
    chosen on validation), after checking the file (:func:`multimix.train.checkpoint.load`) and that its
    weights fit the model its configuration describes (else a CheckpointError naming the file)."""
    state = checkpoint.load(path)
    config = checkpoint.saved_config(state, path)
    # Shapes only: no need to load the data
    info = dataset_info(
        config.dataset,
        toy_classes=config.toy_classes,
        toy_dim=config.toy_dim,
        train_size=config.train_size,
    )
    model = build_model(
        config.model_name, input_shape=info.input_shape, num_classes=info.num_classes
    )
    _load_weights(model, state.get("model"), path, config)
    epoch = state.get("epoch")
    history = state.get("history")
    # best.pt says its epoch; checkpoint.pt holds one history record per epoch trained
    if not isinstance(epoch, int) and isinstance(history, list):
        epoch = len(history)
    return TrainedModel(model.eval(), config, epoch if isinstance(epoch, int) else None)


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, TrainConfig]:
    """The model (in eval mode) and configuration of ``trained_model``, for analysis and evaluation."""
    trained = trained_model(path)
    return trained.model, trained.config


def _load_weights(model: nn.Module, weights: object, path: str | Path, config: TrainConfig) -> None:
    """Load ``weights`` into ``model``, or a CheckpointError naming ``path`` and the first thing that does
    not fit: a missing or unexpected key, a tensor of another shape (load_state_dict's own error is a
    RuntimeError listing them all over many lines)."""
    what = f"the {config.model_name} model its configuration describes for dataset {config.dataset}"
    if not isinstance(weights, dict) or not all(
        isinstance(v, torch.Tensor) for v in weights.values()
    ):
        raise CheckpointError(
            f"{path} holds no model weights (its 'model' entry is {type(weights).__name__}, expected "
            f"a dict of tensors); {checkpoint.what_to_do(path)}"
        )
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    reshaped = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} weight(s) missing, the first {missing[0]!r}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected, the first {unexpected[0]!r}")
    if reshaped:
        key = reshaped[0]
        problems.append(
            f"{len(reshaped)} of another shape, the first {key!r}: {list(weights[key].shape)} "
            f"where the model has {list(expected[key].shape)}"
        )
    if problems:
        raise CheckpointError(
            f"{path}: its weights do not fit {what}: {'; '.join(problems)}; {checkpoint.what_to_do(path)}"
        )
    model.load_state_dict(weights)


@dataclass
class Nets:
    """The model as each caller needs it.

    Attributes:
        model: the bare model (its state is saved; it names the layers).
        train: what a training step calls: the model in DDP under torchrun, compiled if asked.
        eval: what evaluation calls: outside DDP (whose forward needs every process), compiled if asked.
    """

    model: nn.Module
    train: nn.Module
    eval: nn.Module


def build_nets(
    config: TrainConfig, splits: Splits, world: distributed.Dist, device: torch.device
) -> Nets:
    """The model, seeded alike on every process, on ``device``, and its wrappers."""
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = build_model(
        config.model_name, input_shape=splits.input_shape, num_classes=splits.num_classes
    ).to(device)
    if config.channels_last:
        # Module.to takes memory_format at run time; torch's stubs do not list it.
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model, net, eval_net = distributed.wrap_model(
        model,
        world,
        device,
        sync_bn=config.sync_bn,
        compile=config.compile,
        find_unused_parameters=get_method(config.method).unused_parameters,
    )
    return Nets(model, net, eval_net)


def make_generators(
    config: TrainConfig, world: distributed.Dist, device: torch.device
) -> Generators:
    """The run's generators, seeded from ``config.seed`` (see :class:`~multimix.train.state.Generators`)."""
    data = torch.Generator().manual_seed(config.seed)
    augment = (
        data if device.type == "cpu" else torch.Generator(device=device).manual_seed(config.seed)
    )
    # Global scope: one Λ over the global batch, drawn alike on every rank; local scope: each rank its
    # own draws (rank 0 keeps the single-process stream).
    mix_seed = config.seed + 1 + (world.rank << 32 if config.mix_scope == "local" else 0)
    return Generators(
        data=data, augment=augment, mix=torch.Generator(device=device).manual_seed(mix_seed)
    )


def build_optimizer(
    config: TrainConfig, model: nn.Module, device: torch.device
) -> torch.optim.Optimizer:
    """Adam or SGD as ``config`` says. Under CUDA graphs the learning rate is a tensor the scheduler
    updates in place (a Python float would be frozen into the graph), and Adam keeps its step on the GPU."""
    # Fused steps take the fp16 scaler's flag on device
    fused: dict[str, Any] = {"fused": True} if device.type == "cuda" else {}
    lr = torch.tensor(config.lr, device=device) if config.cuda_graph else config.lr
    if config.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(),
            lr=lr,
            weight_decay=config.weight_decay,
            capturable=config.cuda_graph,
            **fused,
        )
    return torch.optim.SGD(
        model.parameters(),
        lr=lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov and config.momentum > 0,
        **fused,
    )


def build_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay over every step of the run (stepped once per step), a step schedule (the rate
    times ``lr_decay`` at each milestone, a fraction of ``total_steps``), or a constant rate."""
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
        )
    if config.scheduler == "step":
        # The step after which each decay applies; rounded, so 0.5 of 10 epochs is epoch 5's end
        steps = [round(f * total_steps) for f in config.milestones]
        decay = config.lr_decay
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: decay ** sum(s >= step for step in steps)
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


@dataclass
class Run:
    """A built run: its state, the model's forms, the mixer (None for ERM) and the method."""

    state: RunState
    nets: Nets
    mixer: Mixer | None
    method: Method

    def mixer_at(self, epoch: int) -> Mixer | None:
        """The mixer of epoch ``epoch`` (1-based) with its α set by the schedule; None in an ERM warm-up."""
        config = self.state.config
        if self.mixer is None or not self.method.mixes_at(config, epoch):
            return None
        if config.alpha_schedule != "constant":
            # TrainConfig.validate's rule
            assert config.alpha_start is not None and config.alpha_end is not None
            schedule = make_schedule(
                config.alpha_schedule,
                start=config.alpha_start,
                end=config.alpha_end,
                epochs=config.epochs,
                half_life=config.half_life,
            )
            self.mixer.set_alpha(schedule(epoch - 1))  # from the 0-based epoch index
        return self.mixer


def build_run(
    config: TrainConfig,
    splits: Splits,
    world: distributed.Dist,
    device: torch.device,
    *,
    steps_per_epoch: int,
) -> Run:
    """Model, generators, teacher, mixer and optimisation state of a new run (restore a checkpoint
    into ``run.state`` to continue one), with the fingerprint of its data (``splits``, loaded as
    ``config`` says), checked to be the same on every process (a collective under torchrun)."""
    data = data_fingerprint(config.dataset, config.data_dir, splits)
    check_same_data(data, world)
    nets = build_nets(config, splits, world, device)
    generators = make_generators(config, world, device)
    teacher = (
        None
        if config.teacher_momentum is None
        else EMATeacher(nets.model, momentum=config.teacher_momentum)
    )
    mixer = build_mixer(
        config, nets.model, splits.num_classes, generators.mix, teacher, wrapped=nets.train
    )
    generators.mix_host = getattr(mixer, "host_generator", None)
    optimizer = build_optimizer(config, nets.model, device)
    state = RunState(
        config=config,
        model=nets.model,
        optimizer=optimizer,
        scheduler=build_scheduler(config, optimizer, config.epochs * steps_per_epoch),
        scaler=torch.amp.GradScaler(device.type, enabled=config.amp == "fp16"),
        teacher=teacher,
        generators=generators,
        world=world,
        data=data,
    )
    return Run(state=state, nets=nets, mixer=mixer, method=get_method(config.method))


__all__ = [
    "load_splits",
    "model_from_checkpoint",
    "trained_model",
    "TrainedModel",
    "Nets",
    "build_nets",
    "make_generators",
    "build_optimizer",
    "build_scheduler",
    "Run",
    "build_run",
]
