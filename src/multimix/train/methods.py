"""The method registry: one entry per training method, and the mixer it builds.

Everything the training package knows about a method is in its :class:`Method` entry — what it
builds, which options apply to it, its default α, and the behaviours the rest of the package asks
about (a feature layer, parameters left without gradient under DDP, an ERM warm-up, global scope
under torchrun, a teacher). Configuration checks (:meth:`TrainConfig.validate
<multimix.train.config.TrainConfig.validate>`), the pre-run checks (:mod:`.preflight`), the trainer
and ``multimix train --help`` all read it, so a method is added in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from multimix.functional import multimix_alpha
from multimix.mixers import (
    ConfMix,
    CutMix,
    DenseMultiMix,
    ManifoldMixup,
    Mixer,
    Mixup,
    MixupOrCutMix,
    MultiMix,
    OneOf,
)
from multimix.teacher import EMATeacher
from multimix.train.errors import ConfigError

if TYPE_CHECKING:
    from multimix.train.config import TrainConfig


@dataclass(frozen=True)
class BuildContext:
    """What a method's builder aims its mixer with.

    Attributes:
        config: the run's configuration.
        model: the bare model: it names the layers (``classifier_layer``, ``manifold_layers``, ...).
        call: what the mixer calls: the model, or it in DDP and/or compiled (the names are the same).
        num_classes: K.
        generator: the mixing draws' generator (None: torch's global one).
        teacher: the EMA teacher of self-distillation, or None.
    """

    config: TrainConfig
    model: nn.Module
    call: nn.Module
    num_classes: int
    generator: torch.Generator | None
    teacher: EMATeacher | None


#: A method's builder, which returns its mixer (or None for ERM).
Builder = Callable[[BuildContext], "Mixer | None"]

#: Options of the MultiMix methods (both share them).
_MULTIMIX_OPTIONS = (
    "alpha",
    "alpha_range",
    "input_mixup_prob",
    "input_mixup_alpha",
    "mix_rows",
    "tuple_size",
    "mix_prob",
    "mix_scope",
    "teacher_momentum",
    "distill_weight",
    "temperature",
)


@dataclass(frozen=True)
class Method:
    """What one training method is, for the trainer and its checks.

    Attributes:
        name: the method's name (``--method``).
        summary: one line for ``--help``.
        build: makes the mixer (see :data:`Builder`).
        options: the :class:`~multimix.train.config.TrainConfig` keys that change what it does.
        default_alpha: α when ``--alpha`` is not given; None where the mixer chooses (MultiMix: by
            tuple length) or where the method has no α.
        has_alpha: it mixes with a Beta/Dirichlet α, so an α schedule applies.
        teacher: it can learn from an EMA teacher's self-distilled targets.
        global_scope: under torchrun it can mix the whole global batch (``mix_scope="global"``).
        unused_parameters: some parameters get no gradient in a step (Dense MultiMix classifies the
            feature positions: what follows them is not used), which DDP must be told.
        warmup_key: the option holding the number of ERM epochs before mixing starts, if any.
        alpha_by_tuple: without ``--alpha``, α follows the tuple length (1 for pairs, 1/m beyond).
        default_layers: for methods that mix at ``--layers``, the layers used when none are given.
    """

    name: str
    summary: str
    build: Builder
    options: tuple[str, ...] = ()
    default_alpha: float | None = None
    has_alpha: bool = True
    teacher: bool = False
    global_scope: bool = False
    unused_parameters: bool = False
    warmup_key: str | None = None
    alpha_by_tuple: bool = False
    default_layers: Callable[[nn.Module], list[str]] | None = None

    def alpha(self, config: TrainConfig) -> float | None:
        """The α given, or the method's default (None: the mixer's own choice, or no α)."""
        return config.alpha if config.alpha is not None else self.default_alpha

    def values_used(self, config: TrainConfig, model: nn.Module, *, rows: int) -> dict[str, Any]:
        """The options whose default the method resolves, as this run uses them: α (None where the
        method has none) and the layers mixed at. ``rows``: the batch one mixing draw covers."""
        values: dict[str, Any] = {"alpha": self.alpha(config)}
        if config.alpha_range is not None:  # one α per member, drawn in the range every batch
            values["alpha"] = None
        elif self.alpha_by_tuple and values["alpha"] is None:
            # the tuple length drawn: m, or the whole batch (a batch shorter than m mixes all of it)
            values["alpha"] = multimix_alpha(
                rows if config.tuple_size is None else min(config.tuple_size, rows)
            )
        if self.default_layers is not None:
            values["layers"] = self.layers(config, model)
        return values

    def layers(self, config: TrainConfig, model: nn.Module) -> list[str]:
        """The layers it mixes at: ``--layers``, or the method's default for ``model``."""
        if self.default_layers is None:
            raise ValueError(f"method {self.name!r} takes no layers")
        return list(config.layers or self.default_layers(model))

    def mixes_at(self, config: TrainConfig, epoch: int) -> bool:
        """Whether epoch ``epoch`` (1-based) mixes, or is part of an ERM warm-up."""
        return self.warmup_key is None or epoch > getattr(config, self.warmup_key)


