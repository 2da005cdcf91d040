"""Checks that a run can go ahead, made before any work: no data is loaded and nothing is written.

:meth:`TrainConfig.validate` checks each value on its own. What is checked here needs the machine
(is there such a device, so many cores?) or knowledge of the dataset and model (does the model take
these inputs, does it have the layers named, is the validation split possible?). The model is built
on PyTorch's ``meta`` device: shapes without memory, so the check costs milliseconds even for a
ResNet and leaves every random-number generator untouched.
"""

from __future__ import annotations

import importlib.util
import math
import os

import torch

from multimix.data import check_files, check_subset, dataset_info
from multimix.models import build_model
from multimix.train import distributed
from multimix.train.checkpoint import first_line
from multimix.train.config import TrainConfig
from multimix.train.errors import ConfigError
from multimix.train.methods import build_mixer


def check_runnable(config: TrainConfig) -> None:
    """Raise :class:`ConfigError` (or ``DataFilesMissing``) naming the option if ``config`` cannot run here."""
    device = check_device(config.device)
    _check_threads(config.threads)
    sizes = dict(
        toy_classes=config.toy_classes, toy_dim=config.toy_dim, train_size=config.train_size
    )
    try:
        check_subset(config.dataset, config.train_subset, **sizes)
    except ValueError as exc:
        raise ConfigError(
            f"invalid value for train_subset: {config.train_subset}; {exc}; use 'all' for the whole "
            "training set"
        ) from None
    info = dataset_info(config.dataset, train_subset=config.train_subset, **sizes)
    _check_gpu_path(config, device, info.input_shape)
    _check_processes(config, device)
    if info.train_size is not None:
        _check_split(config, info.train_size, info.num_classes)
    check_files(config.dataset, config.data_dir, download=config.download)
    _check_model_and_method(config, info.input_shape, info.num_classes)
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "invalid value for tensorboard: True needs the tensorboard package: pip install tensorboard "
            "(or multimix[tensorboard])"
        )


def check_device(device: str) -> torch.device:
    """The ``torch.device`` named by ``device``, if this machine has it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"invalid value for device: {device!r}; expected cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cpu":
        return dev
    backend = torch.backends.mps if dev.type == "mps" else getattr(torch, dev.type, None)
    if backend is None or not hasattr(backend, "is_available"):
        raise ConfigError(
            f"invalid value for device: {device!r}; expected cpu, cuda, cuda:N or mps"
        )
    if not backend.is_available():
        raise ConfigError(
            f"invalid value for device: {device!r}; this machine has no {dev.type} device "
            f"(torch {torch.__version__}); use --device cpu"
        )
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if dev.index is not None and dev.index >= count:
        raise ConfigError(
            f"invalid value for device: {device!r}; this machine has {count} {dev.type} "
            f"device(s), numbered from 0"
        )
    return dev


def _check_gpu_path(
    config: TrainConfig, device: torch.device, input_shape: tuple[int, ...]
) -> None:
    if config.amp == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"invalid value for amp: 'fp16' needs a CUDA device (device is {config.device!r}); "
            "on the CPU use --amp bf16"
        )
    if config.cuda_graph and device.type != "cuda":
        raise ConfigError(
            f"invalid value for cuda_graph: True needs a CUDA device (device is {config.device!r}); "
            "leave out --cuda-graph, or train with --device cuda"
        )
    if config.cuda_graph and config.amp == "fp16":
        raise ConfigError(
            "invalid value for cuda_graph: True cannot be combined with --amp fp16 (its gradient "
            "scaler decides on the host whether to skip a step); use --amp bf16, or leave out --cuda-graph"
        )
    if config.channels_last and len(input_shape) != 3:
        raise ConfigError(
            f"invalid value for channels_last: True applies to images (C, H, W); {config.dataset}'s "
            f"examples have shape {tuple(input_shape)}"
        )


def _check_processes(config: TrainConfig, device: torch.device) -> None:
    """What only matters under torchrun: enough examples per process, SyncBatchNorm's device, GPUs."""
    env = distributed.from_environment()
    world = 1 if env is None else env.world_size
    if world == 1:
        return
    if config.cuda_graph:
        raise ConfigError(
            f"invalid value for cuda_graph: True runs in one process; this run has {world} (torchrun): "
            "leave out --cuda-graph, or start one process"
        )
    if config.batch_size < 2 * world:
        raise ConfigError(
            f"invalid value for batch_size: {config.batch_size}; --batch-size is the global batch, "
            f"split over {world} processes: expected at least {2 * world} (two examples per process)"
        )
    if config.sync_bn and device.type != "cuda":
        raise ConfigError(
            f"invalid value for sync_bn: True needs CUDA devices (torch's SyncBatchNorm does not run on "
            f"{device.type}); leave out --sync-bn, or train with --device cuda"
        )
    if (
        device.type == "cuda"
        and device.index is None
        and env.local_rank >= torch.cuda.device_count()
    ):
        raise ConfigError(
            f"invalid value for device: 'cuda'; process {env.rank} has local rank {env.local_rank} but "
            f"this machine has {torch.cuda.device_count()} CUDA device(s): start at most that many "
            "processes per machine (torchrun --nproc_per_node)"
        )


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _check_threads(threads: int | None) -> None:
    cpus = available_cpus()
    if threads is not None and threads > cpus:
        # More threads than cores only slows torch down, and huge counts crash it.
        raise ConfigError(
            f"invalid value for threads: {threads}; expected an integer in [1, {cpus}] "
            f"(the CPU cores available here)"
        )


def _check_split(config: TrainConfig, n: int, k: int) -> None:
    # The stratified split needs every class in both parts: at least k examples in each.
    n_val = math.ceil(config.val_fraction * n)
    if min(n_val, n - n_val) < k:
        key, value = (
            ("train_subset", config.train_subset)
            if config.train_subset
            else ("val_fraction", config.val_fraction)
        )
        raise ConfigError(
            f"invalid value for {key}: {value}; val_fraction {config.val_fraction} splits {config.dataset}'s {n} training "
            f"examples into {n - n_val} for training and {n_val} for validation, and each part needs at least "
            f"{k} (one per class)"
        )


def _check_model_and_method(config: TrainConfig, input_shape: tuple[int, ...], k: int) -> None:
    name = config.model_name
    try:
        with torch.device("meta"):
            model = build_model(name, input_shape=input_shape, num_classes=k)
        logits = model.eval()(torch.empty((2, *input_shape), device="meta"))
        if tuple(logits.shape) != (2, k):
            raise ValueError(
                f"it returns logits of shape {tuple(logits.shape[1:])} per example, expected ({k},)"
            )
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"invalid value for model: {name!r} does not fit {config.dataset} (examples of shape "
            f"{tuple(input_shape)}, {k} classes): {first_line(exc, 150)}"
        ) from None
    try:
        mixer = build_mixer(config, model.train(), k, generator=None)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        # e.g. layers naming a submodule the model does not have: the message lists the valid ones.
        raise ConfigError(f"{config.method} on {name}: {exc}") from None
    if mixer is not None:
        mixer.close()


__all__ = ["check_runnable", "check_device", "available_cpus"]
