"""MultiMix (docs/concepts/multimix.md) and what it shares with Dense MultiMix."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from multimix._deprecation import renamed_keyword, warn_renamed
from multimix._validation import check_alpha, check_alpha_range, check_int, check_probability
from multimix.functional import (
    MixTuples,
    interpolate_tuples,
    multimix_alpha,
    sample_multimix_tuples,
)
from multimix.mixers import collective
from multimix.mixers.adapters import Inputs, batch_device, batch_size, call_model
from multimix.mixers.base import Mixer, _no_autocast, find_module

#: The ``scope=`` values of :class:`MultiMix` and :class:`~multimix.DenseMultiMix` (and of the
#: trainer's ``mix_scope`` option): under torch.distributed, tuples are drawn from each process's
#: batch, or from all of them.
SCOPES = ("local", "global")

#: What MultiMix arms its hook with: the draw, every process's batch size (None: this batch alone),
#: and the (targets, teacher's probabilities) gathered along with the rows under global scope.
_Armed = tuple[MixTuples, list[int] | None, tuple[Tensor, Tensor | None]]


class _MultiMixBase(Mixer):
    """What MultiMix and Dense MultiMix share: n, m, α, p, the teacher, and the clean fallback."""

    def __init__(
        self,
        model: nn.Module,
        *,
        n: int,
        m: int | None,
        alpha: float | tuple[float, float] | None,
        p: float,
        teacher: nn.Module | None,
        distill_weight: float,
        temperature: float,
        num_classes: int | None,
        generator: torch.Generator | None,
        scope: str = "local",
        multi_label: bool = False,
    ) -> None:
        super().__init__(
            model, num_classes=num_classes, generator=generator, multi_label=multi_label
        )
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(map(repr, SCOPES))}, got {scope!r}")
        self.scope = scope
        self.n = check_int(n, "n")
        self.m = None if m is None else check_int(m, "m")
        # A range (low, high): per-member concentrations, redrawn every batch; None: automatic.
        self.alpha_range: tuple[float, float] | None = None
        self.alpha = None
        if isinstance(alpha, (tuple, list)):
            self.alpha_range = check_alpha_range(alpha)
        elif alpha is not None:
            self.alpha = check_alpha(alpha)
        self.p = check_probability(p, "p")
        self._setup_teacher(teacher, distill_weight, temperature)

    def _tuple_length(self, b: int) -> int | None:
        """m for a batch of b: a batch shorter than m (a last, short batch) uses the whole batch."""
        return None if self.m is None else min(self.m, b)

    def _alpha_for(self, b: int) -> float | tuple[float, float]:
        """α of a draw over a batch of b: the one set (or the range of per-member α), else
        :func:`multimix.functional.multimix_alpha` of the tuple length (1 for pairs, 1/m for longer
        tuples), the functional ops' rule too."""
        if self.alpha is not None:
            return self.alpha
        if self.alpha_range is not None:
            return self.alpha_range
        return multimix_alpha(b if self.m is None else min(self.m, b))

    def set_alpha(self, alpha: float) -> None:
        """Set one concentration for every member (a schedule); it replaces a range given at construction."""
        super().set_alpha(alpha)
        self.alpha_range = None

    def _alpha_repr(self) -> str:
        if self.alpha_range is not None:
            return f"U{self.alpha_range}"
        return "auto" if self.alpha is None else str(self.alpha)

    def _choose(self) -> str | None:
        """With probability 1 − p, "clean": this batch trains unmixed (the same choice on every process
        under global scope, whose generators are seeded alike); "mix" otherwise. None at p = 1."""
        if self.p >= 1.0:
            return None
        return "clean" if self._uniform() >= self.p else "mix"

    def _skip_batch(self, x: Inputs) -> bool:
        return self._choice() == "clean"

    def _global_sizes(self, b: int, device: torch.device) -> list[int] | None:
        """Every process's batch size when mixing over the global batch; None when mixing this batch
        alone (local scope, or a single process)."""
        if self.scope != "global" or collective.world()[1] == 1:
            return None
        return collective.gather_sizes(b, device)

    def _my_rows(self, tuples: MixTuples, sizes: list[int] | None) -> MixTuples:
        """This process's share of a draw over the global batch (all of it in a single process)."""
        if sizes is None:
            return tuples
        return tuples.rows(collective.share(tuples.n, *collective.world()))


