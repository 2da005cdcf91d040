"""Pairwise mixers: input mixup, manifold mixup at named layers, and ConfMix."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from multimix._validation import check_alpha
from multimix.functional import (
    mix_pairs,
    sample_beta,
    sample_mixup,
)
from multimix.mixers.adapters import (
    Inputs,
    batch_device,
    batch_size,
    call_model,
    first_tensor,
    input_tensor,
    map_first,
    replace_input,
)
from multimix.mixers.base import INPUT, Mixer, find_module
from multimix.schedules import confmix_alpha

#: What ManifoldMixup arms its hooks with: (the layer to mix at, λ (b,), partner permutation (b,)).
_Armed = tuple[str, Tensor, Tensor]


class ManifoldMixup(Mixer):
    """Manifold mixup (Verma et al., 2019): pairwise mixing of the output of a layer drawn per step.

    Args:
        model: any ``nn.Module``.
        layers: names of submodules (as in ``model.named_modules()``) whose outputs may be mixed;
            ``"input"`` means the input itself. One is drawn uniformly at each training step.
        alpha: λ ~ Beta(α, α), α > 0.
        per_sample: one λ per pair instead of one per batch.
        num_classes: K, required when y holds integer labels.
        generator: optional seeded ``torch.Generator`` for every draw.
        multi_label: the targets are multi-label (b, K): entries in [0, 1], rows summing to anything
            (docs/concepts/multi-label.md); they are mixed with the inputs' weights, never renormalised.

    Example::

        mixer = ManifoldMixup(model, layers=["input", "layer1", "layer2"], num_classes=10)
        logits, targets = mixer(x, y)
        loss = soft_cross_entropy(logits, targets)
    """

    alpha: float  # always set (never automatic)

    def __init__(
        self,
        model: nn.Module,
        *,
        layers: Sequence[str],
        alpha: float = 2.0,
        per_sample: bool = False,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
        multi_label: bool = False,
    ) -> None:
        super().__init__(
            model, num_classes=num_classes, generator=generator, multi_label=multi_label
        )
        if isinstance(layers, str) or not isinstance(layers, Sequence) or len(layers) == 0:
            raise ValueError(
                f"layers must be a non-empty list of submodule names (or 'input'), got {layers!r}"
            )
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers must not repeat a name, got {list(layers)}")
        self.alpha = check_alpha(alpha)
        self.per_sample = bool(per_sample)
        self.layers = list(layers)
        # Resolve every name before registering anything, so a bad name leaves the model untouched.
        modules = {
            name: find_module(model, name, argument="layers")
            for name in self.layers
            if name != INPUT
        }
        for name, module in modules.items():
            self._handles.append(
                module.register_forward_hook(functools.partial(self._mix_output, name))
            )

    def _mix_output(
        self, name: str, module: nn.Module, args: tuple[object, ...], output: object
    ) -> Tensor | None:
        if self._armed is None:
            self._called_again(name, args)  # the mixed layer again in this forward: the same rows?
            return None
        # The armed payload is the _Armed tuple that _mix_forward passed to _run_armed.
        if cast(_Armed, self._armed)[0] != name:
            return None
        _, lam, perm = cast(_Armed, self._take())
        mixed = map_first(output, lambda h: mix_pairs(h, lam, perm), name)
        self._record_mixed(name, first_tensor(output), first_tensor(mixed))
        return mixed

    def _params(self, x: Inputs) -> tuple[Tensor, Tensor]:
        """(λ (b,), partner permutation (b,)) for this batch."""
        return sample_mixup(
            batch_size(x),
            alpha=self.alpha,
            per_sample=self.per_sample,
            generator=self.generator,
            device=batch_device(x),
        )

    def _choose(self) -> str:
        """The layer this step mixes at, uniform over ``layers``."""
        return self.layers[int(self._uniform() * len(self.layers)) % len(self.layers)]

    def _mix_forward(
        self, x: Inputs, targets: Tensor, labels: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        layer = cast(str, self._choice())  # a layer name: what _choose draws
        lam, perm = self._params(x)
        if layer == INPUT:
            logits = call_model(self.model, replace_input(x, mix_pairs(input_tensor(x), lam, perm)))
        else:
            logits = self._run_armed(x, (layer, lam, perm), layer)
        return logits, mix_pairs(targets, lam, perm)

    def extra_repr(self) -> str:
        return f"layers={self.layers}, alpha={self.alpha}, per_sample={self.per_sample}"


class Mixup(ManifoldMixup):
    """Input mixup (Zhang et al., 2018): ``ManifoldMixup`` with ``layers=["input"]``.

    Args:
        model: any ``nn.Module``.
        alpha: λ ~ Beta(α, α), α > 0.
        per_sample: one λ per pair instead of one per batch.
        num_classes: K, required when y holds integer labels.
        generator: optional seeded ``torch.Generator``.
        multi_label: the targets are multi-label (b, K): entries in [0, 1], rows summing to anything
            (docs/concepts/multi-label.md); they are mixed with the inputs' weights, never renormalised.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        alpha: float = 1.0,
        per_sample: bool = False,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
        multi_label: bool = False,
    ) -> None:
        super().__init__(
            model,
            layers=[INPUT],
            alpha=alpha,
            per_sample=per_sample,
            num_classes=num_classes,
            generator=generator,
            multi_label=multi_label,
        )


