"""One mixer per batch, chosen among several with given probabilities (:class:`OneOf`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from multimix.mixers.adapters import Inputs, call_model
from multimix.mixers.base import Mixer


class OneOf(Mixer):
    """Each training batch mixed by one of ``mixers``, drawn with probabilities ``probs``.

    "Input mixup or MultiMix, a fair coin per batch" (the protocol of AlignMixup and MultiMix's
    papers) is ``OneOf([Mixup(model, ...), MultiMix(model, ...)], probs=[0.5, 0.5])``; timm's
    mixup/CutMix switch (:class:`~multimix.MixupOrCutMix`) is the special case of two input-level
    mixers. The choice is drawn on the host before the step (:meth:`decide`, so a CUDA graph is
    captured per choice), from this mixer's own ``generator``; the chosen mixer then makes its own
    draws from its generator, as it would alone. In eval mode the model runs unmixed.

    Args:
        mixers: two or more multimix mixers (at least one), all built on the same model. They stay
            usable on their own; their state (generators, a teacher) is saved with this mixer's
            ``state_dict()`` under ``mixers.<i>.``.
        probs: the probability of each mixer (>= 0, summing to 1); None: equal.
        generator: optional seeded ``torch.Generator`` for the choice.

    The targets' conversion (``num_classes``, ``multi_label``) is the mixers' own, which must agree.
    ``set_alpha`` sets every mixer's α (an α schedule); ``mixer.model = wrapper`` sets theirs too.

    Raises:
        TypeError: a member is not a multimix mixer.
        ValueError: no mixer, mixers built on different models or disagreeing on ``num_classes`` or
            ``multi_label``, or ``probs`` of the wrong length, negative, or not summing to 1.
    """

    def __init__(
        self,
        mixers: Sequence[Mixer],
        *,
        probs: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        mixers = _check_mixers(mixers)
        classes = {m.num_classes for m in mixers} - {None}
        if len(classes) > 1 or len({m.multi_label for m in mixers}) > 1:
            raise ValueError(
                "the mixers of OneOf must agree on num_classes and multi_label, got "
                + ", ".join(f"{type(m).__name__}({m.num_classes}, {m.multi_label})" for m in mixers)
            )
        super().__init__(
            mixers[0].model,
            num_classes=next(iter(classes), None),
            generator=generator,
            multi_label=mixers[0].multi_label,
        )
        self.mixers = nn.ModuleList(mixers)
        self.probs = _check_probs(probs, len(mixers))

    def _set_model(self, model: nn.Module) -> None:
        # `mixer.model = wrapper` (DDP) reaches every mixer: they run the forward.
        super()._set_model(model)
        for mixer in self.__dict__.get("_modules", {}).get("mixers", ()):
            mixer.model = model

    def set_alpha(self, alpha: float) -> None:
        """Set every mixer's α (e.g. from a schedule); α = 0 turns each off."""
        for mixer in self.mixers:
            cast(Mixer, mixer).set_alpha(alpha)

    def close(self) -> None:
        """Remove the hooks of every mixer. Idempotent."""
        for mixer in self.mixers:
            cast(Mixer, mixer).close()
        super().close()

    def _choose(self) -> tuple[int, object, object]:
        """(which mixer, that mixer's own host-side choice, its α): drawn ahead by :meth:`decide`."""
        u, index = self._uniform(), len(self.probs) - 1
        total = 0.0
        for i, p in enumerate(self.probs):
            total += p
            if u < total:
                index = i
                break
        chosen = cast(Mixer, self.mixers[index])
        return index, chosen.decide(), getattr(chosen, "alpha", None)

    def _mix_forward(
        self, x: Inputs, targets: Tensor, labels: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        index = cast("tuple[int, object, object]", self._choice())[0]
        chosen = cast(Mixer, self.mixers[index])
        if getattr(chosen, "alpha", None) == 0:  # switched off by a schedule: no mixing
            return call_model(self.model, x), targets
        return chosen._mix_forward(x, targets, labels)

    def extra_repr(self) -> str:
        return f"probs={list(self.probs)}"


def _check_mixers(mixers: object) -> list[Mixer]:
    if isinstance(mixers, Mixer) or not isinstance(mixers, Sequence) or not mixers:
        raise ValueError(
            f"mixers must be a non-empty list of multimix mixers, got {type(mixers).__name__}"
        )
    for i, mixer in enumerate(mixers):
        if not isinstance(mixer, Mixer):
            raise TypeError(
                f"mixers[{i}] must be a multimix mixer (Mixup, MultiMix, ...), got {type(mixer).__name__}"
            )
    models = {id(m.__dict__["_built_on"]) for m in mixers}
    if len(models) > 1:
        raise ValueError(
            "the mixers of OneOf must be built on the same model (they share its forward), got "
            + ", ".join(
                f"{type(m).__name__} on {type(m.__dict__['_built_on']).__name__} at {id(m.__dict__['_built_on']):#x}"
                for m in mixers
            )
        )
    return list(mixers)


def _check_probs(probs: Sequence[float] | None, count: int) -> tuple[float, ...]:
    if probs is None:
        return (1.0 / count,) * count
    if isinstance(probs, (str, bytes)) or not isinstance(probs, Sequence) or len(probs) != count:
        raise ValueError(f"probs must give one probability per mixer ({count}), got {probs!r}")
    values = []
    for p in probs:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 0:
            raise ValueError(f"probs must be finite numbers >= 0, got {probs!r}")
        values.append(float(p))
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ValueError(f"probs must sum to 1, got {probs!r} (sum {sum(values)})")
    return tuple(values)


__all__ = ["OneOf"]
