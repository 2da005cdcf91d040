"""multimix.train.evaluator (validation and the --test-every policy) and multimix.train.reporting."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from multimix.data import Splits
from multimix.train.config import TrainConfig
from multimix.train.evaluator import Evaluator, evaluate, select_best
from multimix.train.reporting import NullReporter, ProgressReporter, make_reporter

CPU = torch.device("cpu")


def _splits() -> Splits:
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(40, 3, generator=g) for _ in range(3)]
    sets = [TensorDataset(x, (x[:, 0] < 0).long()) for x in xs]  # class 1 where x0 < 0
    return Splits("toy", *sets, num_classes=2, input_shape=(3,))


def _evaluator(policy: str, model: nn.Module, epochs: int = 4) -> Evaluator:
    config = TrainConfig.from_dict({"dataset": "toy", "epochs": epochs, "test_every": policy})
    return Evaluator(net=model, model=model, splits=_splits(), config=config, device=CPU)


def _run(policy: str, weights: list[float]) -> tuple[list[dict], Evaluator, nn.Linear]:
    """Epochs whose 'training' sets the model's weights to each value in turn."""
    model = nn.Linear(3, 2)
    evaluator = _evaluator(policy, model, epochs=len(weights))
    history: list[dict] = []
    for epoch, w in enumerate(weights, 1):
        with torch.no_grad():
            model.weight.copy_(torch.tensor([[w, 0, 0], [-w, 0, 0]]))
            model.bias.zero_()
        history.append({"epoch": epoch, **evaluator.after_epoch(epoch, history)})
    return history, evaluator, model


# w > 0 classifies every example right, w < 0 every one wrong: the best epoch is the first (the third ties
# on accuracy with a higher loss), neither the last nor the only improvement.
WEIGHTS = [1.0, -1.0, 0.5, -0.3]


def test_every_policy_reports_the_same_best_and_final_test_figures():
    results = {}
    for policy in ("epoch", "improvement", "end"):
        history, evaluator, model = _run(policy, WEIGHTS)
        last = model.weight.clone()
        best, _ = evaluator.finish(
            history, read_best_weights=lambda: pytest.fail("weights were kept")
        )
        assert torch.equal(model.weight, last)  # the last weights are back after the deferred test
        results[policy] = (
            best["epoch"],
            best["test_acc"],
            best["test_loss"],
            history[-1]["test_acc"],
        )
    assert results["epoch"] == results["improvement"] == results["end"]


def test_the_test_set_is_measured_only_where_the_policy_says():
    history, _, _ = _run("improvement", WEIGHTS)
    improved = [select_best(history[: i + 1]) is history[i] for i in range(len(history))]
    measured = [r["test_acc"] is not None for r in history]
    assert measured == [
        imp or r["epoch"] == len(WEIGHTS) for imp, r in zip(improved, history, strict=True)
    ]
    history, _, _ = _run("end", WEIGHTS)
    assert [r["test_acc"] is not None for r in history] == [False, False, False, True]


def test_a_resumed_run_tests_the_weights_read_back_from_best_pt():
    history, evaluator, model = _run("end", WEIGHTS)
    best_epoch = select_best(history)["epoch"]
    kept = evaluator.best_weights
    evaluator.best_weights = None  # as after a resume: this process did not see the best epoch
    best, measured_now = evaluator.finish(history, read_best_weights=lambda: kept)
    assert measured_now and best["epoch"] == best_epoch
    model.load_state_dict(kept)
    assert best["test_acc"] == evaluate(model, _splits().test, 2, batch_size=7, device=CPU)["acc"]


def test_progress_lines_come_every_tenth_of_the_run_without_a_bar(caplog):
    config = TrainConfig.from_dict({"dataset": "toy", "epochs": 20})
    reporter = ProgressReporter(config, show_bar=False, initial=0)
    with caplog.at_level(logging.INFO, logger="multimix"):
        for epoch in range(1, 21):
            reporter.epoch(
                {"epoch": epoch, "train_loss": 0.5, "val_acc": 0.9, "test_acc": None, "time_s": 0.1}
            )
    reporter.close()
    loud = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert [line.split("epoch ")[1].split("/")[0] for line in loud] == [
        str(e) for e in range(2, 21, 2)
    ]
    assert loud[0] == "toy erm s0: epoch 2/20 · train loss 0.500 · val 90.0% · 0.10 s"


def test_other_ranks_report_nothing(tmp_path):
    config = TrainConfig.from_dict({"dataset": "toy", "tensorboard": True})
    assert isinstance(
        make_reporter(config, tmp_path, main=False, progress=True, history=[]), NullReporter
    )
    assert list(tmp_path.iterdir()) == []
