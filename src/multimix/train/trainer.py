"""The training loop: one function, read top to bottom.

``train(config, out)`` trains one model with one method and writes into ``out``:

- ``config.yaml``     the resolved configuration;
- ``metrics.jsonl``   one JSON line per epoch (train loss, validation and test loss/accuracy, time);
- ``checkpoint.pt``   everything needed to continue exactly: model, optimizer, scheduler, the RNG
                      states (data order and mixing) and the metrics so far, written atomically at
                      the end of every epoch;
- ``summary.json``    final figures and the epoch chosen on validation accuracy.

Resuming (``resume=True``) restarts from the last completed epoch. Because every random draw comes
from generators whose states are in the checkpoint, a run killed at any moment and resumed ends with
exactly the weights and metrics of the same run never interrupted (on the CPU).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset
from tqdm.auto import tqdm

from multimix.data import Splits, load_dataset
from multimix.data.augment import AUGMENTATIONS
from multimix.functional import one_hot, soft_cross_entropy
from multimix.mixers import ConfMix, DenseMultiMix, ManifoldMixup, Mixup, MultiMix
from multimix.models import build_model
from multimix.schedules import make_schedule
from multimix.teacher import EMATeacher
from multimix.train import checkpoint
from multimix.train.config import ConfigError, TrainConfig

log = logging.getLogger(__name__)


def load_splits(config: TrainConfig) -> Splits:
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
    )


def build_mixer(
    config: TrainConfig,
    model: nn.Module,
    num_classes: int,
    generator: torch.Generator,
    teacher: EMATeacher | None = None,
) -> nn.Module | None:
    """The mixer for ``config.method`` (None for ERM), aimed at the model's named layers."""
    common = dict(num_classes=num_classes, generator=generator)
    distill = dict(teacher=teacher, distill_weight=config.distill_weight, temperature=config.temperature)
    if config.method == "erm":
        return None
    if config.method == "mixup":
        return Mixup(model, alpha=config.method_alpha, per_sample=config.per_sample, **common)
    if config.method == "manifold":
        layers = config.layers or model.manifold_layers
        return ManifoldMixup(model, layers=layers, alpha=config.method_alpha, per_sample=config.per_sample, **common)
    if config.method == "confmix":
        return ConfMix(model, layers=config.layers or ["input"], scale=config.confmix_scale, **common)
    if config.method in ("multimix", "dense-multimix"):
        shared = dict(n=config.n, m=config.m, alpha=config.method_alpha, p=config.p, **distill, **common)
        if config.method == "multimix":
            return MultiMix(model, before=model.classifier_layer, keep_clean=config.keep_clean, **shared)
        if model.feature_layer is None:
            raise ConfigError(f"dense-multimix needs a model with a spatial embedding; {config.model_name} has none "
                              "(use cnn1d or preactresnet18)")
        return DenseMultiMix(model, features=model.feature_layer, classifier=model.classifier_layer,
                             attention=config.attention, **shared)
    raise ConfigError(f"unknown method {config.method!r}")


@torch.no_grad()
def evaluate(model: nn.Module, data: TensorDataset, num_classes: int, *, batch_size: int, device: torch.device) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``data``."""
    model.eval()
    x_all, y_all = data.tensors
    loss_sum, correct = 0.0, 0
    for start in range(0, len(y_all), batch_size):
        x = x_all[start : start + batch_size].to(device)
        y = y_all[start : start + batch_size].to(device)
        logits = model(x).float()
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    return {"loss": loss_sum / len(y_all), "acc": correct / len(y_all)}


def select_best(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch with the highest validation accuracy (ties: lower validation loss, then earlier)."""
    return min(history, key=lambda r: (-r["val_acc"], r["val_loss"], r["epoch"]))


