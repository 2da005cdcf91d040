"""``nn.Module`` front-ends that add mixing to any model by naming one of its submodules.

A mixer wraps a model. In training mode ``mixer(x, y)`` returns ``(logits, targets)`` ready for
:func:`multimix.functional.soft_cross_entropy`; in eval mode it returns ``model(x)`` and the un-mixed
targets. Targets are always soft, (rows, K), whatever form ``y`` had.

How the mixing reaches inside an arbitrary model: at construction the mixer registers a forward
hook (or forward-pre hook) on each named submodule. The hooks do nothing unless the mixer's own
forward has just *armed* them with the parameters of one mixing operation; the first matching hook
call consumes them. So a plain ``model(x)`` — in training or not, while the mixer exists — runs
unchanged, residual and other non-sequential models need no rewritten forward, and ``close()`` (or
leaving a ``with`` block) removes the hooks for good.

Hidden states must be batch-first, as the outputs of ``nn.Linear``, ``nn.Conv*d`` and most blocks are.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from multimix._validation import check_alpha, check_int, check_probability, check_same_batch, check_tensor
from multimix.functional import (
    cam_attention,
    dense_interpolate,
    dense_multimix_weights,
    interpolate,
    mix_pairs,
    mixup_params,
    multimix_weights,
    one_hot,
    pooled_attention,
    sample_beta,
)
from multimix.schedules import confmix_alpha

__all__ = ["Mixup", "ManifoldMixup", "ConfMix", "MultiMix", "DenseMultiMix", "find_module"]

ATTENTIONS = ("none", "pooled", "cam")

INPUT = "input"


#: Prefixes that wrappers put before the names of the model they wrap: DistributedDataParallel and
#: DataParallel (``module.``), ``torch.compile`` (``_orig_mod.``), in any nesting.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _strip_wrappers(name: str) -> str:
    while name.startswith(WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    return name


def find_module(model: nn.Module, name: str, *, argument: str = "name") -> nn.Module:
    """Return the submodule of ``model`` called ``name`` (a key of ``model.named_modules()``).

    A model wrapped in ``DistributedDataParallel``/``DataParallel`` (``module.``) or compiled with
    ``torch.compile`` (``_orig_mod.``) is also searched under those prefixes, so the same names work
    before and after wrapping. An exact name always wins.
    """
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be a submodule name (str), got {type(name).__name__} {name!r}")
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    for key, module in modules.items():
        if key and _strip_wrappers(key) == name:
            return module
    names = dict.fromkeys(_strip_wrappers(k) for k in modules if k and k + "." not in WRAPPER_PREFIXES)
    valid = ", ".join(repr(k) for k in names) or "(the model has no submodules)"
    raise ValueError(f"{argument}={name!r} is not a submodule of {type(model).__name__}; valid names: {valid}")


def _float_targets(targets: Tensor) -> Tensor:
    """Targets in float32 (float64 kept): mixed targets must not inherit an autocast dtype."""
    return targets if targets.dtype in (torch.float32, torch.float64) else targets.float()


def _no_autocast(device: torch.device):
    """Switch autocast off for exact target arithmetic (mixing weights times labels)."""
    return torch.autocast(device_type=device.type, enabled=False)


class _Mixer(nn.Module):
    """Shared plumbing: target conversion, train/eval dispatch, arming hooks, hook lifetime."""

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int | None,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if num_classes is not None:
            num_classes = check_int(num_classes, "num_classes", low=1)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.model = model
        self.num_classes = num_classes
        self.generator = generator
        self._handles: list[RemovableHandle] = []
        self._armed: object | None = None  # parameters for the next hook call; None = pass through

    # -- public ------------------------------------------------------------------------------

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Run the model on x, mixing when the model is in training mode.

        Args:
            x: input batch (b, ...).
            y: integer labels (b,) (then ``num_classes`` is required) or soft targets (b, K).
                Optional in eval mode.

        Returns:
            ``(logits, targets)``: in training, the mixed logits (rows, K) and soft targets
            (rows, K); in eval, ``model(x)`` and the soft un-mixed targets (or None without y).
        """
        check_tensor(x, "x")
        targets = None
        if y is not None:
            check_same_batch(x, y, "x", "y")
            targets = _float_targets(one_hot(y, self.num_classes).to(x.device))
        if not self.model.training:
            return self.model(x), targets
        if targets is None:
            raise ValueError("y is required in training mode: the mixer mixes inputs and targets together")
        if getattr(self, "alpha", None) == 0:  # a schedule at α = 0: no mixing (λ ∈ {0, 1})
            return self.model(x), targets
        return self._mix_forward(x, targets)

    def set_alpha(self, alpha: float) -> None:
        """Change the mixing strength, e.g. from a schedule each epoch; α = 0 turns mixing off."""
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        self.alpha = float(alpha)

    def close(self) -> None:
        """Remove every hook this mixer placed on the model. Idempotent."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> _Mixer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- for subclasses ----------------------------------------------------------------------

    def _mix_forward(self, x: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _run_armed(self, x: Tensor, armed: object, layer: str) -> Tensor:
        """Run the model once with the hooks armed; fail loudly if the hook never fired."""
        if not self._handles:
            raise RuntimeError(f"{type(self).__name__} was closed; create a new mixer to mix again")
        self._armed = armed
        try:
            out = self.model(x)
        finally:
            unused, self._armed = self._armed, None
        if unused is not None:
            hint = ""
            if any(name.startswith("_orig_mod") for name, _ in self.model.named_children()):
                # dynamo does not guard on hooks (torch._dynamo.config.skip_nnmodule_hook_guards).
                hint = ("; torch.compile reuses graphs traced before the mixer's hooks existed: create the mixer "
                        "before the compiled model's first call, or call torch._dynamo.reset()")
            raise RuntimeError(
                f"submodule {layer!r} was not called during the model's forward, so nothing was mixed{hint}"
            )
        return out

    def _take(self) -> object | None:
        """Hand the armed parameters to the first hook that asks, then disarm."""
        armed, self._armed = self._armed, None
        return armed

    def _setup_teacher(self, teacher: nn.Module | None, distill_weight: float, temperature: float) -> None:
        if teacher is not None and not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be an nn.Module (e.g. multimix.EMATeacher) or None, got {type(teacher).__name__}")
        if isinstance(distill_weight, bool) or not isinstance(distill_weight, (int, float)) or not (
            math.isfinite(distill_weight) and distill_weight >= 0
        ):
            raise ValueError(f"distill_weight must be a finite number >= 0, got {distill_weight!r}")
        self.teacher = teacher
        self.distill_weight = float(distill_weight)
        self.temperature = check_alpha(temperature, "temperature")

    def _teacher_probs(self, x: Tensor) -> Tensor | None:
        """Teacher probabilities on the clean batch, softmax(teacher(x) / τ), or None without a teacher."""
        if self.teacher is None or self.distill_weight == 0:
            return None
        with torch.no_grad():
            return torch.softmax(self.teacher(x).float() / self.temperature, dim=-1)

    def _add_distilled(self, targets: Tensor, teacher_targets: Tensor | None) -> Tensor:
        """Ỹ + w·Ỹ': soft_cross_entropy of it is CE(Ỹ) + w·CE(Ỹ') (SPEC §4), by linearity in the targets."""
        if teacher_targets is None:
            return targets
        return targets + self.distill_weight * teacher_targets.to(targets.dtype)

    def _uniform(self, device: torch.device) -> float:
        dev = self.generator.device if self.generator is not None else device
        return float(torch.rand((), generator=self.generator, device=dev))


class ManifoldMixup(_Mixer):
    """Manifold mixup (Verma et al., 2019): pairwise mixing of the output of a layer drawn per step.

    Args:
        model: any ``nn.Module``.
        layers: names of submodules (as in ``model.named_modules()``) whose outputs may be mixed;
            ``"input"`` means the input itself. One is drawn uniformly at each training step.
        alpha: λ ~ Beta(α, α), α > 0.
        per_sample: one λ per pair instead of one per batch.
        num_classes: K, required when y holds integer labels.
        generator: optional seeded ``torch.Generator`` for every draw.

    Example::

        mixer = ManifoldMixup(model, layers=["input", "layer1", "layer2"], num_classes=10)
        logits, targets = mixer(x, y)
        loss = soft_cross_entropy(logits, targets)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        layers: Sequence[str],
        alpha: float = 2.0,
        per_sample: bool = False,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, num_classes=num_classes, generator=generator)
        if isinstance(layers, str) or not isinstance(layers, Sequence) or len(layers) == 0:
            raise ValueError(f"layers must be a non-empty list of submodule names (or 'input'), got {layers!r}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers must not repeat a name, got {list(layers)}")
        self.alpha = check_alpha(alpha)
        self.per_sample = bool(per_sample)
        self.layers = list(layers)
        self.last_layer: str | None = None  # the layer mixed at the last training step
        # Resolve every name before registering anything, so a bad name leaves the model untouched.
        modules = {name: find_module(model, name, argument="layers") for name in self.layers if name != INPUT}
        for name, module in modules.items():
            self._handles.append(module.register_forward_hook(functools.partial(self._mix_output, name)))

    def _mix_output(self, name: str, module: nn.Module, args: tuple, output: object) -> Tensor | None:
        if self._armed is None or self._armed[0] != name:
            return None
        _, lam, perm = self._take()
        if not isinstance(output, Tensor):
            raise TypeError(f"layer {name!r} returned {type(output).__name__}; only a Tensor output can be mixed")
        return mix_pairs(output, lam, perm)

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(λ (b,), partner permutation (b,)) for this batch."""
        return mixup_params(
            x.shape[0], alpha=self.alpha, per_sample=self.per_sample, generator=self.generator, device=x.device
        )

    def _mix_forward(self, x: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        layer = self.layers[int(self._uniform(x.device) * len(self.layers)) % len(self.layers)]
        lam, perm = self._params(x)
        self.last_layer = layer
        if layer == INPUT:
            logits = self.model(mix_pairs(x, lam, perm))
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
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        alpha: float = 1.0,
        per_sample: bool = False,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(
            model, layers=[INPUT], alpha=alpha, per_sample=per_sample, num_classes=num_classes, generator=generator
        )


class ConfMix(ManifoldMixup):
    """ConfMix (seed 2): pairwise mixing whose strength follows the model's confidence, per example.

    Before each step the current model predicts the clean batch (no gradient, eval mode); example i
    gets α_i = scale · K/(K−1) · (max_c p_ic − 1/K) clipped to [0, 1] and λ_i ~ Beta(α_i, α_i), so a
    confident example is mixed strongly and an unsure one hardly at all (α_i = 0: λ_i ∈ {0, 1}).
    Its partner is drawn by a random permutation, as in mixup. ``scale=0.5`` is "½ ConfMix".
    Warm-up epochs of ERM are the training loop's business (the model must be confident first).

    Args:
        model: any ``nn.Module``.
        layers: where to mix, as :class:`ManifoldMixup` (default: the input).
        scale: multiplies α_i, > 0.
        num_classes, generator: as the other mixers.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        layers: Sequence[str] = (INPUT,),
        scale: float = 1.0,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, layers=list(layers), alpha=1.0, per_sample=True, num_classes=num_classes,
                         generator=generator)
        self.scale = check_alpha(scale, "scale")
        self.last_alpha: Tensor | None = None  # the per-example α of the last step, for logging

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                probs = torch.softmax(self.model(x).float(), dim=-1)
        finally:
            self.model.train(was_training)
        alpha = self.scale * confmix_alpha(probs)
        self.last_alpha = alpha
        lam = sample_beta(x.shape[0], alpha, generator=self.generator, device=x.device)
        _, perm = mixup_params(x.shape[0], alpha=1.0, generator=self.generator, device=x.device)
        return lam.to(x.device), perm

    def extra_repr(self) -> str:
        return f"layers={self.layers}, scale={self.scale}"


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

    def _skip_batch(self, x: Tensor) -> bool:
        """With probability 1 − p, this batch trains clean."""
        return self.p < 1.0 and self._uniform(x.device) >= self.p


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

    def _mix_forward(self, x: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        probs = self._teacher_probs(x)
        if self._skip_batch(x):
            return self.model(x), self._add_distilled(targets, probs)
        b = x.shape[0]
        weights = multimix_weights(b, n=self.n, m=self._tuple_length(b), alpha=self.alpha, generator=self.generator,
                                   device=x.device)
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


class DenseMultiMix(_MultiMixBase):
    """Dense MultiMix (SPEC §3): interpolate spatial embeddings per position and classify every position.

    The model runs once on the b clean examples up to the submodule named ``features``, whose output
    Z (b, d, *spatial) holds r positions. For n generated examples, each mixing a tuple of m batch
    members, every position j gets its own Dirichlet weights times the members' attention at j; the
    submodule named ``classifier`` is applied to each of the n·r mixed position embeddings, and each
    position's target mixes its members' labels with the same weights. What follows ``features`` in
    the model still runs on the clean batch, and its output is not used in training.

    Args:
        model: any ``nn.Module``.
        features: name of the submodule whose output is the spatial embedding (b, d, *spatial).
        classifier: name of the classifier submodule, applicable to (rows, d) embeddings.
        n, m, alpha, p: as :class:`MultiMix` (λ is drawn per position).
        attention: "none" (uniform), "pooled" (similarity of each position to the pooled embedding,
            softmax over positions) or "cam" (ReLU class activation of the true class, ℓ1-normalised;
            needs a classifier with a ``weight`` of shape (K, d)). No gradient flows into it.
        teacher, distill_weight, temperature: self-distilled targets, as :class:`MultiMix`.
        chunk_size: generated rows per interpolation chunk (None: automatic), bounding memory.
        linear_shortcut: when ``classifier`` is a plain ``nn.Linear`` g, classify the b·r clean
            positions and mix the logits: g(Σ_i w_i z_i) = Σ_i w_i g(z_i) exactly (the weights sum to 1
            at every position), at b·r·d·K + n·m·r·K cost instead of n·r·(m·d + d·K).
        num_classes, generator: as the other mixers.

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
        alpha: float = 1.0,
        attention: str = "none",
        p: float = 1.0,
        teacher: nn.Module | None = None,
        distill_weight: float = 1.0,
        temperature: float = 1.0,
        chunk_size: int | None = None,
        linear_shortcut: bool = True,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, n=n, m=m, alpha=alpha, p=p, teacher=teacher, distill_weight=distill_weight,
                         temperature=temperature, num_classes=num_classes, generator=generator)
        self.linear_shortcut = bool(linear_shortcut)
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
            raise ValueError(f"attention='cam' needs a classifier with a (K, d) weight; {classifier!r} has none")
        self._result: tuple[Tensor, Tensor] | None = None
        self._handles.append(feature_module.register_forward_hook(self._mix_features))

    def _mix_features(self, module: nn.Module, args: tuple, z: object) -> None:
        if self._armed is None:
            return None
        targets, probs = self._take()
        if not isinstance(z, Tensor) or z.dim() < 3:
            raise ValueError(
                f"the output of {self.features!r} must be a spatial embedding (b, d, *spatial), "
                f"got {tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}"
            )
        b, d = z.shape[:2]
        zr = z.flatten(2).transpose(1, 2)  # (b, r, d)
        r = zr.shape[1]
        if self.attention == "pooled":
            att = pooled_attention(z).reshape(b, r)
        elif self.attention == "cam":
            att = cam_attention(z, self._classifier_ref[0].weight, targets).reshape(b, r)
        else:
            att = None
        members, weights = dense_multimix_weights(
            b, r, n=self.n, m=self._tuple_length(b), alpha=self.alpha, attention=att, generator=self.generator,
            device=z.device,
        )
        classifier = self._classifier_ref[0]
        if self.linear_shortcut and type(classifier) is nn.Linear:
            per_position = classifier(zr.reshape(b * r, d)).reshape(b, r, -1)  # (b, r, K)
            logits = dense_interpolate(members, weights, per_position, chunk_size=self.chunk_size).reshape(-1, per_position.shape[2])
        else:
            mixed = dense_interpolate(members, weights, zr, chunk_size=self.chunk_size)  # (n, r, d)
            logits = classifier(mixed.reshape(-1, d))
        with _no_autocast(targets.device):
            mixed_targets = dense_interpolate(members, weights, targets, chunk_size=self.chunk_size)
            mixed_probs = None if probs is None else dense_interpolate(members, weights, probs, chunk_size=self.chunk_size)
        k = targets.shape[1]
        self._result = (logits, self._add_distilled(mixed_targets, mixed_probs).reshape(-1, k))
        return None

    def _mix_forward(self, x: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        probs = self._teacher_probs(x)
        if self._skip_batch(x):
            return self.model(x), self._add_distilled(targets, probs)
        try:
            self._run_armed(x, (targets, probs), self.features)
            result = self._result
        finally:
            self._result = None
        return result

    def extra_repr(self) -> str:
        return (
            f"features={self.features!r}, classifier={self.classifier!r}, n={self.n}, m={self.m}, "
            f"alpha={self.alpha}, attention={self.attention!r}, p={self.p}"
        )
