"""How mixers meet the conventions of real models (🤗 transformers, timm) without a wrapper.

- Inputs: a tensor, or a mapping of tensors (``input_ids``, ``attention_mask``, ``pixel_values``, ...)
  passed as keyword arguments, ``model(**batch)``; the batch size is that of its tensors.
- Outputs: a tensor, a 🤗 ``ModelOutput`` or any mapping or object with ``logits``, or a tuple whose
  first element is the logits: mixers always hand back the logits tensor.
- Hooked layers that return a tuple (🤗 encoder layers before transformers 5) have their first
  tensor mixed; the rest passes through.
- A mapping's ``labels`` (a 🤗 data collator's batch) are the targets, not an input: the model would
  compute its own loss with them (:func:`split_labels`).
- Input-level mixing (mixup, CutMix) of a mapping mixes its one floating-point tensor (e.g.
  ``pixel_values``); token ids cannot be interpolated, so for text, mix at an embedding layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from multimix._validation import check_tensor

#: What a mixer accepts as a model's input.
Inputs = Tensor | Mapping[str, Tensor]


def check_inputs(x: object, name: str = "x") -> None:
    """``x`` is a non-empty batch-first tensor, or a non-empty mapping of tensors sharing their batch size."""
    if isinstance(x, Mapping):
        if not x:
            raise ValueError(
                f"{name} is an empty mapping; expected tensors such as input_ids or pixel_values"
            )
        sizes = {}
        for key, value in x.items():
            if not isinstance(value, Tensor):
                raise TypeError(
                    f"{name}[{key!r}] must be a torch.Tensor, got {type(value).__name__}"
                )
            check_tensor(value, f"{name}[{key!r}]")
            sizes[key] = value.shape[0]
        if len(set(sizes.values())) > 1:
            raise ValueError(f"the tensors of {name} must share their batch size, got {sizes}")
        return
    check_tensor(x, name)


#: The key of the labels in a 🤗 data collator's batch (also the keyword of the models' own loss).
LABELS = "labels"


def split_labels(x: Inputs) -> tuple[Inputs, Tensor | None]:
    """``(inputs, labels)``: a mapping without its ``labels`` entry, and that entry (None when absent).

    A 🤗 data collator puts the labels in the batch, and a 🤗 model given ``labels=`` computes its own
    loss with them, which fails when a mixer's logits have more rows than the batch. A tensor ``x`` is
    returned as it is, with None.
    """
    if not isinstance(x, Mapping) or LABELS not in x:
        return x, None
    inputs = {k: v for k, v in x.items() if k != LABELS}
    if not inputs:
        raise ValueError(
            f"x holds only {LABELS!r}; expected the model's inputs too, such as input_ids or pixel_values"
        )
    return inputs, x[LABELS]


def batch_size(x: Inputs) -> int:
    """b: the first dimension of x, or of the first tensor of a mapping."""
    return next(iter(x.values())).shape[0] if isinstance(x, Mapping) else x.shape[0]


def batch_device(x: Inputs) -> torch.device:
    """The device of x, or of the first tensor of a mapping."""
    return next(iter(x.values())).device if isinstance(x, Mapping) else x.device


def logits_of(output: Any) -> Tensor:
    """The logits in whatever a model returned (tensor, ModelOutput/mapping/object with logits, tuple)."""
    if isinstance(output, Tensor):
        return output
    logits = (
        output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    )
    if logits is None and isinstance(output, (tuple, list)) and output:
        logits = output[0]
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"the model returned {type(output).__name__}; expected a Tensor of logits, an output with "
            "a `logits` field (a 🤗 ModelOutput), or a tuple whose first element is the logits"
        )
    return logits


def call_model(model: nn.Module, x: Inputs) -> Tensor:
    """``model(x)`` or ``model(**x)``, reduced to its logits."""
    return logits_of(model(**x) if isinstance(x, Mapping) else model(x))


def input_tensor(x: Inputs) -> Tensor:
    """The tensor input-level mixing applies to: ``x`` itself, or the mapping's one floating-point tensor."""
    if not isinstance(x, Mapping):
        return x
    floating = [k for k, v in x.items() if v.is_floating_point()]
    if len(floating) != 1:
        raise ValueError(
            f"input mixing of a dict of inputs needs exactly one floating-point tensor to mix (such as pixel_values), "
            f"got {floating or 'none'} among {list(x)}; for token ids, mix at an embedding layer instead, "
            "e.g. ManifoldMixup(model, layers=['bert.embeddings'])"
        )
    return x[floating[0]]


def replace_input(x: Inputs, mixed: Tensor) -> Inputs:
    """``x`` with its :func:`input_tensor` replaced by ``mixed`` (other entries shared, not copied)."""
    if not isinstance(x, Mapping):
        return mixed
    key = next(k for k, v in x.items() if v is input_tensor(x))
    return {**x, key: mixed}


def map_first(output: Any, fn: Callable[[Tensor], Tensor], layer: str) -> Any:
    """``fn`` applied to a layer's output tensor, or to the first element of a tuple output."""
    if isinstance(output, Tensor):
        return fn(output)
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return (fn(output[0]), *output[1:])
    raise TypeError(
        f"layer {layer!r} returned {type(output).__name__}; only a Tensor, or a tuple whose first "
        "element is a Tensor, can be mixed"
    )


def first_tensor(output: Any) -> Any:
    """A layer's output tensor, or the first element of a tuple output (anything else unchanged)."""
    return (
        output[0]
        if isinstance(output, tuple) and output and isinstance(output[0], Tensor)
        else output
    )


__all__ = [
    "Inputs",
    "check_inputs",
    "split_labels",
    "batch_size",
    "batch_device",
    "logits_of",
    "call_model",
    "input_tensor",
    "replace_input",
    "map_first",
    "first_tensor",
]
