"""The EMA teacher (multimix.teacher): its update rule, no gradients, always in eval mode, its state,
no copies of the student's mixer hooks. Targets distilled from it: test_dense.py."""

from __future__ import annotations

import torch

from multimix import EMATeacher, MultiMix
from multimix.models import build_model


def test_ema_teacher_follows_the_formula_and_gets_no_gradients():
    torch.manual_seed(0)
    student = build_model("mlp", input_shape=(2,), num_classes=3)
    teacher = EMATeacher(student, momentum=0.9)
    before = [p.clone() for p in teacher.module.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update()
    for t, b0, s in zip(teacher.module.parameters(), before, student.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * b0 + 0.1 * s)
        assert not t.requires_grad
    assert not teacher.module.training
    teacher.train()
    assert not teacher.module.training  # stays in eval mode
    # state_dict round trip into a fresh teacher
    other = EMATeacher(build_model("mlp", input_shape=(2,), num_classes=3))
    other.load_state_dict(teacher.state_dict())
    assert all(
        torch.equal(a, b)
        for a, b in zip(other.module.parameters(), teacher.module.parameters(), strict=True)
    )


def test_teacher_copies_no_mixer_hooks():
    model = build_model("mlp", input_shape=(2,), num_classes=3)
    mixer = MultiMix(model, classifier="fc", num_classes=3)
    teacher = EMATeacher(model)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in teacher.module.modules())
    assert model.fc._forward_hooks  # the student keeps its hook
    mixer.close()
