"""The training loop: one function, read top to bottom.

``train(config, out)`` trains one model with one method and writes into ``out``:

- ``config.yaml``     the resolved configuration;
- ``metrics.jsonl``   one JSON line per epoch (train loss, validation and test loss/accuracy, time);
- ``checkpoint.pt``   everything needed to continue exactly: model, optimizer, scheduler, the RNG
                      states (data order and mixing) and the metrics so far, written atomically at
                      the end of every epoch;
- ``best.pt``         the model's weights at the epoch chosen on validation accuracy (what is evaluated);
- ``summary.json``    final figures and the epoch chosen on validation accuracy;
- ``.lock``           held while the run is alive (:mod:`multimix.train.runlock`): one run per folder.

Before any of that, :func:`multimix.train.preflight.check_runnable` checks everything that can be
known without data (device, model against dataset, layer names, ...). Resuming (``resume=True``)
restarts from the last completed epoch. Because every random draw comes
from generators whose states are in the checkpoint, a run killed at any moment and resumed ends with
exactly the weights and metrics of the same run never interrupted (on the CPU).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset
from tqdm.auto import tqdm

from multimix.data import Splits, dataset_info, load_dataset
from multimix.data.augment import AUGMENTATIONS
from multimix.functional import one_hot, soft_cross_entropy
from multimix.models import build_model
from multimix.schedules import make_schedule
from multimix.teacher import EMATeacher
from multimix.train import checkpoint
from multimix.train.config import ConfigError, TrainConfig
from multimix.train.methods import build_mixer
from multimix.train.preflight import check_runnable
from multimix.train.runlock import RunLock

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
        out: output folder (created), held locked for the whole run: a second run on it is refused
            with :class:`multimix.train.runlock.FolderInUse`.
        resume: continue the run in ``out`` from its checkpoint, which must exist, with the same
            settings (runtime ones such as ``device`` aside). Without it, an ``out`` that already
            holds a checkpoint is refused.
        progress: show a progress bar; None shows it only on a terminal. Without a bar, a line is
            logged every tenth of the epochs (every epoch at DEBUG level).

    Everything that can be checked without data is checked before the folder is touched.
    """
    config.validate()
    check_runnable(config)
    out = Path(out)
    with RunLock(out):
        return _train(config, out, resume=resume, progress=progress)


def _resume_state(config: TrainConfig, out: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to continue from (checked against ``config``), or None for a new run."""
    ckpt_path = out / "checkpoint.pt"
    if not ckpt_path.exists():
        if not resume:
            return None
        started = " (a run started there but stopped before its first epoch ended)" if (out / "config.yaml").exists() else ""
        raise ConfigError(f"nothing to resume in {out}: it holds no checkpoint.pt{started}; "
                          "to start a new run there, leave out --resume")
    if not resume:
        raise ConfigError(f"{out} already holds a run (checkpoint.pt); pass --resume to continue it, or choose another --out")
    state = checkpoint.load(ckpt_path)
    saved = checkpoint.saved_config(state, ckpt_path)
    if config.epochs != saved.epochs:
        why = ("its cosine learning-rate schedule spans all its epochs" if saved.scheduler == "cosine"
               else "the number of epochs is part of what defines a run")
        raise ConfigError(
            f"cannot resume {out} with epochs {config.epochs}: it was started for {saved.epochs} epochs, and {why}, "
            f"so a run stretched to {config.epochs} would not be the run asked for. To train for {config.epochs} "
            f"epochs, start a new run (same options, --epochs {config.epochs}, another --out)"
        )
    if diffs := config.differences(saved):
        raise checkpoint.CheckpointError(
            f"{ckpt_path} belongs to a run with other settings (given vs saved): {'; '.join(diffs)}. "
            f"A run resumes with the settings it started with: give --resume and --out alone, "
            "or start a new run in another --out"
        )
    return state


def tensorboard_writer(out: Path, *, purge_step: int | None = None):
    """A SummaryWriter on ``out/tensorboard``; a clear error if the package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard "
                          "(or multimix[tensorboard])") from None
    return SummaryWriter(str(out / "tensorboard"), purge_step=purge_step)