#: Why ConfMix cannot go on when the model's outputs are NaN or infinite.
_DIVERGED = (
    "ConfMix: the model's outputs on the clean batch are not finite (NaN or inf), so its confidence, "
    "and the α drawn from it, are undefined; the run has diverged: lower the learning rate (or "
    "check the inputs for NaN)"
)


def _check_finite_outputs(logits: Tensor) -> None:
    """Raise when the model's logits hold a NaN or an infinity (a diverged run)."""
    finite = torch.isfinite(logits).all()
    if logits.device.type == "cpu":
        if not bool(finite):
            raise FloatingPointError(_DIVERGED)
    else:  # reading the check back would wait for the device at every step: assert there
        torch._assert_async(finite, _DIVERGED)


class ConfMix(ManifoldMixup):
    """ConfMix (seed 2): pairwise mixing whose strength follows the model's confidence, per example.

    Before each step the current model predicts the clean batch (no gradient, eval mode); example i
    gets α_i = scale · K/(K−1) · (max_c p_ic − 1/K) clipped to [0, 1] and λ_i ~ Beta(α_i, α_i), so a
    confident example is mixed strongly and an unsure one hardly at all (α_i = 0: λ_i ∈ {0, 1}).
    Its partner is drawn by a random permutation, as in mixup. ``scale=0.5`` is "½ ConfMix".
    Warm-up epochs of ERM are the training loop's business (the model must be confident first).
    A model whose outputs are not finite (a diverged run) has no confidence: the forward raises
    ``FloatingPointError`` saying so (on a GPU, an asynchronous device assertion with that message).

    Args:
        model: any ``nn.Module``.
        layers: where to mix, as :class:`ManifoldMixup` (default: the input).
        scale: multiplies α_i, > 0.
        num_classes, generator: as the other mixers.
        multi_label: multi-label targets, as :class:`ManifoldMixup`. Each class is then a yes/no
            question with its own sigmoid p_ic = σ(logit_ic), and the confidence is the binary one
            averaged over the classes: α_i = scale · mean_c abs(2 p_ic − 1) (the single-label formula
            for K = 2, class by class), in [0, 1] as before. It needs no targets.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        layers: Sequence[str] = (INPUT,),
        scale: float = 1.0,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
        multi_label: bool = False,
    ) -> None:
        super().__init__(
            model,
            layers=list(layers),
            alpha=1.0,
            per_sample=True,
            num_classes=num_classes,
            generator=generator,
            multi_label=multi_label,
        )
        self.scale = check_alpha(scale, "scale")

    def _params(self, x: Inputs) -> tuple[Tensor, Tensor]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                logits = call_model(self.model, x).float()
        finally:
            self.model.train(was_training)
        _check_finite_outputs(logits)
        if self.multi_label:  # the binary confidence of each class, averaged over the classes
            alpha = self.scale * (2.0 * torch.sigmoid(logits) - 1.0).abs().mean(dim=-1)
        else:
            alpha = self.scale * confmix_alpha(torch.softmax(logits, dim=-1))
        b, device = batch_size(x), batch_device(x)
        lam = sample_beta(b, alpha, generator=self.generator, device=device)
        _, perm = sample_mixup(b, alpha=1.0, generator=self.generator, device=device)
        return lam.to(device), perm

    def extra_repr(self) -> str:
        return f"layers={self.layers}, scale={self.scale}"
