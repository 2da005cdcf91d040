"""From a :class:`TrainConfig`'s method to the mixer that implements it, aimed at a model's named layers."""

from __future__ import annotations

import torch
from torch import nn

from multimix.mixers import ConfMix, CutMix, DenseMultiMix, ManifoldMixup, Mixup, MixupOrCutMix, MultiMix
from multimix.teacher import EMATeacher
from multimix.train.config import ConfigError, TrainConfig


def build_mixer(
    config: TrainConfig,
    model: nn.Module,
    num_classes: int,
    generator: torch.Generator | None,
    teacher: EMATeacher | None = None,
    *,
    wrapped: nn.Module | None = None,
) -> nn.Module | None:
    """The mixer for ``config.method`` (None for ERM), aimed at the model's named layers.

    ``wrapped``: what the mixer calls, when not ``model`` itself: ``model`` in
    ``DistributedDataParallel`` and/or compiled (it keeps the layer names; ``model`` says which they are).
    """
    spec, model = model, model if wrapped is None else wrapped
    common = dict(num_classes=num_classes, generator=generator)
    distill = dict(teacher=teacher, distill_weight=config.distill_weight, temperature=config.temperature)
    if config.method == "erm":
        return None
    if config.method == "mixup":
        return Mixup(model, alpha=config.method_alpha, per_sample=config.per_sample, **common)
    if config.method == "manifold":
        layers = config.layers or spec.manifold_layers
        return ManifoldMixup(model, layers=layers, alpha=config.method_alpha, per_sample=config.per_sample, **common)
    if config.method == "cutmix":
        return CutMix(model, alpha=config.method_alpha, per_sample=config.per_sample, **common)
    if config.method == "mixup-cutmix":
        return MixupOrCutMix(model, mixup_alpha=config.method_alpha, cutmix_alpha=config.cutmix_alpha,
                             switch_prob=config.switch_prob, per_sample=config.per_sample, **common)
    if config.method == "confmix":
        return ConfMix(model, layers=config.layers or ["input"], scale=config.confmix_scale, **common)
    if config.method in ("multimix", "dense-multimix"):
        shared = dict(n=config.n, m=config.m, alpha=config.method_alpha, p=config.p, **distill, **common)
        if config.method == "multimix":
            return MultiMix(model, before=spec.classifier_layer, keep_clean=config.keep_clean, scope=config.mix_scope,
                            **shared)
        if spec.feature_layer is None:
            raise ConfigError(f"dense-multimix needs a model with a spatial embedding; {config.model_name} has none "
                              "(use cnn1d, preactresnet8, preactresnet18 or vit)")
        return DenseMultiMix(model, features=spec.feature_layer, classifier=spec.classifier_layer,
                             attention=config.attention, layout=spec.feature_layout,
                             prefix_tokens=getattr(spec, "feature_prefix_tokens", 0), scope=config.mix_scope, **shared)
    raise ConfigError(f"unknown method {config.method!r}")


__all__ = ["build_mixer"]
