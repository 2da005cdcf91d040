"""LightningModules with a mixer in ``training_step``, shared by tests/test_lightning.py and the torchrun
worker tests/lightning_ddp_worker.py (which imports this file from its own folder).

Everything random is a function of a seed: the weights (``torch.manual_seed`` before building), the
mixer's draws (its own generator, saved in ``state_dict()`` as ``mixer._extra_state``) and the data order
(:class:`EpochShuffle`, a permutation of (seed, epoch)). Nothing draws from torch's global generator
during training, which Lightning's checkpoints do not save.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from multimix import DenseMultiMix, MultiMix, soft_cross_entropy
from multimix.data import digits

NUM_CLASSES = 10
QUIET = dict(enable_progress_bar=False, logger=False, enable_model_summary=False)


class EpochShuffle(Sampler[int]):
    """A shuffled order that is a function of (seed, epoch): Lightning calls ``set_epoch`` each epoch
    (also through the DistributedSampler it wraps a sampler in under DDP), so a resumed run sees the
    epochs it resumes in the order the uninterrupted run saw them."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def digit_tensors(train: int = 512) -> tuple[torch.Tensor, ...]:
    """scikit-learn's digits: (train, 1, 8, 8) training images and labels, and the whole test split."""
    x_train, y_train, x_test, y_test = digits.load()
    return x_train[:train], y_train[:train], x_test, y_test


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool) -> DataLoader:
    sampler = EpochShuffle(len(y)) if shuffle else None
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, sampler=sampler)


class MLP(nn.Module):
    """(b, 1, 8, 8) → flattened → 32 → ``fc`` (10 classes); no dropout, no batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.fc = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class ConvNet(nn.Module):
    """(b, 1, 8, 8) → ``features`` (b, 16, 4, 4), a spatial map of 16 positions → pooled → ``fc``.

    Batch norm (whose running statistics are buffers, in the checkpoint too) makes it learn in a few
    hundred steps; without it Dense MultiMix stays near chance for ~150 steps here."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.features = nn.Sequential(
            nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(self.stem(x))).flatten(1))


class Classifier(pl.LightningModule):
    """``self.net`` trained through ``self.mixer`` (MultiMix, Dense MultiMix, or none: ERM).

    ``splits`` > 1 emulates, in one process, DDP over that many ranks with local scope: the batch is
    cut into ``splits`` consecutive parts, part r is mixed by ``self.mixers[r]`` (whose generator is
    seeded as rank r's would be), and the loss is the mean of the parts' losses, which is what DDP's
    average of the ranks' gradients differentiates.
    """

    def __init__(
        self,
        method: str = "multimix",
        *,
        seed: int = 0,
        lr: float = 0.01,
        splits: int = 1,
        rank_seeds: bool = False,
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)  # the initial weights
        self.net: nn.Module = ConvNet() if method == "dense" else MLP()
        self.method, self.lr = method, lr
        self.mixers: list[nn.Module] = []
        for rank in range(splits):
            generator = torch.Generator().manual_seed(seed + 1 + (rank if rank_seeds else 0))
            if method == "multimix":
                mixer: nn.Module | None = MultiMix(
                    self.net, classifier="fc", n=64, num_classes=NUM_CLASSES, generator=generator
                )
            elif method == "dense":
                mixer = DenseMultiMix(
                    self.net,
                    features="features",
                    classifier="fc",
                    n=16,
                    num_classes=NUM_CLASSES,
                    generator=generator,
                )
            else:
                mixer = None
            if mixer is not None:
                self.mixers.append(mixer)
        if len(self.mixers) == 1:
            self.mixer = self.mixers[0]  # a submodule: its random state is in the checkpoint
        self.losses: list[float] = []
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []  # what this process trained on

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        self.batches.append((x, y))
        parts = max(1, len(self.mixers))
        losses = []
        for r, (xr, yr) in enumerate(zip(x.chunk(parts), y.chunk(parts), strict=True)):
            if self.mixers:
                logits, targets = self.mixers[r](xr, yr)
                losses.append(soft_cross_entropy(logits, targets))
            else:
                losses.append(nn.functional.cross_entropy(self.net(xr), yr))
        loss = torch.stack(losses).mean()
        self.losses.append(loss.item())
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        accuracy = (self.net(x).argmax(1) == y).float().mean()  # unmixed
        self.log("val_acc", accuracy)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


def weights(module: Classifier) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.net.state_dict().items()}