def train(config: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool | None = None) -> dict[str, Any]:
    """Train as ``config`` says, writing into ``out``; returns the summary (also in summary.json).

    Args:
        config: a validated :class:`TrainConfig`.
        out: output folder (created).
        resume: continue from ``out/checkpoint.pt`` when it exists (else start from scratch).
            Without it, an ``out`` that already holds a checkpoint is refused.
        progress: show a progress bar; None shows it only on a terminal.
    """
    config.validate()
    out = Path(out)
    ckpt_path = out / "checkpoint.pt"
    state = None
    if ckpt_path.exists():
        if not resume:
            raise ConfigError(f"{out} already holds a run (checkpoint.pt); pass --resume to continue it or choose another --out")
        state = checkpoint.load(ckpt_path)  # load and check before any other work
        saved = TrainConfig(**state["config"])
        if diffs := config.differences(saved):
            raise checkpoint.CheckpointError(
                f"{ckpt_path} belongs to a run with other settings (given vs saved): {'; '.join(diffs)}"
            )
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)

    # -- data, model, method, optimiser ------------------------------------------------------
    splits = load_splits(config)
    torch.manual_seed(config.seed)
    model = build_model(config.model_name, input_shape=splits.input_shape, num_classes=splits.num_classes).to(device)
    data_gen = torch.Generator().manual_seed(config.seed)  # data order and augmentation
    mix_gen = torch.Generator(device=device).manual_seed(config.seed + 1)  # every mixing draw
    teacher = None if config.teacher_momentum is None else EMATeacher(model, momentum=config.teacher_momentum)
    mixer = build_mixer(config, model, splits.num_classes, mix_gen, teacher)

    drop_last = len(splits.train) >= config.batch_size  # mixup and BatchNorm dislike a last batch of 1
    loader = DataLoader(
        splits.train,
        sampler=BatchSampler(RandomSampler(splits.train, generator=data_gen), config.batch_size, drop_last),
        batch_size=None,  # the sampler yields whole batches: one tensor index per batch, no collation
    )
    steps_per_epoch = len(loader)
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True
        )
    total_steps = config.epochs * steps_per_epoch
    if config.scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    augment = AUGMENTATIONS[splits.augment] if splits.augment else None
    schedule = None
    if config.alpha_schedule != "constant":
        schedule = make_schedule(config.alpha_schedule, start=config.alpha_start, end=config.alpha_end,
                                 epochs=config.epochs, half_life=config.half_life)

    # -- resume ------------------------------------------------------------------------------
    history: list[dict[str, Any]] = []
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if teacher is not None:
                teacher.load_state_dict(state["teacher"])
            torch.set_rng_state(state["rng"]["torch"])
            data_gen.set_state(state["rng"]["data"])
            mix_gen.set_state(state["rng"]["mix"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise checkpoint.CheckpointError(f"{ckpt_path} does not match this run: {str(exc).splitlines()[0][:300]}") from None
        history = list(state["history"])
        log.info("resuming %s after epoch %d", out, len(history))
    elif resume:
        log.debug("no checkpoint in %s: starting from scratch", out)

    out.mkdir(parents=True, exist_ok=True)
    checkpoint.write_text(out / "config.yaml", yaml.safe_dump({**config.to_dict(), "model": config.model_name}, sort_keys=False))

    # -- the loop ----------------------------------------------------------------------------
    bar = tqdm(total=config.epochs, initial=len(history), desc=f"{config.method} s{config.seed}", unit="epoch",
               disable=None if progress is None else not progress, leave=False)
    for epoch in range(len(history) + 1, config.epochs + 1):
        model.train()
        if schedule is not None:
            mixer.set_alpha(schedule(epoch - 1))  # α of this epoch, from 0-based epoch index
        # ConfMix waits for a model confident enough to say how much to mix: ERM first.
        step_mixer = None if config.method == "confmix" and epoch <= config.confmix_warmup else mixer
        start = time.perf_counter()
        loss_sum = 0.0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if augment is not None:
                x = augment(x, generator=data_gen)
            if step_mixer is None:
                logits, targets = model(x), one_hot(y, splits.num_classes)
            else:
                logits, targets = step_mixer(x, y)
            loss = soft_cross_entropy(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if teacher is not None:
                teacher.update()
            loss_sum += loss.item()
        train_time = time.perf_counter() - start

        val = evaluate(model, splits.val, splits.num_classes, batch_size=config.eval_batch_size, device=device)
        test = evaluate(model, splits.test, splits.num_classes, batch_size=config.eval_batch_size, device=device)
        history.append({
            "epoch": epoch,
            "train_loss": loss_sum / max(steps_per_epoch, 1),
            "val_loss": val["loss"], "val_acc": val["acc"],
            "test_loss": test["loss"], "test_acc": test["acc"],
            "lr": optimizer.param_groups[0]["lr"],
            "alpha": getattr(step_mixer, "alpha", None),
            "time_s": train_time,
        })
        # Checkpoint first, then the metrics file derived from it: a kill between the two only
        # loses a line that resuming rewrites.
        checkpoint.save(ckpt_path, {
            "config": config.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "teacher": None if teacher is None else teacher.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "data": data_gen.get_state(), "mix": mix_gen.get_state()},
            "history": history,
        })
        checkpoint.write_text(out / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))
        bar.update(1)
        bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", val=f"{val['acc']:.3f}")
        log.debug("epoch %d: %s", epoch, history[-1])
    bar.close()
    if mixer is not None:
        mixer.close()

    best = select_best(history)
    summary = {
        "dataset": config.dataset,
        "model": config.model_name,
        "method": config.method,
        "seed": config.seed,
        "epochs": config.epochs,
        "final": {k: history[-1][k] for k in ("epoch", "val_acc", "test_acc", "val_loss", "test_loss")},
        "best": {k: best[k] for k in ("epoch", "val_acc", "test_acc", "val_loss", "test_loss")},
        "time_per_epoch_s": sum(r["time_s"] for r in history) / len(history),
    }
    checkpoint.write_json(out / "summary.json", summary)
    log.info("%s %s seed %d: test acc %.4f at best val epoch %d", config.dataset, config.method, config.seed,
             best["test_acc"], best["epoch"])
    return summary


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, TrainConfig]:
    """Rebuild the trained model of a run from its checkpoint (for analysis and evaluation)."""
    state = checkpoint.load(path)
    config = TrainConfig(**state["config"])
    splits_shape = load_splits(config)
    model = build_model(config.model_name, input_shape=splits_shape.input_shape, num_classes=splits_shape.num_classes)
    model.load_state_dict(state["model"])
    return model.eval(), config


__all__ = ["train", "evaluate", "select_best", "build_mixer", "load_splits", "model_from_checkpoint"]

