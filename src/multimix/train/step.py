"""One training step, chosen once: eager, or replayed from CUDA graphs; and the batches it takes.

:class:`TrainStep` takes the indices of a global batch and the epoch's mixer (None: plain ERM) and
returns the step's loss, detached, without waiting for the device. How it runs — eagerly, or as
CUDA graph replays (:mod:`.graphs`) — is decided when it is built, so the loop has one call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from multimix.data.augment import AUGMENTATIONS
from multimix.functional import one_hot, soft_cross_entropy
from multimix.mixers import Mixer
from multimix.train import distributed
from multimix.train.config import TrainConfig
from multimix.train.graphs import GraphedStep
from multimix.train.state import RunState


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches in an epoch of :func:`epoch_batches`."""
    return n // batch_size if n >= batch_size else 1


def epoch_batches(
    n: int, batch_size: int, generator: torch.Generator, device: torch.device | None = None
) -> Iterator[Tensor]:
    """The global batches of one epoch: index tensors into the training set, in a seeded random order.

    The last partial batch is dropped when there is at least one full batch (mixup and batch norm
    dislike a batch of one). A second permutation is drawn and discarded after the last batch, as
    ``BatchSampler(RandomSampler(...))`` does, so that runs keep every draw of earlier versions. The
    order is drawn on the CPU (the same on every device) and moved to ``device`` once per epoch.
    """
    perm = torch.randperm(n, generator=generator)
    if device is not None and device.type == "cuda":
        # Pinned: the copy does not wait for the GPU
        perm = perm.pin_memory().to(device, non_blocking=True)
    if n < batch_size:
        torch.randperm(n, generator=generator)
        yield perm
        return
    yield from perm[: n - n % batch_size].split(batch_size)
    # RandomSampler's trailing draw (its num_samples % n tail)
    torch.randperm(n, generator=generator)


def autocast(device: torch.device, amp: str, *, cache: bool = True) -> torch.autocast:
    """Autocast to ``amp`` ("bf16", "fp16") on ``device``; disabled for "none". ``cache=False``
    under CUDA graphs: autocast's cache of cast weights would outlive the capture."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return torch.autocast(
        device_type=device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=cache
    )


def to_layout(x: Tensor, channels_last: bool) -> Tensor:
    """``x`` in NHWC memory layout if asked and it is a batch of images; unchanged otherwise."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def global_mean_loss(logits: Tensor, targets: Tensor, world_size: int) -> Tensor:
    """The loss whose gradient, averaged over ranks by DDP, is that of the mean over all ranks' rows.

    In one process: the mean soft cross-entropy. Under torchrun each rank may hold a different
    number of rows (a global batch that does not split evenly; mixers that generate rows), so each
    rank's sum is divided by the rows of all ranks and multiplied by the number of ranks.
    """
    if world_size == 1:
        return soft_cross_entropy(logits, targets)
    # No copy
    rows = distributed.all_reduce_sum(torch.full((), float(logits.shape[0]), device=logits.device))
    return soft_cross_entropy(logits, targets, reduction="sum") * (world_size / rows)


@dataclass
class TrainData:
    """The training set on the training device (small sets: batches are sliced there, no loader round
    trip), its number of classes, and its augmentation (None: none)."""

    x: Tensor
    y: Tensor
    num_classes: int
    augment: Callable[..., Tensor] | None = None

    @classmethod
    def on(
        cls,
        splits_train: torch.utils.data.TensorDataset,
        num_classes: int,
        augment: str | None,
        device: torch.device,
    ) -> TrainData:
        x, y = (t.to(device) for t in splits_train.tensors)
        return cls(x, y, num_classes, AUGMENTATIONS[augment] if augment else None)


class TrainStep:
    """``step(batch, mixer) -> loss``: this rank's share of the global batch ``batch`` (indices),
    forward (mixed by ``mixer`` unless None), backward, optimiser and scheduler step, teacher update.

    Args:
        state: the run's state (optimiser, scheduler, scaler, teacher, generators).
        net: what the step calls when not mixing (the model, wrapped for DDP/compile).
        data: the training set on the device.
        config: the run's configuration (label smoothing, AMP, layout, CUDA graphs).
        device: the training device.
    """

    def __init__(
        self,
        state: RunState,
        *,
        net: nn.Module,
        data: TrainData,
        config: TrainConfig,
        device: torch.device,
    ) -> None:
        self.state, self.net, self.data, self.config, self.device = state, net, data, config, device
        self.world_size = state.world.world_size
        self._mixer: Mixer | None = (
            None  # the mixer of the step under way (read inside a capture too)
        )
        gens = state.generators
        self._graphed = (
            GraphedStep(self._step, generators=[gens.mix, gens.augment], device=device)
            if config.cuda_graph
            else None
        )

    def __call__(self, batch: Tensor, mixer: Mixer | None) -> Tensor:
        self._mixer = mixer
        if self._graphed is None:
            loss = self._step(batch)
        else:  # one graph per host-side decision: which mixer, its α, its choice for this step
            choice = None if mixer is None else mixer.decide()
            loss = self._graphed(batch, (id(mixer), getattr(mixer, "alpha", None), choice))
        self.state.scheduler.step()
        return loss

    def epoch(self, mixer: Mixer | None) -> float:
        """One epoch of steps in the seeded order of ``state.generators.data``; the mean loss over its
        steps and the processes (one host sync, at the end)."""
        n, batch_size = len(self.data.y), self.config.batch_size
        # On the device: no sync per step
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for batch in epoch_batches(n, batch_size, self.state.generators.data, self.device):
            loss_sum += self(batch, mixer)
        # Each rank's loss is weighted so that the ranks' losses average to the global batch's mean.
        total = distributed.all_reduce_sum(loss_sum).item()
        return total / self.world_size / steps_per_epoch(n, batch_size)

    def _step(self, batch: Tensor) -> Tensor:
        config, data, state, mixer = self.config, self.data, self.state, self._mixer
        x, y = data.x[batch], data.y[batch]
        # Drawn for the global batch, so the draws do not depend on the ranks
        if data.augment is not None:
            x = data.augment(x, generator=state.generators.augment)
        mine = distributed.share(len(batch), state.world.rank, self.world_size)
        x, y = to_layout(x[mine], config.channels_last), y[mine]
        if config.label_smoothing > 0 or mixer is None:  # smoothed before any mixing, as timm does
            y = one_hot(y, data.num_classes, smoothing=config.label_smoothing)
        with autocast(self.device, config.amp, cache=not config.cuda_graph):
            logits, targets = (self.net(x), y) if mixer is None else mixer(x, y)
        loss = global_mean_loss(logits.float(), targets, self.world_size)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        if state.teacher is not None:
            state.teacher.update()
        return loss.detach()


__all__ = [
    "steps_per_epoch",
    "epoch_batches",
    "autocast",
    "to_layout",
    "global_mean_loss",
    "TrainData",
    "TrainStep",
]
