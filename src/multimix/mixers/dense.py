"""Dense MultiMix: mix spatial embeddings per position and classify every position.

The formulas, attention options and references: docs/concepts/dense-multimix.md.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multimix._sharding import is_sharded
from multimix._validation import check_int
from multimix.functional import (
    cam_attention,
    dense_interpolate,
    dense_interpolate_labels,
    pooled_attention,
    sample_dense_multimix_weights,
)
from multimix.functional.dense import (
    DENSE_CHUNK_ELEMENTS,
    FUSED_MAX_M,
    check_layout,
    dense_mix_logits_and_labels,
    positions_of,
)
from multimix.functional.targets import class_major_is_faster
from multimix.mixers import collective
from multimix.mixers.adapters import Inputs, call_model, first_tensor
from multimix.mixers.base import _no_autocast, find_module
from multimix.mixers.base import unwrapped as _unwrapped
from multimix.mixers.multimix import _MultiMixBase

#: The ``attention=`` values of :class:`DenseMultiMix` (and of the trainer's ``attention`` option).
ATTENTIONS = ("none", "pooled", "cam")

#: What DenseMultiMix arms its features hook with: (targets, teacher's probabilities, integer labels).
_Armed = tuple[Tensor, Tensor | None, Tensor | None]


class _FeaturesMixed(Exception):
    """Raised by the features hook to end the model's forward there: what follows would not be used."""


