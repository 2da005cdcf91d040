"""Every bad input gets a clear error naming the argument, raised before any work is done."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import MLPNet
from multimix import ManifoldMixup, Mixup, MultiMix, soft_cross_entropy
from multimix import functional as MF

Y2 = MF.one_hot(torch.tensor([0, 1]), 2)


@pytest.mark.parametrize("alpha", [0, -1.0, math.inf, math.nan])
@pytest.mark.parametrize(
    "call",
    [
        lambda a: MF.sample_beta(3, a),
        lambda a: MF.sample_dirichlet(3, 2, a),
        lambda a: MF.mixup(torch.randn(2, 3), Y2, alpha=a),
        lambda a: MF.multimix(torch.randn(2, 3), Y2, alpha=a),
        lambda a: Mixup(MLPNet(), alpha=a),
        lambda a: ManifoldMixup(MLPNet(), layers=["input"], alpha=a),
        lambda a: MultiMix(MLPNet(), classifier="fc", alpha=a),
    ],
)
def test_bad_alpha(call, alpha):
    with pytest.raises(ValueError, match=r"alpha must be a finite number > 0, got"):
        call(alpha)


def test_alpha_of_wrong_type():
    with pytest.raises(TypeError, match="alpha"):
        MF.sample_dirichlet(3, 2, "1.0")
    with pytest.raises(ValueError, match="alpha must hold finite values >= 0"):
        MF.sample_beta(2, torch.tensor([-0.1, 1.0]))


@pytest.mark.parametrize("n", [0, -3])
def test_bad_n(n):
    with pytest.raises(ValueError, match=r"n must be >= 1, got"):
        MF.multimix(torch.randn(2, 3), Y2, n=n)
    with pytest.raises(ValueError, match=r"n must be >= 1, got"):
        MultiMix(MLPNet(), classifier="fc", n=n)
    with pytest.raises(TypeError, match=r"n must be an integer"):
        MF.multimix(torch.randn(2, 3), Y2, n=2.5)


def test_bad_m():
    with pytest.raises(ValueError, match=r"m must be in \[1, 2\], got 3"):
        MF.multimix(torch.randn(2, 3), Y2, m=3)
    with pytest.raises(ValueError, match=r"m must be in \[1, 2\], got 0"):
        MF.multimix(torch.randn(2, 3), Y2, m=0)
    with pytest.raises(ValueError, match=r"m must be >= 1, got 0"):
        MultiMix(MLPNet(), classifier="fc", m=0)


def test_batch_size_mismatch():
    with pytest.raises(
        ValueError, match="x and targets must have the same batch size, got 3 and 2"
    ):
        MF.mixup(torch.randn(3, 4), Y2, alpha=1.0)
    with pytest.raises(
        ValueError, match="z and targets must have the same batch size, got 3 and 2"
    ):
        MF.multimix(torch.randn(3, 4), Y2)
    mixer = MultiMix(MLPNet(), classifier="fc", num_classes=4)
    with pytest.raises(ValueError, match="x and y must have the same batch size, got 3 and 2"):
        mixer(torch.randn(3, 6), torch.tensor([0, 1]))


def test_labels_out_of_range():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\) for num_classes=3, got 3"):
        MF.one_hot(torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\).*got -1"):
        MultiMix(MLPNet(), classifier="fc", num_classes=4)(torch.randn(2, 6), torch.tensor([-1, 0]))


def test_bad_soft_targets():
    with pytest.raises(ValueError, match="labels must be non-negative"):
        MF.one_hot(torch.tensor([[1.2, -0.2], [0.5, 0.5]]), 2)
    with pytest.raises(
        ValueError, match=r"each row of labels must sum to 1, got a row summing to 0.6"
    ):
        MF.one_hot(torch.tensor([[0.3, 0.3], [0.5, 0.5]]), 2)
    with pytest.raises(ValueError, match="soft labels have 2 classes but num_classes=4"):
        MultiMix(MLPNet(), classifier="fc", num_classes=4)(torch.randn(2, 6), Y2)
    with pytest.raises(ValueError, match="must sum to 1"):
        MultiMix(MLPNet(), classifier="fc")(
            torch.randn(2, 6), torch.tensor([[2.0, 0, 0, 0], [1.0, 0, 0, 0]])
        )
    with pytest.raises(TypeError, match=r"convert integer labels with multimix.functional.one_hot"):
        MF.multimix(torch.randn(2, 3), torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "call",
    [
        lambda t: MF.mixup(torch.randn(2, 3), t, alpha=1.0),
        lambda t: MF.multimix(torch.randn(2, 3), t, n=4),
        lambda t: MF.dense_multimix(torch.randn(2, 3, 5), t, n=4),
    ],
    ids=["mixup", "multimix", "dense_multimix"],
)
def test_functional_ops_check_soft_target_values(call):
    with pytest.raises(
        ValueError, match="each row of targets must sum to 1, got a row summing to 2"
    ):
        call(2 * Y2)
    with pytest.raises(ValueError, match="targets must be non-negative"):
        call(torch.tensor([[1.5, -0.5], [0.0, 1.0]]))
    call(Y2)  # valid targets pass


def test_num_classes_missing_for_integer_labels():
    with pytest.raises(
        ValueError, match="num_classes is required when labels are integer class indices"
    ):
        Mixup(MLPNet())(torch.randn(2, 6), torch.tensor([0, 1]))


def test_unknown_layer_lists_valid_names():
    with pytest.raises(
        ValueError,
        match=r"classifier='head' is not a submodule of MLPNet; valid names: 'encoder', "
        r"'encoder.layer1', 'encoder.act', 'encoder.layer2', 'fc'",
    ):
        MultiMix(MLPNet(), classifier="head")
    with pytest.raises(ValueError, match=r"layers='layer9' is not a submodule.*'encoder.layer1'"):
        ManifoldMixup(MLPNet(), layers=["input", "layer9"])
    with pytest.raises(ValueError, match="layers must be a non-empty list"):
        ManifoldMixup(MLPNet(), layers=[])
    with pytest.raises(ValueError, match="layers must be a non-empty list"):
        ManifoldMixup(MLPNet(), layers="fc")


def test_failed_construction_leaves_no_hooks():
    model = MLPNet()
    with pytest.raises(ValueError, match="nope"):
        ManifoldMixup(model, layers=["fc", "nope"])
    assert all(not m._forward_hooks for m in model.modules())


def test_other_bad_arguments():
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\], got 1.5"):
        MultiMix(MLPNet(), classifier="fc", p=1.5)
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module"):
        MultiMix(lambda x: x, classifier="fc")
    with pytest.raises(ValueError, match="y is required in training mode"):
        MultiMix(MLPNet(), classifier="fc")(torch.randn(2, 6))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        MultiMix(MLPNet(), classifier="fc", num_classes=4)([1, 2], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="smoothing must be in"):
        MF.one_hot(torch.tensor([0]), 2, smoothing=1.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        soft_cross_entropy(torch.randn(2, 2), Y2, reduction="avg")
    with pytest.raises(ValueError, match="logits and targets must have the same shape"):
        soft_cross_entropy(torch.randn(2, 3), Y2)
    with pytest.raises(ValueError, match="x must hold at least one example"):
        MF.mixup(torch.randn(0, 3), torch.zeros(0, 2), alpha=1.0)