class MultiMix(_MultiMixBase):
    """MultiMix: n ≫ b interpolations of m-tuples of the batch at the input of one submodule.

    The formulas, defaults, scopes and references: docs/concepts/multimix.md.

    The model runs once on the b clean examples up to the submodule named ``classifier``; its input
    Z (b, d) is replaced by Λ Z (n, d) with Λ (n, b) the MultiMix draw of
    :func:`multimix.functional.sample_multimix_weights`, and the targets by Λ Y. Only ``classifier``
    and what follows it see n rows. Λ is drawn and applied in sparse form
    (:func:`multimix.functional.sample_multimix_tuples`,
    :func:`multimix.functional.interpolate_tuples`): each mixed row gathers its m members, n·m work
    per feature instead of n·b.

    Args:
        model: any ``nn.Module``.
        classifier: name of the submodule whose input is mixed (the embedding's consumer, typically
            the classifier), e.g. ``"fc"``; the same argument as :class:`~multimix.DenseMultiMix`'s.
            Formerly ``before=`` (still accepted, deprecated; passing both is an error).
        n: generated examples per batch.
        m: tuple length (distinct batch members mixed per generated example); None = whole batch.
            A batch smaller than m (a last, short batch) uses tuples of the whole batch.
        alpha: Dirichlet(α·1_m) concentration, > 0. None (the default): 1 for pairs (m = 2), 1/m for
            longer tuples (1/b for the whole batch), which keeps them from collapsing
            (:func:`multimix.functional.multimix_alpha`). A range ``(low, high)``: every batch, each
            member's concentration is drawn uniformly in it and a tuple's weights are Dirichlet of its
            members' (the paper's protocol: ``m=None, alpha=(0.5, 2.0)``); the same draws on every
            process under global scope, whose generators are seeded alike. ``set_alpha`` (a
            schedule) replaces the range by one α.
        p: probability that a training batch is mixed; otherwise it trains on the clean batch.
        keep_clean: also feed the b clean embeddings, so the classifier sees b + n rows (clean first).
        linear_shortcut: when ``classifier`` is a plain ``nn.Linear`` g, mix its b output rows instead of
            its b input rows: g(Λ Z) = Λ g(Z) exactly, because every row of Λ sums to 1, and it costs
            n·m·K instead of n·m·d + n·d·K. Everything after ``classifier`` still sees n rows.
        teacher: optional teacher (e.g. :class:`multimix.EMATeacher`) for self-distilled targets:
            its probabilities P' on the clean batch are mixed with the same weights, Ỹ' = Λ P',
            and the returned targets are Ỹ + w·Ỹ' so that ``soft_cross_entropy`` gives
            CE(Ỹ) + w·CE(Ỹ') (docs/concepts/distillation.md); their rows then sum to 1 + w.
        distill_weight: w, >= 0.
        temperature: τ of the teacher's softmax, > 0.
        num_classes: K, required when y holds integer labels.
        generator: optional seeded ``torch.Generator``.
        multi_label: the targets are multi-label (b, K): entries in [0, 1], rows summing to anything
            (docs/concepts/multi-label.md). They are mixed with the very weights of the embeddings,
            Λ Y, never renormalised (a row of Λ Y sums to Λ times Y's row sums). A teacher's
            probabilities are then per-class sigmoids σ(teacher(x) / τ), and the returned targets
            (Ỹ + w·Ỹ') / (1 + w), entries in [0, 1], so that ``soft_binary_cross_entropy`` gives
            (BCE(Ỹ) + w·BCE(Ỹ')) / (1 + w).
        scope: under ``torch.distributed``, "local" draws tuples from this process's batch (n rows per
            process, the paper's multi-GPU setting); "global" gathers every process's rows — the
            logits under the linear shortcut, else the embeddings — and targets (a differentiable
            all-gather: gradients reach the process that owns each example), draws one Λ (n, B) over
            the global batch B, identical on every process (seed their generators alike), and keeps
            this process's contiguous share of the n rows. Without a process group both are the same.

    Defaults (m=2, α=1 for pairs and 1/m beyond, n=1000, p=1, no clean rows) were chosen on MNIST-1D's validation split
    (benchmarks/results/ablation_mnist1d_stage*.md): accuracy falls as tuples lengthen (m = 2: 97.8,
    5: 95.4, 10: 73, whole batch: chance — every mixed target nears the class prior), α = 1 beat 0.5
    and 2, n = 1000 beat 10, 100 and 10 000, and p < 1 or clean rows made no difference. That fall
    was α = 1's: with α = 1/m every m trains (benchmarks/results/beyond_pairs.md), hence the default.
    """

    # The step's (targets, teacher's probabilities), every process's under global scope; None between steps.
    _gathered: list[Tensor | None] | None

    def __init__(
        self,
        model: nn.Module,
        *,
        classifier: str | None = None,
        n: int = 1000,
        m: int | None = 2,
        alpha: float | tuple[float, float] | None = None,
        p: float = 1.0,
        keep_clean: bool = False,
        linear_shortcut: bool = True,
        teacher: nn.Module | None = None,
        distill_weight: float = 1.0,
        temperature: float = 1.0,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
        multi_label: bool = False,
        scope: str = "local",
        before: str | None = None,
    ) -> None:
        super().__init__(
            model,
            n=n,
            m=m,
            alpha=alpha,
            p=p,
            teacher=teacher,
            distill_weight=distill_weight,
            temperature=temperature,
            num_classes=num_classes,
            generator=generator,
            multi_label=multi_label,
            scope=scope,
        )
        self.keep_clean = bool(keep_clean)
        self.classifier = renamed_keyword("MultiMix", "before", "classifier", before, classifier)
        module = find_module(
            model, self.classifier, argument="before" if before is not None else "classifier"
        )
        # type(...) is, not isinstance: a subclass may override forward and break g(ΛZ) = Λ g(Z).
        self.linear_shortcut = bool(linear_shortcut) and type(module) is nn.Linear
        if self.linear_shortcut:
            self._handles.append(module.register_forward_hook(self._mix_output))
        else:
            self._handles.append(module.register_forward_pre_hook(self._mix_input))
            self._handles.append(module.register_forward_hook(self._mixed_output))

    def _mix_rows(self, armed: _Armed, rows: Tensor, what: str) -> Tensor:
        tuples, sizes, extras = armed
        local = tuples.batch_size if sizes is None else sizes[collective.world()[0]]
        if rows.dim() < 1 or rows.shape[0] != local:
            raise ValueError(
                f"the {what} of {self.classifier!r} has batch size {rows.shape[0] if rows.dim() else None}, expected "
                f"{local} (batch-first embeddings)"
            )
        source: Tensor | None = rows
        # Global scope: the rows, targets and teacher's probabilities in one gather
        if sizes is not None:
            source, *self._gathered = collective.gather_packed([rows, *extras], sizes)
        # gather_packed returns a tensor for each tensor given (None only for None): source is the rows'.
        mixed = interpolate_tuples(tuples, cast(Tensor, source))
        if self.keep_clean:
            mixed = torch.cat([rows, mixed])
        self._record_mixed(self.classifier, rows, mixed)
        return mixed

    def _mix_input(self, module: nn.Module, args: tuple[object, ...]) -> tuple[object, ...] | None:
        if self._armed is None:
            self._called_again(
                self.classifier, args
            )  # called again in this forward: on which rows?
            return None
        tuples = cast(_Armed, self._take())  # what _mix_forward passed to _run_armed
        if not args or not isinstance(args[0], Tensor):
            raise TypeError(
                f"submodule {self.classifier!r} must take a Tensor as its first argument to be mixed"
            )
        return (self._mix_rows(tuples, args[0], "input"), *args[1:])

    def _mixed_output(self, module: nn.Module, args: tuple[object, ...], output: object) -> None:
        """The output of the call whose input was mixed: what later calls on the mixed rows take."""
        call = self._mixed_call
        if call is not None and call.layer == self.classifier and call.calls == 1:
            call.follow(output)

    def _mix_output(
        self, module: nn.Module, args: tuple[object, ...], output: Tensor
    ) -> Tensor | None:
        if self._armed is None:
            self._called_again(
                self.classifier, args
            )  # called again in this forward: on which rows?
            return None
        # What _mix_forward armed
        return self._mix_rows(cast(_Armed, self._take()), output, "output")

    def _mix_forward(
        self, x: Inputs, targets: Tensor, labels: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        probs = self._teacher_probs(x)
        if self._skip_batch(x):
            return call_model(self.model, x), self._add_distilled(targets, probs)
        b = batch_size(x)
        sizes = self._global_sizes(b, batch_device(x))
        # Every process draws the same Λ over the global batch
        total = b if sizes is None else sum(sizes)
        tuples = self._my_rows(
            sample_multimix_tuples(
                total,
                n=self.n,
                m=self._tuple_length(total),
                alpha=self._alpha_for(total),
                generator=self.generator,
                device=batch_device(x),
            ),
            sizes,
        )
        self._gathered = [targets, probs]  # global scope: replaced by every process's, in the hook
        try:
            logits = self._run_armed(x, (tuples, sizes, (targets, probs)), self.classifier)
            all_targets, all_probs = self._gathered
        finally:
            self._gathered = None
        with _no_autocast(targets.device):
            # all_targets is a tensor: the targets, or their gather (a tensor for a tensor).
            mixed = self._add_distilled(
                interpolate_tuples(tuples, cast(Tensor, all_targets)),
                None if all_probs is None else interpolate_tuples(tuples, all_probs),
            )
        if self.keep_clean:
            mixed = torch.cat([self._add_distilled(targets, probs), mixed])
        if logits.shape[0] != mixed.shape[0]:
            raise RuntimeError(
                f"the model returned {logits.shape[0]} rows after mixing {mixed.shape[0]}; "
                f"does the model reshape by batch size after {self.classifier!r}?"
            )
        return logits, mixed

    @property
    def before(self) -> str:
        """The name of the submodule whose input is mixed (deprecated; use ``classifier``)."""
        warn_renamed("MultiMix.before", "MultiMix.classifier", stacklevel=3)
        return self.classifier

    def extra_repr(self) -> str:
        return (
            f"classifier={self.classifier!r}, n={self.n}, m={self.m}, alpha={self._alpha_repr()}, p={self.p}, "
            f"keep_clean={self.keep_clean}, scope={self.scope!r}"
        )