class DenseMultiMix(_MultiMixBase):
    """Dense MultiMix: interpolate spatial embeddings per position and classify every position.

    The formulas, attention options and references: docs/concepts/dense-multimix.md.

    The model runs once on the b clean examples up to the submodule named ``features``, whose output
    Z ``(b, d, *spatial)`` holds r positions. For n generated examples, each mixing a tuple of m batch
    members, every position j gets its own Dirichlet weights times the members' attention at j; the
    submodule named ``classifier`` is applied to each of the n·r mixed position embeddings, and each
    position's target mixes its members' labels with the same weights. In training the model's
    forward ends at ``features`` (an exception from its hook, caught here), so what follows is not run;
    under a wrapper that needs the forward to complete (``DistributedDataParallel``, ``torch.compile``)
    and on a model sharded by FSDP (``fully_shard``), it runs on the clean batch and the wrapper's
    output is replaced by the mixed logits. The mixer's first training forward also runs to the end
    (on the clean batch, its output replaced), once, to check that ``features`` is called once per
    forward: a second call (a shared block applied twice, two views) would mean the embedding
    classified here is not the one the model classifies, and is refused with a ``RuntimeError``.

    Args:
        model: any ``nn.Module``.
        features: name of the submodule whose output is the spatial embedding: ``(b, d, *spatial)`` with
            ``layout="channels_first"`` (conv nets), ``(b, *positions, d)`` with ``"channels_last"``
            (transformers' tokens); a tuple output's first tensor.
        classifier: name of the classifier submodule, applicable to (rows, d) embeddings.
        n, m, alpha, p: as :class:`MultiMix` (λ is drawn per position).
        attention: "none" (uniform), "pooled" (similarity of each position to the pooled embedding,
            softmax over positions) or "cam" (ReLU class activation of the true class, ℓ1-normalised;
            needs a classifier with a ``weight`` of shape (K, d)). No gradient flows into it.
        teacher, distill_weight, temperature: self-distilled targets, as :class:`MultiMix`.
        chunk_size: generated rows per interpolation chunk (None: automatic), bounding memory.
        layout: ``"channels_first"`` or ``"channels_last"``; when a linear classifier's input size
            contradicts it, the error says which to use.
        prefix_tokens: leading positions that are not spatial (a class token) and are left out.
        linear_shortcut: when ``classifier`` is a plain ``nn.Linear`` g, classify the b·r clean
            positions and mix the logits: g(Σ_i w_i z_i) = Σ_i w_i g(z_i) exactly (the weights sum to 1
            at every position), at b·r·d·K + n·m·r·K cost instead of n·r·(m·d + d·K). On a
            channels-first map g is applied as a 1×1 convolution (its module hooks do not fire for
            this pass), and on the CPU with fewer than 16 classes the mixed logits and targets are
            laid out class-major: (n·r, K) views of (K, n·r) storage, which
            :func:`multimix.soft_cross_entropy` reads fastest (call ``.contiguous()`` for a copy).
        num_classes, generator: as the other mixers.
        multi_label: multi-label targets (b, K), entries in [0, 1] with rows summing to anything,
            mixed per position with the embeddings' weights, as :class:`MultiMix` (its teacher too).
            With ``attention="cam"`` a row's class vector is the mean of its present classes'
            weights (the row normalised to sum to 1; the ℓ1-normalised attention is the same for any
            positive scale), and a row with no label present gets uniform attention.

    Returns in training ``(logits (n·r, K), targets (n·r, K))``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        features: str,
        classifier: str,
        n: int = 1000,
        m: int | None = 2,
        alpha: float | tuple[float, float] | None = None,
        attention: str = "none",
        p: float = 1.0,
        teacher: nn.Module | None = None,
        distill_weight: float = 1.0,
        temperature: float = 1.0,
        chunk_size: int | None = None,
        linear_shortcut: bool = True,
        layout: str = "channels_first",
        prefix_tokens: int = 0,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
        multi_label: bool = False,
        scope: str = "local",
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
        self.linear_shortcut = bool(linear_shortcut)
        check_layout(layout, prefix_tokens)
        self.layout, self.prefix_tokens = layout, prefix_tokens
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, got {attention!r}")
        self.attention = attention
        self.chunk_size = None if chunk_size is None else check_int(chunk_size, "chunk_size")
        self.features, self.classifier = features, classifier
        feature_module = find_module(model, features, argument="features")
        # A tuple keeps the classifier out of this module's own submodules (no duplicate state_dict keys).
        self._classifier_ref = (find_module(model, classifier, argument="classifier"),)
        weight = getattr(self._classifier_ref[0], "weight", None)
        if attention == "cam" and (not isinstance(weight, Tensor) or weight.dim() != 2):
            raise ValueError(
                f"attention='cam' needs a classifier with a (K, d) weight; {classifier!r} has none"
            )
        outputs = self._classifier_outputs()
        if num_classes is not None and outputs is not None and outputs != num_classes:
            raise ValueError(
                f"num_classes={num_classes} was given to DenseMultiMix, but the classifier "
                f"{classifier!r} gives {outputs} outputs: give num_classes={outputs}, or name the "
                f"classifier with {num_classes} outputs"
            )
        self._result: tuple[Tensor, Tensor] | None = None
        self._stop_early = False
        self._checked_once = False  # whether a mixing forward has run the model to its end
        self._handles.append(feature_module.register_forward_hook(self._mix_features))
        # The mixed logits become the model's output in the mixing pass: what follows the features is
        # then visibly unused (DistributedDataParallel(find_unused_parameters=True) skips its gradients
        # instead of waiting for them), and a wrapper sees the logits that are trained on.
        self._handles.append(_unwrapped(model).register_forward_hook(self._output_mixed))

    def _output_mixed(
        self, module: nn.Module, args: tuple[object, ...], output: object
    ) -> Tensor | None:
        return None if self._result is None else self._result[0]

    def _mix_features(self, module: nn.Module, args: tuple[object, ...], z: object) -> None:
        if self._armed is None:
            self._called_again(self.features, args)  # any later call in a mixing forward is refused
            return None
        # What _mix_forward passed to _run_armed
        targets, probs, labels = cast(_Armed, self._take())
        z = first_tensor(z)
        self._record_mixed(self.features, None, None, sequential=False)
        if not isinstance(z, Tensor) or z.dim() < 3:
            raise ValueError(
                f"the output of {self.features!r} must be a spatial embedding, (b, d, *spatial) or "
                f"(b, *positions, d), got {tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}"
            )
        self._check_layout(z)
        outputs = self._classifier_outputs()
        if outputs is not None:  # before the targets' classes index the classifier's outputs
            self._check_classes((z.shape[0], outputs), targets.shape[1], soft=labels is None)
        if self._one_pass(z, labels, probs, targets.shape[1]):
            # _one_pass: labels is not None
            self._result = self._mix_one_pass(z, cast(Tensor, labels))
        else:
            self._result = self._mix(z, targets, probs, labels)
        if self._stop_early:
            raise _FeaturesMixed
        return None

    def _mix_one_pass(self, z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The CPU's one-pass path (see :meth:`_one_pass`): ``(logits (n·r, K), targets (n·r, K))``."""
        # _one_pass checked: type(classifier) is nn.Linear
        classifier = cast(nn.Linear, self._classifier_ref[0])
        rows = F.conv1d(z.flatten(2), classifier.weight[:, :, None], classifier.bias)  # (b, K, r)
        b, k, r = rows.shape
        members, weights = sample_dense_multimix_weights(
            b,
            r,
            n=self.n,
            m=self._tuple_length(b),
            alpha=self._alpha_for(b),
            generator=self.generator,
            device=z.device,
            member_major=True,
        )
        return dense_mix_logits_and_labels(rows, members, weights, labels, k)

    def _mix(
        self, z: Tensor, targets: Tensor, probs: Tensor | None, labels: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The general path: every layout, attention, teacher, scope and device. ``(logits, targets)``."""
        zr = positions_of(z, layout=self.layout, prefix_tokens=self.prefix_tokens)  # (b, r, d)
        b, r, d = zr.shape
        if self.attention == "pooled":
            att = pooled_attention(zr.transpose(1, 2))
        elif self.attention == "cam":
            # __init__ checked that attention="cam" has a classifier with a (K, d) weight tensor.
            att = cam_attention(
                zr.transpose(1, 2),
                cast(Tensor, self._classifier_ref[0].weight),
                _class_weights(targets) if self.multi_label else targets,
            )
        else:
            att = None
        classifier = self._classifier_ref[0]
        k = targets.shape[1]
        shortcut = self.linear_shortcut and type(classifier) is nn.Linear
        if shortcut:  # mix the b·r positions' logits: g(Σ w z) = Σ w g(z)
            if self.layout == "channels_first":
                # g at every position as a 1×1 convolution of the (b, d, r) map: no transposed copy of
                # z, and its gradient comes back in z's own layout (a linear layer on the transposed
                # rows costs a copy forward and a strided gradient into the features' backward).
                linear = cast(nn.Linear, classifier)  # shortcut: type(classifier) is nn.Linear
                rows = F.conv1d(zr.transpose(1, 2), linear.weight[:, :, None], linear.bias)
                rows = rows.transpose(1, 2)  # (b, r, K), a view of (b, K, r)
            else:
                rows = classifier(zr.reshape(b * r, d)).reshape(b, r, -1)  # (b, r, K)
        else:
            rows = zr
        # Global scope: the rows mixed (logits or embeddings), attention, targets and teacher's
        # probabilities of every process, in one gather; every process then draws the same tuples
        # over the global batch and keeps its share of the n generated examples.
        sizes = self._global_sizes(b, z.device)
        if sizes is not None:
            gathered_rows, att, gathered_targets, probs = collective.gather_packed(
                [rows, att, targets, probs], sizes
            )
            # gather_packed returns a tensor for each tensor given (None only for None).
            rows, targets = cast(Tensor, gathered_rows), cast(Tensor, gathered_targets)
        members, weights = sample_dense_multimix_weights(
            rows.shape[0],
            r,
            n=self.n,
            m=self._tuple_length(rows.shape[0]),
            alpha=self._alpha_for(rows.shape[0]),
            attention=att,
            generator=self.generator,
            device=z.device,
        )
        if sizes is not None:
            mine = collective.share(self.n, *collective.world())
            members, weights = members[mine], weights[mine]
        class_major = shortcut and class_major_is_faster(rows.shape[2], z.device)
        # The targets of integer labels, on the CPU and for this process's own batch: a scatter of the
        # n·m·r weights at the members' labels instead of a gather and combination of n·m·r·K values.
        # (On a GPU the scatter would add floats in an unspecified order; the gather is deterministic.)
        by_label = labels is not None and sizes is None and labels.device.type == "cpu"
        if shortcut:
            # With few classes on the CPU, mix into class-major storage (K, ·): every elementwise step
            # then runs over n·r contiguous values instead of K at a time, and soft_cross_entropy
            # reads the (n·r, K) results' contiguous transpose directly.
            logits = dense_interpolate(
                members, weights, rows, chunk_size=self.chunk_size, class_major=class_major
            ).reshape(-1, rows.shape[2])
        else:
            # (n, r, d)
            mixed = dense_interpolate(members, weights, rows, chunk_size=self.chunk_size)
            logits = classifier(mixed.reshape(-1, d))
        with _no_autocast(targets.device):
            if by_label:
                # by_label: labels is not None.
                mixed_targets = dense_interpolate_labels(
                    members,
                    weights,
                    cast(Tensor, labels),
                    k,
                    dtype=targets.dtype,
                    class_major=class_major,
                )
            else:
                mixed_targets = dense_interpolate(
                    members, weights, targets, chunk_size=self.chunk_size, class_major=class_major
                )
            mixed_probs = (
                None
                if probs is None
                else dense_interpolate(
                    members, weights, probs, chunk_size=self.chunk_size, class_major=class_major
                )
            )
        return logits, self._add_distilled(mixed_targets, mixed_probs).reshape(-1, k)

    def _one_pass(self, z: Tensor, labels: Tensor | None, probs: Tensor | None, k: int) -> bool:
        """Whether this step takes the CPU's one-pass path (:func:`multimix.functional.dense_mix_logits_and_labels`):
        the same draws and values as the general path below, with a fraction of its operations.

        That path covers the default CPU case: the exact linear shortcut on a channels-first map,
        fewer than 16 classes, integer labels, tuples of at most 8, no attention, no teacher, this
        process's own batch, intermediates within one chunk and no autocast."""
        classifier = self._classifier_ref[0]
        if not (
            labels is not None
            and probs is None
            and self.attention == "none"
            and self.layout == "channels_first"
            and not self.prefix_tokens
            and self.linear_shortcut
            and type(classifier) is nn.Linear
            and z.device.type == "cpu"
            and labels.device.type == "cpu"
            and class_major_is_faster(k, z.device)
            and not torch.is_autocast_enabled("cpu")
            and (self.scope == "local" or collective.world()[1] == 1)
        ):
            return False
        b, r = z.shape[0], math.prod(z.shape[2:])
        m = self._tuple_length(b) or b
        # As dense_interpolate's class-major chunks
        chunk = DENSE_CHUNK_ELEMENTS // ((m + 1) * r * k)
        return m <= FUSED_MAX_M and self.n <= (
            chunk if self.chunk_size is None else min(chunk, self.chunk_size)
        )

    def _classifier_outputs(self) -> int | None:
        """K of the classifier when its modules tell: a linear layer's ``out_features``, or the rows
        of the (K, d) weight that ``attention="cam"`` reads; None otherwise."""
        classifier = self._classifier_ref[0]
        outputs = getattr(classifier, "out_features", None)
        if isinstance(outputs, int):
            return outputs
        weight = getattr(classifier, "weight", None)
        if self.attention == "cam" and isinstance(weight, Tensor) and weight.dim() == 2:
            return weight.shape[0]
        return None

    def _check_layout(self, z: Tensor) -> None:
        """A linear classifier's input size tells whether the features' channels are first or last."""
        d = getattr(self._classifier_ref[0], "in_features", None)
        channels = z.shape[1] if self.layout == "channels_first" else z.shape[-1]
        if d is None or channels == d:
            return
        other = "channels_last" if self.layout == "channels_first" else "channels_first"
        fits = (z.shape[-1] if other == "channels_last" else z.shape[1]) == d
        hint = (
            f"; its {'last' if other == 'channels_last' else 'second'} axis has {d}: use layout={other!r}"
            if fits
            else ""
        )
        raise ValueError(
            f"the output of {self.features!r} has shape {tuple(z.shape)}: with layout={self.layout!r} "
            f"its channels are {channels}, but {self.classifier!r} takes {d} features{hint}"
        )

    def _mix_forward(
        self, x: Inputs, targets: Tensor, labels: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        probs = self._teacher_probs(x)
        if self._skip_batch(x):
            return call_model(self.model, x), self._add_distilled(targets, probs)
        # What follows the features is not needed: a plain model's forward ends at the features' hook.
        # A wrapper (DistributedDataParallel, torch.compile) must see its module's forward complete;
        # there the rest runs on the clean batch and its output is replaced by the mixed logits.
        # The first mixing forward of a plain model runs to the end once, so that a second call of the
        # features (which the early end would hide) is seen and refused; not while a CUDA graph is
        # captured, where the extra work would be replayed at every step.
        self._stop_early = (
            not self._needs_whole_forward()
            and not torch.compiler.is_compiling()
            and (self._checked_once or _capturing())
        )
        try:
            self._run_armed(x, (targets, probs, labels), self.features)
        except _FeaturesMixed:
            pass
        finally:
            result, self._result, self._stop_early = self._result, None, False
        self._checked_once = True
        # Set by _mix_features, which _run_armed made sure was called.
        return cast("tuple[Tensor, Tensor]", result)

    def _needs_whole_forward(self) -> bool:
        """Whether the model's forward must run to its end: a wrapper (DDP, torch.compile) expects it,
        and so does FSDP, whose units gather and release their parameters in forward hooks that an
        early end would skip (those placed after the mixer's run after its hook raised)."""
        cached = self.__dict__.get("_whole_forward")
        model = self.model
        # Keyed by the object and its class: fully_shard changes the class of the module it shards.
        if cached is None or cached[0] is not model or cached[1] is not type(model):
            cached = (model, type(model), _unwrapped(model) is not model or is_sharded(model))
            self.__dict__["_whole_forward"] = cached
        return bool(cached[2])

    def extra_repr(self) -> str:
        return (
            f"features={self.features!r}, classifier={self.classifier!r}, n={self.n}, m={self.m}, "
            f"alpha={self._alpha_repr()}, attention={self.attention!r}, p={self.p}, layout={self.layout!r}, "
            f"prefix_tokens={self.prefix_tokens}"
        )


def _class_weights(targets: Tensor) -> Tensor:
    """Multi-label rows (b, K) normalised to sum to 1 (all-zero rows stay zero): ``targets @ weight``
    is then the mean class vector of a row's labels, the single-label CAM's class vector for one."""
    total = targets.sum(dim=1, keepdim=True)
    return targets / total.clamp_min(torch.finfo(targets.dtype).tiny)


def _capturing() -> bool:
    """Whether a CUDA graph is being captured on the current stream."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
