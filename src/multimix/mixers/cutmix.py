"""CutMix, and timm's per-batch switch between input mixup and CutMix."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from multimix._validation import check_alpha, check_probability
from multimix.functional import mix_pairs, paste, sample_cutmix, sample_mixup
from multimix.mixers.adapters import (
    Inputs,
    batch_device,
    batch_size,
    call_model,
    input_tensor,
    replace_input,
)
from multimix.mixers.base import Mixer


class CutMix(Mixer):
    """CutMix (Yun et al., 2019): paste a random box of a partner's input; targets mixed by the exact area.

    Inputs (b, C, H, W) get a box, (b, C, L) and (b, L) a segment (see
    :func:`multimix.functional.sample_cutmix`). Any batch size, odd and 1 included.

    Args:
        model: any ``nn.Module`` (the box is cut from its input).
        alpha: λ ~ Beta(α, α) sets the box's expected share, 1 − λ; the targets use the exact share.
        per_sample: one box per example instead of one for the batch.
        num_classes, generator: as the other mixers.
        multi_label: multi-label targets (b, K), entries in [0, 1] with rows summing to anything
            (docs/concepts/multi-label.md), mixed by the pasted area as single-label ones.
    """

    alpha: float  # always set (never automatic)

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
            model, num_classes=num_classes, generator=generator, multi_label=multi_label
        )
        self.alpha = check_alpha(alpha)
        self.per_sample = bool(per_sample)

    def _cutmix(self, x: Inputs, targets: Tensor) -> tuple[Tensor, Tensor]:
        image = input_tensor(x)
        mask, lam, perm = sample_cutmix(
            image.shape,
            alpha=self.alpha,
            per_sample=self.per_sample,
            generator=self.generator,
            device=image.device,
        )
        return call_model(self.model, replace_input(x, paste(image, mask, perm))), mix_pairs(
            targets, lam, perm
        )

    def _mix_forward(
        self, x: Inputs, targets: Tensor, labels: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        return self._cutmix(x, targets)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, per_sample={self.per_sample}"


class MixupOrCutMix(CutMix):
    """Each training batch mixed by CutMix with probability ``switch_prob``, else by input mixup (timm's switch).

    Args:
        model: any ``nn.Module``.
        mixup_alpha: α of input mixup, > 0.
        cutmix_alpha: α of CutMix, > 0.
        switch_prob: probability that a batch uses CutMix.
        per_sample: one λ (one box) per example instead of one per batch.
        num_classes, generator, multi_label: as :class:`CutMix`.

    ``set_alpha(a)`` (an α schedule) sets both α's; :meth:`decide` draws (and returns) the next
    batch's choice, ``"cutmix"`` or ``"mixup"``, ahead of its forward.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mixup_alpha: float = 1.0,
        cutmix_alpha: float = 1.0,
        switch_prob: float = 0.5,
        per_sample: bool = False,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
        multi_label: bool = False,
    ) -> None:
        super().__init__(
            model,
            alpha=cutmix_alpha,
            per_sample=per_sample,
            num_classes=num_classes,
            generator=generator,
            multi_label=multi_label,
        )
        self.mixup_alpha = check_alpha(mixup_alpha, "mixup_alpha")
        self.switch_prob = check_probability(switch_prob, "switch_prob")

    def set_alpha(self, alpha: float) -> None:
        super().set_alpha(alpha)
        self.mixup_alpha = self.alpha

    def _choose(self) -> str:
        """ "cutmix" with probability ``switch_prob``, else "mixup"."""
        return "cutmix" if self._uniform() < self.switch_prob else "mixup"

    def _mix_forward(
        self, x: Inputs, targets: Tensor, labels: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        if self._choice() == "cutmix":
            return self._cutmix(x, targets)
        lam, perm = sample_mixup(
            batch_size(x),
            alpha=self.mixup_alpha,
            per_sample=self.per_sample,
            generator=self.generator,
            device=batch_device(x),
        )
        return call_model(
            self.model, replace_input(x, mix_pairs(input_tensor(x), lam, perm))
        ), mix_pairs(targets, lam, perm)

    def extra_repr(self) -> str:
        return (
            f"mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.alpha}, switch_prob={self.switch_prob}, "
            f"per_sample={self.per_sample}"
        )


__all__ = ["CutMix", "MixupOrCutMix"]