def _epoch_line(config: TrainConfig, record: dict[str, Any]) -> str:
    return (f"{config.dataset} {config.method} s{config.seed}: epoch {record['epoch']}/{config.epochs} · "
            f"train loss {record['train_loss']:.3f} · val {100 * record['val_acc']:.1f}% · "
            f"test {100 * record['test_acc']:.1f}% · {record['time_s']:.2f} s")


def _train(config: TrainConfig, out: Path, *, resume: bool, progress: bool | None) -> dict[str, Any]:
    ckpt_path = out / "checkpoint.pt"
    state = _resume_state(config, out, resume)  # load and check before any other work
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
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay, nesterov=config.nesterov and config.momentum > 0)
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
            raise checkpoint.CheckpointError(f"{ckpt_path} does not match this run ({checkpoint.first_line(exc, 300)}); "
                                            "move it aside or delete it to start over") from None
        history = list(state["history"])
        log.info("%s %s s%d: resuming %s after epoch %d of %d", config.dataset, config.method, config.seed, out,
                 len(history), config.epochs)
    else:
        log.info("%s %s s%d: training %s for %d epochs into %s", config.dataset, config.method, config.seed,
                 config.model_name, config.epochs, out)

    out.mkdir(parents=True, exist_ok=True)
    checkpoint.write_text(out / "config.yaml", yaml.safe_dump({**config.to_dict(), "model": config.model_name}, sort_keys=False))

    # -- the loop ----------------------------------------------------------------------------
    # Resuming purges events logged after the checkpoint's epoch, so the curves show the run that counts.
    board = tensorboard_writer(out, purge_step=len(history) + 1) if config.tensorboard else None
    show_bar = sys.stderr.isatty() if progress is None else progress
    log_every = max(1, config.epochs // 10)  # without a bar, a line per tenth of the run
    bar = tqdm(total=config.epochs, initial=len(history), desc=f"{config.method} s{config.seed}", unit="epoch",
               disable=not show_bar, leave=False)
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
            if config.label_smoothing > 0 or step_mixer is None:  # smoothed before any mixing, as timm does
                y = one_hot(y, splits.num_classes, smoothing=config.label_smoothing)
            logits, targets = (model(x), y) if step_mixer is None else step_mixer(x, y)
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
        # The weights of the epoch chosen on validation, for evaluation; written before the checkpoint
        # so that a kill between the two makes the resumed run rewrite it, never skip it.
        if select_best(history) is history[-1]:
            checkpoint.save(out / "best.pt", {"config": config.to_dict(), "model": model.state_dict(), "epoch": epoch})
        # Checkpoint, then the metrics file derived from it: a kill between the two only
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
        if board is not None:
            for key, value in history[-1].items():
                if key != "epoch" and value is not None:
                    board.add_scalar(f"train/{key}", value, epoch)
            board.flush()
        loud = not show_bar and (epoch % log_every == 0 or epoch == config.epochs)
        log.log(logging.INFO if loud else logging.DEBUG, "%s", _epoch_line(config, history[-1]))
    bar.close()
    if board is not None:
        board.close()
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
    log.debug("%s %s s%d: test accuracy %.2f%% at epoch %d (best validation accuracy)", config.dataset,
              config.method, config.seed, 100 * best["test_acc"], best["epoch"])
    return summary


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, TrainConfig]:
    """Rebuild the trained model of a run from ``checkpoint.pt`` (last epoch) or ``best.pt`` (the epoch
    chosen on validation), for analysis and evaluation."""
    state = checkpoint.load(path)
    config = checkpoint.saved_config(state, path)
    info = dataset_info(config.dataset, toy_classes=config.toy_classes, toy_dim=config.toy_dim,
                        train_size=config.train_size)  # shapes only: no need to load the data
    model = build_model(config.model_name, input_shape=info.input_shape, num_classes=info.num_classes)
    model.load_state_dict(state["model"])
    return model.eval(), config


__all__ = ["train", "evaluate", "select_best", "build_mixer", "load_splits", "model_from_checkpoint"]

