"""Mixers on wrapped and sharded models: DistributedDataParallel around or inside, FSDP2's fully_shard.

The distributed cases run in real processes: ``torchrun --nproc_per_node 2`` with gloo on the CPU runs
``tests/wrapped_worker.py``, whose docstring says what each run computes. One launch does them all (a
launch costs seconds; the runs themselves milliseconds).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import MLPNet, gen, torchrun_env, torchrun_failure
from multimix import EMATeacher, ManifoldMixup, MultiMix, soft_cross_entropy

WORKER = Path(__file__).with_name("wrapped_worker.py")
MIXERS = ("mixup", "manifold", "multimix", "dense", "multimix_global")
#: Float tolerance of "the same weights". The runs below agree to the last bit on this machine (the
#: same operations in the same order: DDP's and FSDP's averages of two gradients are one addition and
#: one halving); the tolerance leaves room for a reduction order that differs elsewhere.
ATOL = 1e-6


@pytest.fixture(scope="module")
def distributed(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("wrapped") / "results.json"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=torchrun_env())
    assert proc.returncode == 0, torchrun_failure(proc)
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.slow
@pytest.mark.parametrize("name", MIXERS)
def test_a_mixer_on_a_ddp_model_keeps_the_ranks_equal_to_one_process_on_both_batches(
    distributed, name
):
    result = distributed[name]
    assert result["moved"] > 1e-3  # the steps changed the weights: equality below is not vacuous
    assert result["ranks"] <= ATOL
    if name != "multimix_global":  # its draws span both ranks: tests/test_distributed.py covers it
        assert result["ddp_vs_reference"] <= ATOL


@pytest.mark.slow
@pytest.mark.parametrize("name", MIXERS)
def test_a_mixer_on_a_model_sharded_with_fully_shard_ends_with_the_ddp_weights(distributed, name):
    result = distributed[name]
    assert result["fsdp_ranks"] <= ATOL
    assert result["fsdp_vs_ddp"] <= ATOL
    # The mixer built first, the model sharded afterwards (its hooks then run before FSDP's)
    assert result["fsdp_mixer_first_vs_ddp"] <= ATOL


@pytest.mark.slow
def test_a_mixer_bypassing_a_ddp_wrapper_is_refused_then_runs_through_it(distributed):
    result = distributed["wrapped_after"]
    refusal = result["refusal"]
    assert refusal is not None, "a mixer ran the model outside DDP in a group of 2 without a word"
    for said in ("outside DistributedDataParallel", "2 processes", "mixer.model = ddp_model"):
        assert said in refusal
    assert result["ranks"] <= ATOL  # after `mixer.model = ddp`, as the message says
    # The control: without the check, a mixer on the plain model lets the ranks drift apart.
    assert distributed["unsynchronised"]["ranks"] > 1e-3


@pytest.mark.slow
def test_a_mixer_called_inside_a_ddp_forward_is_synchronised(distributed):
    # The LightningModule pattern: DDP wraps a module that holds the net and its mixer.
    assert distributed["inside_ddp_forward"]["ranks"] <= ATOL


@pytest.mark.slow
def test_an_ema_teacher_of_a_sharded_model(distributed):
    result = distributed["teacher"]
    assert "fully_shard(teacher.module)" in result["refusal"]  # built after sharding: refused
    assert (
        result["teacher_fsdp_vs_ddp"] <= ATOL
    )  # built before, sharded alike: follows as under DDP


# -- one process ---------------------------------------------------------------------------------


class Wrapper(nn.Module):
    """Any wrapper that holds the model as a submodule and runs it (as DDP does)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.module = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def test_the_model_may_become_a_wrapper_of_itself_and_the_mixer_runs_the_wrapper():
    model = MLPNet()
    mixer = MultiMix(model, classifier="fc", n=12, num_classes=4, generator=gen())
    wrapper = Wrapper(model)
    calls = []
    wrapper.register_forward_pre_hook(lambda module, args: calls.append(1))
    mixer.model = wrapper
    logits, targets = mixer(torch.randn(5, 6), torch.randint(0, 4, (5,)))
    assert calls == [1] and logits.shape == targets.shape == (12, 4)
    soft_cross_entropy(logits, targets).backward()
    assert model.fc.weight.grad is not None
    mixer.model = model  # and back: the model itself is its own "wrapper"
    assert mixer.model is model


def test_the_model_cannot_become_another_model():
    model = MLPNet()
    mixer = ManifoldMixup(model, layers=["encoder"], num_classes=4)
    with pytest.raises(ValueError, match=r"built on \(MLPNet\).*does not contain it"):
        mixer.model = MLPNet()
    with pytest.raises(TypeError, match=r"must be a torch\.nn\.Module"):
        mixer.model = "model"
    assert mixer.model is model


def test_a_mixer_built_on_a_wrapper_may_be_given_the_model_inside():
    # DataParallel stands for DDP (which needs a process group): both hold the model as `.module`.
    model = MLPNet()
    mixer = MultiMix(nn.DataParallel(model), classifier="fc", n=12, num_classes=4)
    mixer.model = model
    assert mixer.model is model
    with pytest.raises(ValueError, match="does not contain it"):
        mixer.model = Wrapper(MLPNet())


def test_without_a_process_group_nothing_is_checked():
    # One process (no torch.distributed group): a plain model is the usual case, never refused.
    mixer = MultiMix(MLPNet(), classifier="fc", n=12, num_classes=4)
    assert mixer.check_gradient_sync
    logits, _ = mixer(torch.randn(5, 6), torch.randint(0, 4, (5,)))
    assert logits.shape == (12, 4)


def test_an_ema_teacher_refuses_a_student_whose_parameters_differ_in_kind():
    # What a student sharded after its teacher was built looks like to update(): a parameter of
    # another tensor type. A subclass of Tensor stands in for FSDP's DTensor (which needs a mesh).
    class Other(torch.Tensor):
        pass

    student = nn.Linear(3, 2)
    teacher = EMATeacher(student)
    student.weight = nn.Parameter(student.weight.detach().as_subclass(Other))
    with pytest.raises(RuntimeError, match=r"sharded alike \(fully_shard\(teacher.module\)"):
        teacher.update()
