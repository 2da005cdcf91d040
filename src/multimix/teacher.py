"""An exponential-moving-average teacher for self-distilled targets.

How its predictions become targets, and the loss: docs/concepts/distillation.md.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from multimix._sharding import is_sharded, reshard
from multimix._validation import check_probability


class EMATeacher(nn.Module):
    """A copy of a model whose weights track an exponential moving average of the model's.

    After each optimizer step, :meth:`update` sets ``θ_teacher ← μ θ_teacher + (1 − μ) θ_student``;
    buffers (BatchNorm statistics) are copied. The teacher (``teacher.module``) gets no gradients,
    stays in eval mode, lives on the student's device, and is saved with ``state_dict()``.

    The teacher gives logits; a mixer turns them into targets: softmax(logits / τ) over the classes, or
    with ``multi_label=True`` a sigmoid per class, σ(logits / τ) (docs/concepts/multi-label.md).

    Args:
        model: the student.
        momentum: μ in [0, 1]. The default 0.99 was chosen on MNIST-1D's validation split for runs of a
            few thousand steps, where 0.999 (time constant ~1000 steps) lagged the student too far
            behind; longer runs may prefer 0.999.
    """

    def __init__(self, model: nn.Module, *, momentum: float = 0.99) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.momentum = check_probability(momentum, "momentum")
        if is_sharded(model):
            raise ValueError(
                f"EMATeacher cannot copy {type(model).__name__}: it is sharded by FSDP, which does not "
                "deep-copy. Build the teacher before sharding and shard its copy as the model is: "
                "teacher = EMATeacher(model); fully_shard(model); fully_shard(teacher.module)"
            )
        self.module = _copy_without_hooks(model).eval()
        self.module.requires_grad_(False)
        self._student = [model]  # a list: not registered as a submodule, not in state_dict

    def train(self, mode: bool = True) -> EMATeacher:
        """The teacher always predicts in eval mode, whatever its owner does."""
        super().train(mode)
        self.module.eval()
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The teacher's output for the student's inputs, passed on as given: ``teacher(x)``, or
        ``teacher(**batch)`` for a 🤗 model (whose output object carries the logits)."""
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step towards the student's current weights."""
        student = self._student[0]
        mu = self.momentum
        reshard(self.module)  # a sharded teacher's forward left its root's parameters gathered
        # strict: the teacher is a deep copy of the student, so both list the same parameters and buffers.
        for t, s in zip(self.module.parameters(), student.parameters(), strict=True):
            if type(t) is not type(s):
                raise RuntimeError(
                    f"the teacher's parameters are {type(t).__name__}s and the student's "
                    f"{type(s).__name__}s: a student sharded by FSDP needs its teacher sharded alike "
                    "(fully_shard(teacher.module) with the student's mesh and units)"
                )
            t.lerp_(s.detach(), 1.0 - mu)  # t + (1 - μ)(s - t) = μ t + (1 - μ) s
        for t_buf, s_buf in zip(self.module.buffers(), student.buffers(), strict=True):
            t_buf.copy_(s_buf)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}"


def _copy_without_hooks(model: nn.Module) -> nn.Module:
    """Deep-copy a model without the hooks mixers placed on it (they would copy the mixer too)."""
    saved = []
    for module in model.modules():
        saved.append((module, module._forward_hooks, module._forward_pre_hooks))
        module._forward_hooks, module._forward_pre_hooks = (
            type(module._forward_hooks)(),
            type(module._forward_pre_hooks)(),
        )
    try:
        return copy.deepcopy(model)
    finally:
        for module, hooks, pre_hooks in saved:
            module._forward_hooks, module._forward_pre_hooks = hooks, pre_hooks
