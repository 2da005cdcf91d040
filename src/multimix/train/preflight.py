"""Checks that a run can go ahead, made before any work: no pixels are loaded and nothing is written.

:meth:`TrainConfig.validate` checks each value on its own. What is checked here needs the machine
(is there such a device, so many cores?) or knowledge of the dataset and model (does the model take
these inputs, does it have the layers named, is the validation split possible?). A dataset read from
files is known by what the files hold, whatever their size: their headers, sizes and labels are read
(kilobytes for the MNIST family; CIFAR's label bytes are spread through its files), and the run's own
validation split is made on those labels. The model is built
on PyTorch's ``meta`` device: shapes without memory, so the check costs milliseconds even for a
ResNet and leaves every random-number generator untouched.
"""

from __future__ import annotations

import importlib.util
import math
import os

import torch
from torch import Tensor

from multimix.data import (
    DataFilesMissing,
    FileSummary,
    check_files,
    check_subset,
    dataset_info,
    summarise_files,
)
from multimix.data.splits import class_counts_of_split
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
    check_files(config.dataset, config.data_dir, download=config.download)
    files = _summarise_files(config)
    if files is not None:
        check_split_of_files(config, files, info.num_classes)
    elif info.train_size is not None:
        _check_split(config, info.train_size, info.num_classes)
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


def _summarise_files(config: TrainConfig) -> FileSummary | None:
    """What the dataset's files hold (None: a generated dataset, or files still to be downloaded,
    whose official counts pass :func:`_check_split`)."""
    try:
        return summarise_files(config.dataset, config.data_dir)
    except DataFilesMissing:
        if config.download:
            return None
        raise


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


def check_split_of_files(config: TrainConfig, files: FileSummary, k: int) -> None:
    """Raise :class:`ConfigError` unless the validation split of the files' real training labels puts
    every class in both parts, naming the classes short, their counts, and a ``--val-fraction`` that
    works with these files where one does (the split is the run's own: same seed, same subset)."""
    y = torch.from_numpy(files.train_labels)
    n = len(y)
    subset = config.train_subset if config.train_subset and config.train_subset < n else None
    train, val = class_counts_of_split(
        y, k, val_fraction=config.val_fraction, seed=config.data_seed, train_subset=subset
    )
    short = [c for c in range(k) if train[c] == 0 or val[c] == 0]
    if not short:
        return
    in_files = torch.bincount(y, minlength=k)
    described = "; ".join(
        f"class {c}: {int(in_files[c])} in the files, {int(train[c])} for training and "
        f"{int(val[c])} for validation"
        for c in short[:3]
    ) + ("; ..." if len(short) > 3 else "")
    key, value = ("train_subset", subset) if subset else ("val_fraction", config.val_fraction)
    used = f"{n}" if subset is None else f"a subset of {subset} of the {n}"
    raise ConfigError(
        f"invalid value for {key}: {value}; splitting {used} training examples of "
        f"{files.train_source} with val_fraction {config.val_fraction} leaves {len(short)} of the "
        f"{k} classes without an example for training or for validation, and each part needs one "
        f"of every class ({described}): {_what_to_do(config, y, k, in_files, short, subset)}"
    )


def _what_to_do(
    config: TrainConfig, y: Tensor, k: int, in_files: Tensor, short: list[int], subset: int | None
) -> str:
    """The advice for a split that leaves classes ``short``: files with more of a class that cannot be
    split (fewer than 2 examples), else a --val-fraction found to work, else a larger subset."""
    too_few = [c for c in short if in_files[c] < 2]
    if too_few:
        listed = ", ".join(f"class {c} has {int(in_files[c])}" for c in too_few[:3])
        return (
            f"every class needs at least 2 examples in the training file(s) ({listed}); use files "
            "with more examples of each class"
        )
    # The split's own code on the real labels: cheap (milliseconds per try), and exact where a rule
    # of thumb about scikit-learn's rounding would not be.
    for percent in range(5, 100, 5):
        fraction = percent / 100
        train, val = class_counts_of_split(
            y, k, val_fraction=fraction, seed=config.data_seed, train_subset=subset
        )
        if bool((train > 0).all()) and bool((val > 0).all()):
            larger = ", or a larger --train-subset" if subset else ""
            return (
                f"use --val-fraction {fraction}, which puts every class in both parts with these "
                f"files{larger}"
            )
    if subset:
        return f"use a larger --train-subset, or 'all' for the whole {len(y)}"
    return "use files with more examples of each class"


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


__all__ = ["check_runnable", "check_device", "available_cpus", "check_split_of_files"]
