"""MultiMix (SPEC §2) and what it shares with Dense MultiMix."""

from __future__ import annotations


import torch
from torch import Tensor, nn

from multimix._validation import check_alpha, check_int, check_probability
from multimix.functional import (
    interpolate,
    multimix_weights,
)
from multimix.mixers.adapters import Inputs, batch_device, batch_size, call_model
from multimix.mixers.base import _Mixer, _no_autocast, find_module


class _MultiMixBase(_Mixer):
    """What MultiMix and Dense MultiMix share: n, m, α, p, the teacher, and the clean fallback."""

    def __init__(self, model: nn.Module, *, n: int, m: int | None, alpha: float, p: float, teacher: nn.Module | None,
                 distill_weight: float, temperature: float, num_classes: int | None,
                 generator: torch.Generator | None) -> None:
        super().__init__(model, num_classes=num_classes, generator=generator)
        self.n = check_int(n, "n")
        self.m = None if m is None else check_int(m, "m")
        self.alpha = check_alpha(alpha)
        self.p = check_probability(p, "p")
        self._setup_teacher(teacher, distill_weight, temperature)

    def _tuple_length(self, b: int) -> int | None:
        """m for a batch of b: a batch shorter than m (a last, short batch) uses the whole batch."""
        return None if self.m is None else min(self.m, b)

    def _skip_batch(self, x: Inputs) -> bool:
        """With probability 1 − p, this batch trains clean."""
        return self.p < 1.0 and self._uniform(batch_device(x)) >= self.p


class MultiMix(_MultiMixBase):
    """MultiMix (SPEC §2): n ≫ b interpolations of m-tuples of the batch at the input of one submodule.

    The model runs once on the b clean examples up to the submodule named ``before`` (typically the
    classifier); its input Z (b, d) is replaced by Λ Z (n, d) with Λ (n, b) from
    :func:`multimix.functional.multimix_weights`, and the targets by Λ Y. Only ``before`` and what
    follows it see n rows.

    Args:
        model: any ``nn.Module``.
        before: name of the submodule whose input is mixed, e.g. ``"fc"``.
        n: generated examples per batch.
        m: tuple length (distinct batch members mixed per generated example); None = whole batch.
            A batch smaller than m (a last, short batch) uses tuples of the whole batch.
        alpha: Dirichlet(α·1_m) concentration, > 0.
        p: probability that a training batch is mixed; otherwise it trains on the clean batch.
        keep_clean: also feed the b clean embeddings, so the classifier sees b + n rows (clean first).
        linear_shortcut: when ``before`` is a plain ``nn.Linear`` g, mix its b output rows instead of
            its b input rows: g(Λ Z) = Λ g(Z) exactly, because every row of Λ sums to 1, and it costs
            n·b·K instead of n·b·d + n·d·K. Everything after ``before`` still sees n rows.
        teacher: optional teacher (e.g. :class:`multimix.EMATeacher`) for self-distilled targets:
            its probabilities P' on the clean batch are mixed with the same weights, Ỹ' = Λ P',
            and the returned targets are Ỹ + w·Ỹ' so that ``soft_cross_entropy`` gives
            CE(Ỹ) + w·CE(Ỹ') (SPEC §4); their rows then sum to 1 + w.
        distill_weight: w, >= 0.
        temperature: τ of the teacher's softmax, > 0.
        num_classes: K, required when y holds integer labels.
        generator: optional seeded ``torch.Generator``.

    Defaults (m=2, α=1, n=1000, p=1, no clean rows) were chosen on MNIST-1D's validation split
    (benchmarks/results/ablation_mnist1d_stage*.md): accuracy falls as tuples lengthen (m = 2: 97.8,
    5: 95.4, 10: 73, whole batch: chance — every mixed target nears the class prior), α = 1 beat 0.5
    and 2, n = 1000 beat 10, 100 and 10 000, and p < 1 or clean rows made no difference.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        before: str,
        n: int = 1000,
        m: int | None = 2,
        alpha: float = 1.0,
        p: float = 1.0,
        keep_clean: bool = False,
        linear_shortcut: bool = True,
        teacher: nn.Module | None = None,
        distill_weight: float = 1.0,
        temperature: float = 1.0,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, n=n, m=m, alpha=alpha, p=p, teacher=teacher, distill_weight=distill_weight,
                         temperature=temperature, num_classes=num_classes, generator=generator)
        self.keep_clean = bool(keep_clean)
        self.before = before
        module = find_module(model, before, argument="before")
        # type(...) is, not isinstance: a subclass may override forward and break g(ΛZ) = Λ g(Z).
        self.linear_shortcut = bool(linear_shortcut) and type(module) is nn.Linear
        if self.linear_shortcut:
            self._handles.append(module.register_forward_hook(self._mix_output))
        else:
            self._handles.append(module.register_forward_pre_hook(self._mix_input))

    def _mix_rows(self, weights: Tensor, rows: Tensor, what: str) -> Tensor:
        if rows.shape[0] != weights.shape[1]:
            raise ValueError(
                f"the {what} of {self.before!r} has batch size {rows.shape[0]}, expected {weights.shape[1]} "
                "(batch-first embeddings)"
            )
        mixed = interpolate(weights, rows)
        return torch.cat([rows, mixed]) if self.keep_clean else mixed

    def _mix_input(self, module: nn.Module, args: tuple) -> tuple | None:
        if self._armed is None:
            return None
        weights = self._take()
        if not args or not isinstance(args[0], Tensor):
            raise TypeError(f"submodule {self.before!r} must take a Tensor as its first argument to be mixed")
        return (self._mix_rows(weights, args[0], "input"), *args[1:])

    def _mix_output(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
        if self._armed is None:
            return None
        return self._mix_rows(self._take(), output, "output")

    def _mix_forward(self, x: Inputs, targets: Tensor) -> tuple[Tensor, Tensor]:
        probs = self._teacher_probs(x)
        if self._skip_batch(x):
            return call_model(self.model, x), self._add_distilled(targets, probs)
        b = batch_size(x)
        weights = multimix_weights(b, n=self.n, m=self._tuple_length(b), alpha=self.alpha, generator=self.generator,
                                   device=batch_device(x))
        logits = self._run_armed(x, weights, self.before)
        with _no_autocast(targets.device):
            mixed = self._add_distilled(interpolate(weights, targets),
                                        None if probs is None else interpolate(weights, probs))
        if self.keep_clean:
            mixed = torch.cat([self._add_distilled(targets, probs), mixed])
        if logits.shape[0] != mixed.shape[0]:
            raise RuntimeError(
                f"the model returned {logits.shape[0]} rows after mixing {mixed.shape[0]}; "
                f"does the model reshape by batch size after {self.before!r}?"
            )
        return logits, mixed

    def extra_repr(self) -> str:
        return (
            f"before={self.before!r}, n={self.n}, m={self.m}, alpha={self.alpha}, p={self.p}, "
            f"keep_clean={self.keep_clean}"
        )
