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

import contextlib
import json
import logging
import math
import sys
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from multimix.data import Splits, dataset_info, load_dataset
from multimix.data.augment import AUGMENTATIONS
from multimix.functional import one_hot, soft_cross_entropy
from multimix.models import build_model
from multimix.schedules import make_schedule
from multimix.teacher import EMATeacher
from multimix.train import checkpoint, distributed
from multimix.train.config import ConfigError, TrainConfig
from multimix.train.graphs import GraphedStep
from multimix.train.methods import build_mixer
from multimix.train.preflight import check_runnable
from multimix.train.runlock import FolderInUse, RunLock

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
        train_subset=config.train_subset,
    )


@torch.no_grad()
def evaluate(model: nn.Module, data: TensorDataset, num_classes: int, *, batch_size: int, device: torch.device,
             amp: str = "none", channels_last: bool = False) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``data``.

    Under torchrun each process evaluates its contiguous share and the sums are added across
    processes, so every process returns the figures of the whole set. Sums stay on the device: one
    transfer to the host at the end.
    """
    model.eval()
    x_all, y_all = data.tensors
    part = distributed.share(len(y_all), distributed.rank(), distributed.world_size())
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss, correct
    for start in range(part.start, part.stop, batch_size):
        stop = min(start + batch_size, part.stop)
        x = _layout(x_all[start:stop].to(device, non_blocking=True), channels_last)
        y = y_all[start:stop].to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        sums[0] += torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        sums[1] += (logits.argmax(1) == y).sum()
    loss_sum, correct = distributed.all_reduce_sum(sums).tolist()
    return {"loss": loss_sum / len(y_all), "acc": correct / len(y_all)}


def _autocast(device: torch.device, amp: str, *, cache: bool = True):
    """Autocast to ``amp`` ("bf16", "fp16") on ``device``; a no-op context for "none". ``cache=False``
    under CUDA graphs: autocast's cache of cast weights would outlive the capture."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=cache)


def _lr_as(optimizer: torch.optim.Optimizer, like: float | Tensor) -> None:
    """Hold every group's learning rate as ``like`` does: a tensor (updated in place, for CUDA graphs)
    or a float. A checkpoint keeps the form of the run that wrote it."""
    for group in optimizer.param_groups:
        for key in ("lr", "initial_lr"):
            if key in group:
                value = float(group[key])
                group[key] = torch.tensor(value, device=like.device) if isinstance(like, Tensor) else value


def _layout(x: Tensor, channels_last: bool) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches in an epoch of :func:`epoch_batches`."""
    return n // batch_size if n >= batch_size else 1


def epoch_batches(n: int, batch_size: int, generator: torch.Generator,
                  device: torch.device | None = None) -> Iterator[Tensor]:
    """The global batches of one epoch: index tensors into the training set, in a seeded random order.

    The last partial batch is dropped when there is at least one full batch (mixup and batch norm
    dislike a batch of one). A second permutation is drawn and discarded after the last batch, as
    ``BatchSampler(RandomSampler(...))`` does, so that runs keep every draw of earlier versions. The
    order is drawn on the CPU (the same on every device) and moved to ``device`` once per epoch.
    """
    perm = torch.randperm(n, generator=generator)
    if device is not None and device.type == "cuda":
        perm = perm.pin_memory().to(device, non_blocking=True)  # pinned: the copy does not wait for the GPU
    if n < batch_size:
        torch.randperm(n, generator=generator)
        yield perm
        return
    yield from perm[: n - n % batch_size].split(batch_size)
    torch.randperm(n, generator=generator)  # RandomSampler's trailing draw (its num_samples % n tail)


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

    Everything that can be checked without data is checked before the folder is touched. Started by
    ``torchrun``, every process calls this: they join one process group (:mod:`.distributed`), rank 0
    alone holds the folder and writes into it, and every rank returns the same summary.
    """
    config.validate()
    check_runnable(config)
    out = Path(out)
    with distributed.process_group(config.device) as world:
        with contextlib.ExitStack() as stack:
            # Rank 0 takes the folder and reads the checkpoint; every rank learns the outcome, so an
            # error there ends every process with the same message instead of leaving them waiting.
            outcome: tuple[str, Any] = ("ok", None)
            if world.is_main:
                try:
                    stack.enter_context(RunLock(out))
                    outcome = ("ok", _resume_state(config, out, resume))
                except (ConfigError, checkpoint.CheckpointError, FolderInUse) as exc:
                    if world.world_size == 1:
                        raise
                    outcome = ("error", exc)
            outcome = distributed.broadcast_object((outcome[0], outcome[1] if outcome[0] == "ok" else
                                                    (type(outcome[1]).__name__, str(outcome[1]))), world)
            if outcome[0] == "error":
                name, message = outcome[1]
                raise (FolderInUse if name == "FolderInUse" else
                       checkpoint.CheckpointError if name == "CheckpointError" else ConfigError)(message)
            return _train(config, out, world, outcome[1], progress=progress)


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
            + (f"test {100 * record['test_acc']:.1f}% · " if record["test_acc"] is not None else "")
            + f"{record['time_s']:.2f} s")