def _erm(c: BuildContext) -> Mixer | None:
    return None


def _pairwise_alpha(name: str, config: TrainConfig) -> float:
    alpha = METHODS[name].alpha(config)
    assert alpha is not None  # every pairwise method has a default α in the registry
    return alpha


def _mixup(c: BuildContext) -> Mixer:
    return Mixup(
        c.call,
        alpha=_pairwise_alpha("mixup", c.config),
        per_sample=c.config.per_sample,
        num_classes=c.num_classes,
        generator=c.generator,
    )


def _manifold(c: BuildContext) -> Mixer:
    return ManifoldMixup(
        c.call,
        layers=METHODS["manifold"].layers(c.config, c.model),
        alpha=_pairwise_alpha("manifold", c.config),
        per_sample=c.config.per_sample,
        num_classes=c.num_classes,
        generator=c.generator,
    )


def _cutmix(c: BuildContext) -> Mixer:
    return CutMix(
        c.call,
        alpha=_pairwise_alpha("cutmix", c.config),
        per_sample=c.config.per_sample,
        num_classes=c.num_classes,
        generator=c.generator,
    )


def _mixup_cutmix(c: BuildContext) -> Mixer:
    return MixupOrCutMix(
        c.call,
        mixup_alpha=_pairwise_alpha("mixup-cutmix", c.config),
        cutmix_alpha=c.config.cutmix_alpha,
        switch_prob=c.config.switch_prob,
        per_sample=c.config.per_sample,
        num_classes=c.num_classes,
        generator=c.generator,
    )


def _confmix(c: BuildContext) -> Mixer:
    return ConfMix(
        c.call,
        layers=METHODS["confmix"].layers(c.config, c.model),
        scale=c.config.confmix_scale,
        num_classes=c.num_classes,
        generator=c.generator,
    )


def _multimix_args(c: BuildContext) -> dict[str, Any]:
    """What MultiMix and Dense MultiMix share."""
    config = c.config
    return dict(
        n=config.mix_rows,
        m=config.tuple_size,
        alpha=config.alpha if config.alpha_range is None else tuple(config.alpha_range),
        p=config.mix_prob,
        scope=config.mix_scope,
        teacher=c.teacher,
        distill_weight=config.distill_weight,
        temperature=config.temperature,
        num_classes=c.num_classes,
        generator=c.generator,
    )


def _multimix(c: BuildContext) -> Mixer:
    return MultiMix(
        c.call,
        classifier=_declared(c.model, "classifier_layer"),
        keep_clean=c.config.keep_clean,
        **_multimix_args(c),
    )


def _dense_multimix(c: BuildContext) -> Mixer:
    features = _declared(c.model, "feature_layer")
    if features is None:
        raise ConfigError(
            f"dense-multimix needs a model with a spatial embedding; {c.config.model_name} has none "
            "(use cnn1d, preactresnet8, preactresnet18 or vit)"
        )
    return DenseMultiMix(
        c.call,
        features=features,
        classifier=_declared(c.model, "classifier_layer"),
        attention=c.config.attention,
        layout=_declared(c.model, "feature_layout"),
        prefix_tokens=_declared(c.model, "feature_prefix_tokens") or 0,
        **_multimix_args(c),
    )


