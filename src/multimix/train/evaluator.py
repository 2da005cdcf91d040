"""Measuring a run while it trains: validation every epoch, and the test set as ``--test-every`` says.

The epoch a run reports is the one with the best validation accuracy (:func:`select_best`); its test
figures and the last epoch's are the only ones ever reported, so the test set need not be measured
every epoch. :class:`Evaluator` owns that policy:

- ``"epoch"``: the test set after every epoch;
- ``"improvement"``: after epochs that improve validation accuracy, and after the last;
- ``"end"``: once after training, on the best-validation weights (kept on the host, or read back
  from ``best.pt`` after a resume) and on the last ones.

All three report the same best- and final-epoch figures. (:mod:`multimix.train.evaluation` is the
other kind: calibration, attacks and OOD detection of a finished run.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from multimix.data import Splits
from multimix.train import distributed
from multimix.train.config import TrainConfig
from multimix.train.step import autocast, to_layout

#: The figures of one evaluation, or of one epoch's record.
Figures = dict[str, Any]


def select_best(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch with the highest validation accuracy (ties: lower validation loss, then earlier).
    A validation loss that is not a finite number (inf where a prediction gave a label probability
    0, None as read back from JSON) ranks last among the ties."""
    return min(history, key=lambda r: (-r["val_acc"], _finite_or_inf(r["val_loss"]), r["epoch"]))


def _finite_or_inf(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else math.inf


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TensorDataset,
    num_classes: int,
    *,
    batch_size: int,
    device: torch.device,
    amp: str = "none",
    channels_last: bool = False,
) -> dict[str, float]:
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
        x = to_layout(x_all[start:stop].to(device, non_blocking=True), channels_last)
        y = y_all[start:stop].to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        sums[0] += torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        sums[1] += (logits.argmax(1) == y).sum()
    loss_sum, correct = distributed.all_reduce_sum(sums).tolist()
    return {"loss": loss_sum / len(y_all), "acc": correct / len(y_all)}


class Evaluator:
    """Validation and test figures of each epoch, under the test policy of ``config.test_every``.

    Args:
        net: what evaluates (the model outside DDP, compiled if asked).
        model: the bare model, whose weights are kept or swapped for the deferred test ("end").
        splits: the run's data (its validation and test sets are used).
        config: the run's configuration (test policy, evaluation batch size, AMP, layout).
        device: where to evaluate.
    """

    def __init__(
        self,
        *,
        net: nn.Module,
        model: nn.Module,
        splits: Splits,
        config: TrainConfig,
        device: torch.device,
    ) -> None:
        self.net, self.model, self.splits, self.config, self.device = (
            net,
            model,
            splits,
            config,
            device,
        )
        self.policy = config.test_every
        self.best_weights: dict[str, Tensor] | None = (
            None  # "end": the best-validation weights so far, on the host
        )

    def measure(self, data: TensorDataset) -> dict[str, float]:
        c = self.config
        return evaluate(
            self.net,
            data,
            self.splits.num_classes,
            batch_size=c.eval_batch_size,
            device=self.device,
            amp=c.amp,
            channels_last=c.channels_last,
        )

    def after_epoch(self, epoch: int, history: list[dict[str, Any]]) -> Figures:
        """Validation (and, if the policy says so, test) loss and accuracy after epoch ``epoch``;
        ``history`` holds the epochs before it. Test figures not measured are None."""
        val = self.measure(self.splits.val)
        record = {"epoch": epoch, "val_loss": val["loss"], "val_acc": val["acc"]}
        improved = select_best([*history, record]) is record
        needed = (
            self.policy == "epoch"
            or epoch == self.config.epochs
            or (self.policy == "improvement" and improved)
        )
        if improved and self.policy == "end":  # tested after the last epoch (finish)
            self.best_weights = {
                k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
            }
        test = self.measure(self.splits.test) if needed else {"loss": None, "acc": None}
        return {
            "val_loss": val["loss"],
            "val_acc": val["acc"],
            "test_loss": test["loss"],
            "test_acc": test["acc"],
        }

    def finish(
        self, history: list[dict[str, Any]], read_best_weights: Callable[[], dict[str, Tensor]]
    ) -> tuple[dict[str, Any], bool]:
        """The best-validation epoch's record with its test figures: measured now if the policy left them
        out, on its weights (``read_best_weights`` reads them where this process did not keep them:
        a resumed run's ``best.pt``), the model's own weights restored after. Returns the record and
        whether it was measured now (so the metrics file must be rewritten)."""
        best = select_best(history)
        if best["test_acc"] is not None:
            return best, False
        weights = self.best_weights if self.best_weights is not None else read_best_weights()
        last = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(weights)
        test = self.measure(self.splits.test)
        self.model.load_state_dict(last)
        best.update(test_loss=test["loss"], test_acc=test["acc"])
        return best, True


__all__ = ["select_best", "evaluate", "Evaluator"]