def _train(config: TrainConfig, out: Path, world: distributed.Dist, state: dict[str, Any] | None, *,
           progress: bool | None) -> dict[str, Any]:
    ckpt_path = out / "checkpoint.pt"
    if config.threads:
        torch.set_num_threads(config.threads)
    device = distributed.rank_device(config.device, world)
    main = world.is_main

    # -- data, model, method, optimiser ------------------------------------------------------
    splits = load_splits(config)
    # Small datasets live on the device: batches are sliced there, no loader round trip.
    train_x, train_y = (t.to(device) for t in splits.train.tensors)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = build_model(config.model_name, input_shape=splits.input_shape, num_classes=splits.num_classes).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # What the step calls (the model in DDP under torchrun, compiled if asked) and what evaluates.
    # Dense MultiMix classifies positions of the features: what follows them gets no gradient.
    model, net, eval_net = distributed.wrap_model(model, world, device, sync_bn=config.sync_bn,
                                                  compile=config.compile,
                                                  find_unused_parameters=config.method == "dense-multimix")
    data_gen = torch.Generator().manual_seed(config.seed)  # data order and augmentation, the same on every rank
    # On a GPU, augmentation draws on the GPU: drawing on the host and copying would wait for it.
    aug_gen = data_gen if device.type == "cpu" else torch.Generator(device=device).manual_seed(config.seed)
    # Mixing draws: the same on every rank for global scope (one Λ over the global batch), each rank
    # its own for local scope (rank 0 keeps the single-process stream).
    mix_seed = config.seed + 1 + (world.rank << 32 if config.mix_scope == "local" else 0)
    mix_gen = torch.Generator(device=device).manual_seed(mix_seed)
    teacher = None if config.teacher_momentum is None else EMATeacher(model, momentum=config.teacher_momentum)
    mixer = build_mixer(config, model, splits.num_classes, mix_gen, teacher, wrapped=net)  # hooks before any compiled call

    steps = steps_per_epoch(len(train_y), config.batch_size)
    fused = {"fused": True} if device.type == "cuda" else {}  # fused steps take the fp16 scaler's flag on device
    # In a CUDA graph the optimiser reads its learning rate from a tensor the scheduler updates in place
    # (a Python float would be frozen into the graph); Adam then keeps its step count on the GPU too.
    lr = torch.tensor(config.lr, device=device) if config.cuda_graph else config.lr
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=config.weight_decay,
                                     capturable=config.cuda_graph, **fused)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay, nesterov=config.nesterov and config.momentum > 0,
                                    **fused)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    total_steps = config.epochs * steps
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
    best_weights: dict[str, Tensor] | None = None  # test_every "end": the best-validation weights so far, on the host
    if state is not None:
        saved_world = state.get("world_size", 1)
        if saved_world != world.world_size:
            raise ConfigError(f"cannot resume {out} with {world.world_size} process(es): it was trained with "
                              f"{saved_world}, and each process's mixing draws are part of its state; resume with "
                              f"the command that started it ({saved_world} process(es))")
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            _lr_as(optimizer, lr)  # a run resumed with(out) --cuda-graph keeps its learning rates as this run holds them
            scheduler.load_state_dict(state["scheduler"])
            if "scaler" in state:
                scaler.load_state_dict(state["scaler"])
            if teacher is not None:
                teacher.load_state_dict(state["teacher"])
            torch.set_rng_state(state["rng"]["torch"])
            data_gen.set_state(state["rng"]["data"])
            if aug_gen is not data_gen and "augment" in state["rng"]:
                aug_gen.set_state(state["rng"]["augment"])
            if getattr(mixer, "host_generator", None) is not None and "mix_host_ranks" in state["rng"]:
                mixer.host_generator.set_state(state["rng"]["mix_host_ranks"][world.rank])
            mix_gen.set_state(state["rng"].get("mix_ranks", [state["rng"]["mix"]])[world.rank])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise checkpoint.CheckpointError(f"{ckpt_path} does not match this run ({checkpoint.first_line(exc, 300)}); "
                                            "move it aside or delete it to start over") from None
        history = list(state["history"])
        log.info("%s %s s%d: resuming %s after epoch %d of %d", config.dataset, config.method, config.seed, out,
                 len(history), config.epochs)
    else:
        log.info("%s %s s%d: training %s for %d epochs into %s%s", config.dataset, config.method, config.seed,
                 config.model_name, config.epochs, out,
                 f" with {world.world_size} processes" if world.world_size > 1 else "")

    if main:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.write_text(out / "config.yaml", yaml.safe_dump({**config.to_dict(), "model": config.model_name}, sort_keys=False))

    def train_step(batch: Tensor) -> Tensor:
        """One step on the global batch ``batch`` (indices): this rank's share, forward, backward, update.
        Returns the loss, detached; nothing here waits for the device."""
        x, y = train_x[batch], train_y[batch]
        if augment is not None:  # drawn for the global batch, so the draws do not depend on the ranks
            x = augment(x, generator=aug_gen)
        mine = distributed.share(len(batch), world.rank, world.world_size)
        x, y = _layout(x[mine], config.channels_last), y[mine]
        if config.label_smoothing > 0 or step_mixer is None:  # smoothed before any mixing, as timm does
            y = one_hot(y, splits.num_classes, smoothing=config.label_smoothing)
        with _autocast(device, config.amp, cache=not config.cuda_graph):
            logits, targets = (net(x), y) if step_mixer is None else step_mixer(x, y)
        loss = _global_mean_loss(logits.float(), targets, world.world_size)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if teacher is not None:
            teacher.update()
        return loss.detach()

    graphed = GraphedStep(train_step, generators=[mix_gen, aug_gen], device=device) if config.cuda_graph else None

    # -- the loop ----------------------------------------------------------------------------
    # Resuming purges events logged after the checkpoint's epoch, so the curves show the run that counts.
    board = tensorboard_writer(out, purge_step=len(history) + 1) if config.tensorboard and main else None
    show_bar = main and (sys.stderr.isatty() if progress is None else progress)
    log_every = max(1, config.epochs // 10)  # without a bar, a line per tenth of the run
    bar = tqdm(total=config.epochs, initial=len(history), desc=f"{config.method} s{config.seed}", unit="epoch",
               disable=not show_bar, leave=False)
    for epoch in range(len(history) + 1, config.epochs + 1):
        net.train()
        if schedule is not None:
            mixer.set_alpha(schedule(epoch - 1))  # α of this epoch, from 0-based epoch index
        # ConfMix waits for a model confident enough to say how much to mix: ERM first.
        step_mixer = None if config.method == "confmix" and epoch <= config.confmix_warmup else mixer
        start = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # on the device: no sync per step
        for batch in epoch_batches(len(train_y), config.batch_size, data_gen, device):
            if graphed is None:
                loss_sum += train_step(batch)
            else:  # one graph per host-side decision: which mixer, its α, its choice for this step
                choice = None if step_mixer is None else step_mixer.decide()
                key = (id(step_mixer), getattr(step_mixer, "alpha", None), choice)
                loss_sum += graphed(batch, key)
            scheduler.step()
        # Each rank's loss is weighted so that the ranks' losses average to the global batch's mean.
        train_loss = distributed.all_reduce_sum(loss_sum).item() / world.world_size / steps
        train_time = time.perf_counter() - start

        val = evaluate(eval_net, splits.val, splits.num_classes, batch_size=config.eval_batch_size, device=device,
                       amp=config.amp, channels_last=config.channels_last)
        record = {"epoch": epoch, "val_loss": val["loss"], "val_acc": val["acc"]}
        # The test figures that are ever reported are those of the best-validation and the last epoch.
        improved = select_best([*history, record]) is record
        needed = (config.test_every == "epoch" or epoch == config.epochs
                  or (config.test_every == "improvement" and improved))
        if improved and config.test_every == "end":  # tested after the last epoch (below)
            best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        test = (evaluate(eval_net, splits.test, splits.num_classes, batch_size=config.eval_batch_size, device=device,
                         amp=config.amp, channels_last=config.channels_last)
                if needed else {"loss": None, "acc": None})
        history.append({
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val["loss"], "val_acc": val["acc"],
            "test_loss": test["loss"], "test_acc": test["acc"],
            "lr": float(optimizer.param_groups[0]["lr"]),
            "alpha": getattr(step_mixer, "alpha", None),
            "time_s": train_time,
        })
        mix_states = distributed.all_gather_objects(mix_gen.get_state(), world)  # a collective: every rank
        host_gen = getattr(mixer, "host_generator", None)
        host_states = distributed.all_gather_objects(None if host_gen is None else host_gen.get_state(), world)
        if main:
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
                "scaler": scaler.state_dict(),
                "teacher": None if teacher is None else teacher.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "data": data_gen.get_state(), "mix": mix_states[0],
                        "mix_ranks": mix_states,
                        **({"augment": aug_gen.get_state()} if aug_gen is not data_gen else {}),
                        **({"mix_host_ranks": host_states} if host_gen is not None else {})},
                "world_size": world.world_size,
                "history": history,
            })
            checkpoint.write_text(out / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))
        # No rank starts the next epoch before rank 0 has saved this one: a kill then loses no more
        # than the epoch under way, on every rank alike.
        distributed.barrier(world)
        bar.update(1)
        bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", val=f"{val['acc']:.3f}")
        if board is not None:
            for key, value in history[-1].items():
                if key != "epoch" and value is not None:
                    board.add_scalar(f"train/{key}", value, epoch)
            board.flush()
        loud = main and not show_bar and (epoch % log_every == 0 or epoch == config.epochs)
        log.log(logging.INFO if loud else logging.DEBUG, "%s", _epoch_line(config, history[-1]))
    bar.close()
    if board is not None:
        board.close()
    if mixer is not None:
        mixer.close()

    best = select_best(history)
    if best["test_acc"] is None:  # test_every "end": the weights chosen on validation, tested once
        if best_weights is None:  # a resumed run: they are in best.pt, which rank 0 reads
            best_weights = distributed.broadcast_object(
                checkpoint.load(out / "best.pt")["model"] if main else None, world)
        last_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_weights)
        test = evaluate(eval_net, splits.test, splits.num_classes, batch_size=config.eval_batch_size, device=device,
                        amp=config.amp, channels_last=config.channels_last)
        model.load_state_dict(last_weights)
        best.update(test_loss=test["loss"], test_acc=test["acc"])
        if main:
            checkpoint.write_text(out / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))
    summary = {
        "dataset": config.dataset,
        "model": config.model_name,
        "method": config.method,
        "seed": config.seed,
        "epochs": config.epochs,
        "processes": world.world_size,
        "final": {k: history[-1][k] for k in ("epoch", "val_acc", "test_acc", "val_loss", "test_loss")},
        "best": {k: best[k] for k in ("epoch", "val_acc", "test_acc", "val_loss", "test_loss")},
        "time_per_epoch_s": sum(r["time_s"] for r in history) / len(history),
    }
    if main:
        checkpoint.write_json(out / "summary.json", summary)
    log.debug("%s %s s%d: test accuracy %.2f%% at epoch %d (best validation accuracy)", config.dataset,
              config.method, config.seed, 100 * best["test_acc"], best["epoch"])
    return summary


def _global_mean_loss(logits: Tensor, targets: Tensor, world_size: int) -> Tensor:
    """The loss whose gradient, averaged over ranks by DDP, is that of the mean over all ranks' rows.

    In one process: the mean soft cross-entropy. Under torchrun each rank may hold a different
    number of rows (a global batch that does not split evenly; mixers that generate rows), so each
    rank's sum is divided by the rows of all ranks and multiplied by the number of ranks.
    """
    if world_size == 1:
        return soft_cross_entropy(logits, targets)
    rows = distributed.all_reduce_sum(torch.full((), float(logits.shape[0]), device=logits.device))  # no copy
    return soft_cross_entropy(logits, targets, reduction="sum") * (world_size / rows)


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

