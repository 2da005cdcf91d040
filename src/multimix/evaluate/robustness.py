"""Adversarial robustness: FGSM and PGD (L∞, untargeted, against the cross-entropy), in input units.

The model is attacked as it is used at test time: in eval mode (batch-norm statistics are read, never
updated), with gradients taken with respect to the input only — its parameters, their ``.grad`` and
its training flag are as they were afterwards.

An attack needs gradients whatever the caller's mode: called under ``torch.no_grad()`` or
``torch.inference_mode()`` (as evaluation code usually is), it takes them all the same, and inputs
created under inference mode (inference tensors, which autograd cannot record) are copied into
ordinary tensors first. The adversarial inputs returned are ordinary tensors without gradient. A model
whose parameters or buffers are themselves inference tensors (built or loaded under
``torch.inference_mode()``) cannot be differentiated and is refused with a ``ValueError``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check_eps(eps: float, name: str = "eps") -> float:
    if (
        isinstance(eps, bool)
        or not isinstance(eps, (int, float))
        or not math.isfinite(eps)
        or eps < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0 (in input units), got {eps!r}")
    return float(eps)


def _check_clamp(clamp: tuple[float, float] | None) -> tuple[float, float] | None:
    if clamp is not None and (len(clamp) != 2 or not clamp[0] < clamp[1]):
        raise ValueError(f"clamp must be None or (low, high) with low < high, got {clamp!r}")
    return clamp


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode for the attack, the training flag restored after; no parameter gathers a gradient."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _attacking(model: nn.Module) -> Iterator[None]:
    """:func:`_frozen`, with gradients recorded whatever the caller's mode (``no_grad``,
    ``inference_mode``): an attack is a gradient of the loss with respect to the input."""
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.is_inference():
            raise ValueError(
                f"the model's {name!r} is an inference tensor (the model was built or loaded under "
                "torch.inference_mode()), so no gradient can flow through it and the attack cannot "
                "run; build or load the model outside inference mode (torch.no_grad() is enough to "
                "skip gradients there)"
            )
    with _frozen(model), torch.inference_mode(False), torch.enable_grad():
        yield


def _ordinary(t: Tensor) -> Tensor:
    """``t`` detached, copied when it is an inference tensor (which autograd cannot record)."""
    return t.clone() if t.is_inference() else t.detach()


def _input_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x).float(), y, reduction="sum")
    # autograd.grad with inputs=(x,) fills no parameter's .grad
    return torch.autograd.grad(loss, (x,))[0]


def _project(x_adv: Tensor, x: Tensor, eps: float, clamp: tuple[float, float] | None) -> Tensor:
    x_adv = torch.max(torch.min(x_adv, x + eps), x - eps)
    return x_adv if clamp is None else x_adv.clamp(*clamp)


def fgsm(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, clamp: tuple[float, float] | None = None
) -> Tensor:
    """Fast gradient sign method (Goodfellow et al., 2015): ``x + eps · sign(∇ₓ CE(model(x), y))``.

    Args:
        x: inputs (b, ...); y: int labels (b,); eps: L∞ budget in input units (e.g. 8/255 for [0, 1] pixels);
        clamp: (low, high) range the adversarial inputs are clipped to, or None.
    """
    eps, clamp = _check_eps(eps), _check_clamp(clamp)
    with _attacking(model):
        x, y = _ordinary(x), _ordinary(y)
        x_adv = x + eps * _input_gradient(model, x, y).sign()
        return (x_adv if clamp is None else x_adv.clamp(*clamp)).detach()


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    clamp: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient descent (Madry et al., 2018) on the L∞ ball of radius ``eps`` around x.

    Args:
        steps: gradient-sign steps, >= 1. step_size: default 2.5·eps/steps (Madry et al.).
        random_start: start from a uniform point of the ball (drawn from ``generator``).
        x, y, eps, clamp: as :func:`fgsm`.
    """
    eps, clamp = _check_eps(eps), _check_clamp(clamp)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    step = 2.5 * eps / steps if step_size is None else _check_eps(step_size, "step_size")
    with _attacking(model):
        x, y = _ordinary(x), _ordinary(y)
        x_adv = x.clone()
        if random_start and eps > 0:
            dev = generator.device if generator is not None else x.device
            noise = torch.rand(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)
            x_adv = _project(x + (2 * noise - 1) * eps, x, eps, clamp)
        for _ in range(steps):
            x_adv = _project(x_adv + step * _input_gradient(model, x_adv, y).sign(), x, eps, clamp)
        return x_adv.detach()


def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    attack: str = "fgsm",
    eps: float,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    **kwargs: Any,
) -> float:
    """Accuracy of ``model`` on ``attack``-perturbed (``"fgsm"`` or ``"pgd"``) examples of (x, y), by batches."""
    attacks = {"fgsm": fgsm, "pgd": pgd}
    if attack not in attacks:
        raise ValueError(f"attack must be one of {', '.join(attacks)}, got {attack!r}")
    correct = 0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
        adv = attacks[attack](model, xb, yb, eps=eps, **kwargs)
        with _frozen(model), torch.no_grad():
            correct += int((model(adv).argmax(1) == yb).sum())
    return correct / len(y)
