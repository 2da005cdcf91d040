"""Run under ``python -m torch.distributed.run --standalone --nproc_per_node 2 lightning_ddp_worker.py OUT``
by tests/test_lightning.py: Lightning detects torchrun's environment and starts no processes of its own.

Each rank writes ``OUT/rank<r>.pt``: its final weights after 2 epochs of MultiMix under
``strategy="ddp"`` (gloo), the batches it trained on, and the final weights of a run stopped after epoch
1 and resumed from its checkpoint by a fresh Trainer (``ckpt_path=``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_modules import QUIET, Classifier, digit_tensors, loader, weights

BATCH = 16  # per process


def trainer(epochs: int, root: Path, **kwargs: object) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        strategy="ddp",
        devices=2,
        max_epochs=epochs,
        default_root_dir=root,
        num_sanity_val_steps=0,
        **QUIET,
        **kwargs,
    )


def main(out: Path) -> None:
    x, y, _, _ = digit_tensors(128)  # 4 steps per epoch: 2 processes × 16
    data = loader(x, y, BATCH, shuffle=True)

    full = Classifier(
        "multimix", seed=0
    )  # the same seed on every rank: see docs/how-to/lightning.md
    trainer(2, out / "full", enable_checkpointing=False).fit(full, data)

    stopped = Classifier("multimix", seed=0)
    every_epoch = ModelCheckpoint(dirpath=out / "ckpt", save_top_k=-1)
    trainer(1, out / "stopped", callbacks=[every_epoch]).fit(stopped, data)
    resumed = Classifier(
        "multimix", seed=7
    )  # other initial weights and draws: all from the checkpoint
    path = every_epoch.best_model_path or str(next((out / "ckpt").glob("*.ckpt")))
    trainer(2, out / "resumed", enable_checkpointing=False).fit(resumed, data, ckpt_path=path)

    rank = int(os.environ["RANK"])
    torch.save(
        {"weights": weights(full), "batches": full.batches, "resumed": weights(resumed)},
        out / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