def _declared(model: nn.Module, attribute: str) -> Any:
    """What a model class declares for the trainer (:mod:`multimix.models`: ``classifier_layer``,
    ``feature_layer``, ``feature_layout``, ``feature_prefix_tokens``, ``manifold_layers``); None if absent."""
    return getattr(model, attribute, None)


def _model_layers(model: nn.Module) -> list[str]:
    """A model's default manifold-mixup layers (its ``manifold_layers``)."""
    return list(_declared(model, "manifold_layers"))


_PAIRWISE = ("alpha", "per_sample")

#: Every method, by name, in the order ``--help`` lists them.
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "erm", "empirical risk minimisation: no mixing (the baseline)", _erm, has_alpha=False
        ),
        Method(
            "mixup",
            "input mixup: pairs of inputs and targets, λ ~ Beta(α, α)",
            _mixup,
            _PAIRWISE,
            default_alpha=1.0,
        ),
        Method(
            "manifold",
            "manifold mixup: pairs mixed at a layer drawn from --layers",
            _manifold,
            (*_PAIRWISE, "layers", "input_mixup_prob", "input_mixup_alpha"),
            default_alpha=2.0,
            default_layers=_model_layers,
        ),
        Method(
            "multimix",
            "MultiMix: n interpolations of m-tuples of the batch at the classifier's input",
            _multimix,
            (*_MULTIMIX_OPTIONS, "keep_clean"),
            teacher=True,
            global_scope=True,
            alpha_by_tuple=True,
        ),
        Method(
            "dense-multimix",
            "Dense MultiMix: MultiMix per position of the spatial embedding",
            _dense_multimix,
            (*_MULTIMIX_OPTIONS, "attention"),
            teacher=True,
            global_scope=True,
            unused_parameters=True,
            alpha_by_tuple=True,
        ),
        Method(
            "confmix",
            "ConfMix: pairwise mixup with a per-example α from the model's confidence",
            _confmix,
            ("layers", "confmix_scale", "confmix_warmup"),
            has_alpha=False,
            warmup_key="confmix_warmup",
            default_layers=lambda model: ["input"],
        ),
        Method(
            "cutmix",
            "CutMix: a box of the partner pasted (a segment for 1-D inputs)",
            _cutmix,
            _PAIRWISE,
            default_alpha=1.0,
        ),
        Method(
            "mixup-cutmix",
            "timm's switch: CutMix with probability --switch-prob, else input mixup",
            _mixup_cutmix,
            (*_PAIRWISE, "cutmix_alpha", "switch_prob"),
            default_alpha=1.0,
        ),
    )
}


def get_method(name: str) -> Method:
    """The registry entry of ``name``; ConfigError listing the valid names otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}") from None


def methods_with(option: str) -> list[str]:
    """The methods ``option`` applies to (empty: it applies to every method)."""
    return [m.name for m in METHODS.values() if option in m.options]


def build_mixer(
    config: TrainConfig,
    model: nn.Module,
    num_classes: int,
    generator: torch.Generator | None,
    teacher: EMATeacher | None = None,
    *,
    wrapped: nn.Module | None = None,
) -> Mixer | None:
    """The mixer for ``config.method`` (None for ERM), aimed at the model's named layers.

    ``wrapped``: what the mixer calls, when not ``model`` itself: ``model`` in
    ``DistributedDataParallel`` and/or compiled (it keeps the layer names; ``model`` says which they are).
    """
    context = BuildContext(
        config, model, model if wrapped is None else wrapped, num_classes, generator, teacher
    )
    mixer = get_method(config.method).build(context)
    if mixer is None or config.input_mixup_prob == 0:
        return mixer
    # A coin per batch: input mixup with probability p, else the method (the papers' protocol)
    p = config.input_mixup_prob
    coin = Mixup(
        context.call, alpha=config.input_mixup_alpha, num_classes=num_classes, generator=generator
    )
    return OneOf([coin, mixer], probs=[p, 1.0 - p], generator=generator)


__all__ = [
    "Method",
    "BuildContext",
    "Builder",
    "METHODS",
    "get_method",
    "methods_with",
    "build_mixer",
]
