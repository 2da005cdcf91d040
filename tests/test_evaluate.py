"""multimix.evaluate against values worked out by hand or computed directly from the definitions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import read_metrics, write_idx_release
from multimix.evaluate import (
    alignment,
    aupr,
    auroc,
    calibration,
    embeddings,
    expected_calibration_error,
    fgsm,
    fpr_at_tpr,
    ood_score,
    pgd,
    reliability_diagram,
    robust_accuracy,
    uniformity,
)


def test_ece_is_zero_when_confidence_equals_accuracy():
    probs = torch.tensor([[0.8, 0.2]] * 10 + [[0.5, 0.5]] * 4)
    labels = torch.tensor([0] * 8 + [1] * 2 + [0, 0, 1, 1])  # 80% right at 0.8; 50% right at 0.5
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-7)


def test_constant_confidence_at_lower_accuracy():
    probs = torch.tensor([[0.9, 0.1]] * 10)
    labels = torch.tensor([0] * 6 + [1] * 4)
    got = calibration(probs, labels)
    assert got["ece"] == pytest.approx(0.3, abs=1e-6) and got["mce"] == pytest.approx(0.3, abs=1e-6)
    assert got["brier"] == pytest.approx(0.6 * 0.02 + 0.4 * 1.62, abs=1e-6)
    assert got["nll"] == pytest.approx(-(0.6 * math.log(0.9) + 0.4 * math.log(0.1)), abs=1e-6)
    with pytest.raises(
        ValueError, match="labels must be a \\(N,\\) tensor matching probs' 10 rows"
    ):
        calibration(probs, labels[:3])
    with pytest.raises(ValueError, match="bins must be an integer >= 1, got 0"):
        expected_calibration_error(probs, labels, bins=0)


def test_reliability_diagram_is_a_png(tmp_path):
    probs = torch.softmax(torch.randn(200, 4, generator=torch.Generator().manual_seed(0)), 1)
    reliability_diagram(probs, torch.randint(4, (200,)), tmp_path / "r.png", title="test")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_fgsm_on_a_linear_model_steps_by_eps_times_the_sign_of_the_weight_difference():
    torch.manual_seed(0)
    model = nn.Linear(5, 2)
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 0, 1, 1, 0])
    adv = fgsm(model, x, y, eps=0.25)
    w = model.weight.detach()
    away = torch.where(y[:, None] == 0, (w[1] - w[0]).sign(), (w[0] - w[1]).sign())
    assert torch.allclose(adv - x, 0.25 * away)
    assert torch.equal(
        fgsm(model, x, y, eps=0.25, clamp=(-0.1, 0.1)), (x + 0.25 * away).clamp(-0.1, 0.1)
    )


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x):
        return self.net(x)


def test_attacks_leave_the_model_as_it_was_and_pgd_stays_in_the_box():
    torch.manual_seed(0)
    model = BNNet().train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)  # a gradient the user was accumulating
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(16, 6), torch.randint(3, (16,))
    eps = 0.1
    adv_f = fgsm(model, x, y, eps=eps, clamp=(0.0, 1.0))
    adv_p = pgd(
        model, x, y, eps=eps, steps=20, step_size=eps / 4, random_start=False, clamp=(0.0, 1.0)
    )
    adv_r = pgd(
        model, x, y, eps=eps, steps=5, clamp=(0.0, 1.0), generator=torch.Generator().manual_seed(0)
    )
    assert model.training
    # BN statistics included
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    for adv in (adv_f, adv_p, adv_r):
        assert (
            float((adv - x).abs().max()) <= eps + 1e-6
            and float(adv.min()) >= 0
            and float(adv.max()) <= 1
        )
    model.eval()
    loss = lambda a: float(nn.functional.cross_entropy(model(a), y, reduction="sum").detach())  # noqa: E731
    assert loss(adv_p) >= loss(adv_f) - 1e-5 > loss(x)
    assert robust_accuracy(
        model, x, y, attack="pgd", eps=eps, steps=5, batch_size=5
    ) <= robust_accuracy(model, x, y, attack="fgsm", eps=0.0)  # ε = 0 is clean accuracy


def test_attack_arguments_are_checked():
    model, x, y = nn.Linear(3, 2), torch.randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(
        ValueError, match=r"eps must be a finite number >= 0 \(in input units\), got -0.1"
    ):
        fgsm(model, x, y, eps=-0.1)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        pgd(model, x, y, eps=0.1, steps=0)
    with pytest.raises(ValueError, match="clamp must be None or \\(low, high\\)"):
        fgsm(model, x, y, eps=0.1, clamp=(1, 0))
    with pytest.raises(ValueError, match="attack must be one of fgsm, pgd, got 'cw'"):
        robust_accuracy(model, x, y, attack="cw", eps=0.1)


def test_auroc_is_the_pairwise_fraction_and_fpr95_counts_ties():
    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.randint(0, 6, (40,), generator=g).float(),
        torch.randint(0, 5, (30,), generator=g).float(),
    )
    pairwise = float(
        (a[:, None] > b[None]).double().mean() + 0.5 * (a[:, None] == b[None]).double().mean()
    )
    assert auroc(a, b) == pytest.approx(pairwise, abs=1e-12)
    assert 0 <= aupr(a, b) <= 1 and aupr(a + 100, b) == pytest.approx(1.0)
    inside = torch.tensor([1, 2, 2, 3, 3, 3, 4, 4, 4, 4.0])
    outside = torch.tensor([0, 1, 1, 2, 2, 3, 3, 3, 3, 4.0])
    # Only threshold 1 keeps TPR >= 95%: 9/10 out pass
    assert fpr_at_tpr(inside, outside, 0.95) == pytest.approx(0.9)
    # Threshold 2 keeps 90%: 7/10 out pass
    assert fpr_at_tpr(inside, outside, 0.9) == pytest.approx(0.7)
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    assert torch.allclose(ood_score(logits, "msp"), torch.tensor([1 / (1 + math.exp(-2)), 0.5]))
    assert torch.allclose(ood_score(logits, "energy"), torch.logsumexp(logits, 1))
    with pytest.raises(ValueError, match="kind must be one of msp, max-logit, energy"):
        ood_score(logits, "odin")


def test_alignment_and_uniformity_follow_their_definitions():
    g = torch.Generator().manual_seed(0)
    z, labels = torch.randn(30, 8, generator=g), torch.randint(3, (30,), generator=g)
    zn = z / z.norm(dim=1, keepdim=True)
    d = torch.cdist(zn, zn)
    pairs = [(i, j) for i in range(30) for j in range(30) if i != j]
    same = [(i, j) for i, j in pairs if labels[i] == labels[j]]
    assert alignment(z, labels) == pytest.approx(
        float(sum(d[i, j] ** 2 for i, j in same) / len(same)), rel=1e-5
    )
    expected = math.log(sum(math.exp(-2 * float(d[i, j]) ** 2) for i, j in pairs) / len(pairs))
    assert uniformity(z) == pytest.approx(expected, rel=1e-5)


def test_embeddings_are_the_classifier_input(mlp):
    x = torch.randn(7, 6)
    mlp.train()
    z = embeddings(mlp, x, "fc", batch_size=3)
    assert torch.allclose(z, mlp.encoder(x)) and mlp.training


@pytest.mark.slow  # evaluate: alignment and uniformity over all pairs of test embeddings, a t-SNE
def test_multimix_evaluate_end_to_end(tmp_path, capsys):
    import json

    from multimix.cli import main

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "toy",
                "--train-size",
                "400",
                "--epochs",
                "3",
                "--threads",
                "1",
                "--quiet",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert (run / "best.pt").is_file()
    capsys.readouterr()
    assert (
        main(["evaluate", str(run), "--pgd-steps", "3", "--attack-examples", "200", "--quiet"]) == 0
    )
    printed = capsys.readouterr().out
    result = json.loads((run / "eval.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    # Which weights were measured: best.pt, at the epoch chosen on validation (tests/test_corruption.py)
    assert result["weights"] == f"best.pt (epoch {summary['best']['epoch']})"
    assert f"| {run} | {result['weights']} |" in printed
    # The epoch chosen on validation
    assert result["test_acc"] == pytest.approx(summary["best"]["test_acc"])
    assert (
        0 <= result["pgd_acc"] <= result["fgsm_acc"] + 0.05
        and result["fgsm_acc"] <= result["test_acc"] + 0.05
    )
    for kind in ("gaussian", "uniform", "shuffled"):
        assert 0 <= result[f"ood_{kind}_auroc"] <= 1 and 0 <= result[f"ood_{kind}_fpr95"] <= 1
    assert 0 <= result["ece"] <= 1 and result["alignment"] >= 0
    for png in ("reliability.png", "embedding.png"):
        assert (run / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--eps", "-1"], "invalid value for --eps: -1.0"),
        (["--pgd-steps", "0"], "invalid value for --pgd-steps: 0"),
        (
            ["--ood", "svhn"],
            "invalid value for --ood: 'svhn'; valid sets: gaussian, uniform, shuffled",
        ),
        (["--attacks", "cw"], "invalid value for --attacks: 'cw'; valid attacks: fgsm, pgd"),
    ],
)
def test_multimix_evaluate_bad_input(tmp_path, capsys, argv, message):
    from multimix.cli import main

    (tmp_path / "run").mkdir()
    torch.save({}, tmp_path / "run" / "best.pt")
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(tmp_path / "run"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and message in err[0]


def test_multimix_evaluate_needs_a_run_folder(tmp_path, capsys):
    from multimix.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(tmp_path)])
    assert exc.value.code == 2 and "holds no best.pt or checkpoint.pt" in capsys.readouterr().err


@pytest.mark.slow  # two runs trained, then evaluated (all-pairs embedding metrics, t-SNE) twice
def test_compare_evaluate_adds_the_columns(tmp_path, capsys):
    import csv

    from multimix.cli import main

    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                "--dataset",
                "toy",
                "--train-size",
                "300",
                "--epochs",
                "2",
                "--threads",
                "1",
                "--quiet",
                "--methods",
                "erm,mixup",
                "--seeds",
                "1",
                "--out",
                str(out),
                "--evaluate",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "ECE (%)" in printed and "PGD acc (%)" in printed and "| mixup | 1 |" in printed
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {
        "ece",
        "fgsm_acc",
        "pgd_acc",
        "ood_auroc",
        "ood_fpr95",
        "alignment",
        "uniformity",
    } <= set(rows[0])
    assert (out / "evaluation.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "erm" / "seed0" / "eval.json").is_file()


@pytest.mark.slow  # evaluate: alignment and uniformity over all pairs of test embeddings, a t-SNE
def test_tensorboard_curves_and_evaluation(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from multimix.cli import main

    run = tmp_path / "run"
    argv = [
        "train",
        "--dataset",
        "toy",
        "--train-size",
        "300",
        "--epochs",
        "3",
        "--threads",
        "1",
        "--quiet",
        "--tensorboard",
        "--out",
        str(run),
    ]
    assert main(argv) == 0
    assert main(["evaluate", str(run), "--attacks", "fgsm", "--quiet"]) == 0
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    metrics = read_metrics(run)
    val = events.Scalars("train/val_acc")
    assert [e.step for e in val] == [1, 2, 3]
    assert [round(e.value, 5) for e in val] == [round(m["val_acc"], 5) for m in metrics]
    assert {"train/train_loss", "train/lr", "eval/ece", "eval/fgsm_acc"} <= set(
        events.Tags()["scalars"]
    )


def test_fashion_mnist_runs_are_tested_against_mnist_as_ood(tmp_path):
    import json

    from multimix.cli import main

    write_idx_release(tmp_path / "data" / "fashion-mnist", n_train=200, n_test=50, seed=0)
    write_idx_release(tmp_path / "data" / "mnist", n_train=200, n_test=30, seed=1)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                str(tmp_path / "data"),
                "--epochs",
                "1",
                "--threads",
                "1",
                "--quiet",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert main(["evaluate", str(run), "--attacks", "", "--ood", "shuffled", "--quiet"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert {"ood_shuffled_auroc", "ood_mnist_auroc", "ood_mnist_fpr95"} <= set(result)
    assert "fgsm_acc" not in result and result["eps"] == 0.1  # the pixel budget of the 28×28 sets


def test_without_mnist_files_scikit_learn_digits_are_the_real_ood_set(tmp_path):
    import json

    from multimix.cli import main
    from multimix.data import digits
    from multimix.train.evaluation import _files_found

    framed = digits.load_28x28()
    assert framed.shape == (1797, 1, 28, 28) and framed.min() >= 0 and framed.max() <= 1
    # MNIST's empty frame
    assert framed[:, :, :4].abs().sum() == 0 and framed[:, :, :, -4:].abs().sum() == 0
    assert framed[:, :, 4:24, 4:24].mean() > 0.1  # the digit fills the 20×20 box
    data = tmp_path / "data"
    write_idx_release(data / "fashion-mnist", n_train=200, n_test=50, seed=0)
    if _files_found("mnist", str(data)):
        pytest.skip("MNIST's files are installed here: they are used instead")
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                str(data),
                "--epochs",
                "1",
                "--threads",
                "1",
                "--quiet",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert main(["evaluate", str(run), "--attacks", "", "--ood", "gaussian", "--quiet"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert 0 <= result["ood_digits_auroc"] <= 1 and 0 <= result["ood_digits_fpr95"] <= 1
    assert "ood_mnist_auroc" not in result


def test_eval_table_has_a_column_for_every_metric_seen():
    from multimix.train.evaluation import format_eval_table

    table = format_eval_table(
        [
            {"run": "a", "test_acc": 0.5, "seconds": 1.0},
            {"run": "b", "test_acc": 0.75, "ood_mnist_auroc": 0.9},
        ]
    )
    assert "| a | — | 0.5000 | — |" in table and "| b | — | 0.7500 | 0.9000 |" in table
    assert "| run | weights | test_acc | ood_mnist_auroc |" in table
