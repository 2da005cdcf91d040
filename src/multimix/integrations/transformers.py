"""The 🤗 ``Trainer`` with mixing: :class:`MixupTrainer`, trained on a multimix mixer's logits and targets.

``MixupTrainer(model=model, args=args, ..., mixer=mixer)`` is a ``transformers.Trainer`` whose training
loss is :func:`multimix.soft_cross_entropy` (or :func:`multimix.soft_binary_cross_entropy` for a mixer
built with ``multi_label=True``) of what ``mixer(batch)`` returns; evaluation and prediction are the
Trainer's own, unmixed. Guide: ``docs/how-to/hf-trainer.md``.

Needs 🤗 transformers and accelerate: ``pip install "multimix[transformers]"``.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, cast

from torch import Tensor, nn

try:
    importlib.import_module("accelerate")  # the Trainer needs it; imported here to fail early
    from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState
    from transformers import TrainingArguments as _TrainingArguments
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "multimix.integrations.transformers needs 🤗 transformers and accelerate, which are not "
        f'installed ({exc}); install them with: pip install "multimix[transformers]"'
    ) from exc

from multimix.functional import one_hot, soft_binary_cross_entropy, soft_cross_entropy
from multimix.mixers import Mixer
from multimix.mixers.base import unwrapped
from multimix.train import checkpoint

__all__ = ["MixupTrainer", "MIXER_FILE", "MIXER_RNG_FILE"]

logger = logging.getLogger(__name__)

#: The file of a checkpoint folder holding the mixer's weights (an EMA teacher's), when it has any.
MIXER_FILE = "mixer.pt"
#: The file holding the state of the mixer's random generators (``mixer_rng_state_<rank>.pt`` with
#: several processes: each process draws its own).
MIXER_RNG_FILE = "mixer_rng_state.pt"
_MULTI_LABEL = "multi_label_classification"


class _UpdateTeacher(TrainerCallback):
    """Moves the mixer's EMA teacher one step towards the model after each optimizer step."""

    def __init__(self, update: Callable[[], object]) -> None:
        self.update = update

    def on_optimizer_step(
        self,
        args: _TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        self.update()


def _check_mixer(mixer: object, model: object) -> Mixer:
    """``mixer``, after checking that it is a multimix mixer built on ``model`` (the Trainer's)."""
    if not isinstance(mixer, Mixer):
        raise TypeError(
            "mixer must be a multimix mixer (a multimix.Mixer: MultiMix, DenseMultiMix, Mixup, "
            "ManifoldMixup, ConfMix, CutMix, MixupOrCutMix, OneOf) built on the model the Trainer "
            f"trains, got {type(mixer).__name__}"
        )
    if model is None:
        raise ValueError(
            "MixupTrainer needs model=: the mixer's hooks are on that model's layers (model_init, "
            "which builds a new model at train(), is not supported)"
        )
    if not isinstance(model, nn.Module) or unwrapped(mixer.model) is not unwrapped(model):
        raise ValueError(
            f"mixer= was built on a {type(unwrapped(mixer.model)).__name__} that is not the model "
            f"given as model= ({type(model).__name__}): build the mixer on the model the Trainer "
            "trains, e.g. MultiMix(model, classifier='classifier', num_classes=K)"
        )
    _check_problem_type(mixer, model)
    return mixer


def _check_problem_type(mixer: Mixer, model: nn.Module) -> None:
    """The mixer and the model's ``config.problem_type`` agree on single- or multi-label: the training
    loss is the mixer's, the evaluation loss the model's own."""
    problem = getattr(getattr(unwrapped(model), "config", None), "problem_type", None)
    if mixer.multi_label and problem not in (None, _MULTI_LABEL):
        raise ValueError(
            f"mixer= was built with multi_label=True, but the model's config.problem_type is "
            f"{problem!r}: give the model problem_type={_MULTI_LABEL!r} so that evaluation computes "
            "the same (binary cross-entropy) loss as training"
        )
    if not mixer.multi_label and problem == _MULTI_LABEL:
        raise ValueError(
            f"the model's config.problem_type is {_MULTI_LABEL!r} but mixer= was built without "
            "multi_label=True: build the mixer with multi_label=True (binary cross-entropy per class)"
        )


class MixupTrainer(Trainer):
    """A ``transformers.Trainer`` that trains on a multimix mixer's mixed logits and targets.

    Each training step runs ``mixer(batch)`` on the model the Trainer passes to ``compute_loss`` —
    the ``DistributedDataParallel`` wrapper under ``torchrun``, so gradients are averaged across
    processes — and returns ``soft_cross_entropy(logits, targets)`` (``soft_binary_cross_entropy``
    when the mixer has ``multi_label=True``), a mean over the mixed rows (and classes) of one batch;
    the Trainer divides it by the gradient accumulation steps. The batch's labels (the Trainer's
    ``label_names``, ``labels`` for 🤗 classification models) are the targets: integer labels (b,)
    or (b, K) multi-hot/soft targets; they are not passed to the model. ``args.label_smoothing_factor``
    ε smooths single-label targets as ``(1 − ε)·onehot + ε/K`` before mixing, as the Trainer's
    evaluation loss does.

    Evaluation and prediction are unmixed: the Trainer's own ``compute_loss`` (the model's loss from
    its labels) whenever the model is in eval mode. A multi-label model needs
    ``config.problem_type="multi_label_classification"`` (or None and float labels) so that its own
    loss is the binary one.

    An EMA teacher of the mixer (``mixer.teacher`` with an ``update()`` method) is updated after each
    optimizer step and moved to ``args.device``. Each checkpoint also holds the mixer's state:
    :data:`MIXER_FILE` (a teacher's weights; written by the saving process) and
    :data:`MIXER_RNG_FILE` (its generators' states; one per process), read back by
    ``train(resume_from_checkpoint=...)``, so that a seeded mixer resumes its draws exactly.

    Args:
        model: the model to train (required: ``model_init``, which builds a new model at ``train()``,
            is refused). The Trainer's other arguments (``args``, datasets, ``data_collator``,
            callbacks, ...) are passed on as they are; ``compute_loss_func`` is refused: the loss is
            the mixer's.
        mixer: a multimix mixer built on ``model`` (keyword-only), e.g.
            ``MultiMix(model, classifier="classifier", num_classes=K)``.

    Raises:
        TypeError: ``mixer`` is not a multimix mixer.
        ValueError: ``mixer`` was built on another model, ``model`` is missing, the mixer and
            ``config.problem_type`` disagree on multi-label, or ``compute_loss_func`` was given.
    """

    # compute_loss returns the mean over one batch: the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, model: nn.Module | None = None, *args: Any, mixer: Mixer, **kwargs: Any):
        # Checked before the Trainer sets anything up: a wrong mixer fails before any training.
        self.mixer = _check_mixer(mixer, model)
        for name in ("model_init", "compute_loss_func"):
            if kwargs.get(name) is not None:
                raise ValueError(
                    f"MixupTrainer does not take {name}=: the mixer is built on model= and the "
                    "training loss is the mixer's (soft cross-entropy of the mixed targets)"
                )
        super().__init__(model, *args, **kwargs)
        teacher = getattr(mixer, "teacher", None)
        if isinstance(teacher, nn.Module):
            if self.place_model_on_device:
                teacher.to(self.args.device)
            update = getattr(teacher, "update", None)
            if callable(update):  # an EMATeacher; a fixed teacher has nothing to update
                self.add_callback(_UpdateTeacher(update))

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        """The loss of one batch: mixed in training, the Trainer's own (unmixed) in eval mode.

        In training, ``soft_cross_entropy(logits, targets)`` of ``mixer(inputs)`` run on ``model``
        (what the Trainer passes: the DDP wrapper under torchrun), a scalar mean over the mixed rows;
        ``num_items_in_batch`` (the Trainer's token count) is not used. With ``return_outputs``, the
        outputs are ``{"logits": (rows, K)}``.
        """
        if not model.training:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        batch, labels = self._split_labels(inputs)
        if self.mixer.model is not model:
            self.mixer.model = model  # the wrapper runs the forward; the hooks stay on its layers
        logits, targets = self.mixer(batch, self._targets(labels))
        assert targets is not None  # in training the mixer always returns targets
        loss_fn = soft_binary_cross_entropy if self.mixer.multi_label else soft_cross_entropy
        loss = loss_fn(logits, targets)
        return (loss, {"logits": logits}) if return_outputs else loss

    def _split_labels(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], Tensor]:
        """The model's inputs and the labels: the batch entry named by the Trainer's ``label_names``."""
        names = list(self.label_names)
        if len(names) != 1 or names[0] not in inputs:
            raise ValueError(
                f"MixupTrainer trains on one label entry per batch, the Trainer's label_names={names}, "
                f"but the batch has the keys {sorted(inputs)}: give the labels as 'labels' (or set "
                "TrainingArguments(label_names=[<the key>]))"
            )
        return {k: v for k, v in inputs.items() if k != names[0]}, inputs[names[0]]

    def _targets(self, labels: Tensor) -> Tensor:
        """The labels, smoothed by ``args.label_smoothing_factor`` when set (integer labels only)."""
        eps = self.args.label_smoothing_factor
        if eps == 0 or self.mixer.multi_label or labels.is_floating_point() or labels.dim() != 1:
            return labels
        num_classes = self.mixer.num_classes or getattr(
            getattr(self.model, "config", None), "num_labels", None
        )
        return one_hot(labels, num_classes, smoothing=eps)

    # -- checkpoints: the mixer's state beside the Trainer's --------------------------------

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """``Trainer.train``; resuming also restores the mixer's state saved with the checkpoint."""
        if resume_from_checkpoint is True:
            # untyped in transformers: returns the newest checkpoint-<step> folder, or None
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)  # type: ignore[no-untyped-call]
            if resume_from_checkpoint is None:
                raise ValueError(f"no checkpoint found in output_dir {self.args.output_dir}")
        if isinstance(resume_from_checkpoint, str):
            self._load_mixer(resume_from_checkpoint)
        return super().train(resume_from_checkpoint or None, *args, **kwargs)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        folder = os.path.join(
            self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        )
        state = self.mixer.state_dict()
        random_state = state.pop("_extra_state", None)
        os.makedirs(folder, exist_ok=True)
        checkpoint.save(os.path.join(folder, self._rng_file()), {"random": random_state})
        if state and self.args.should_save:
            checkpoint.save(os.path.join(folder, MIXER_FILE), {"mixer": dict(state)})

    def _rng_file(self) -> str:
        if self.args.world_size <= 1:
            return MIXER_RNG_FILE
        stem, ext = os.path.splitext(MIXER_RNG_FILE)
        return f"{stem}_{self.args.process_index}{ext}"

    def _load_mixer(self, folder: str) -> None:
        """Load the mixer's state saved in checkpoint ``folder``; what is missing is logged, not loaded."""
        state: dict[str, Any] = {}
        weights, rng = os.path.join(folder, MIXER_FILE), os.path.join(folder, self._rng_file())
        if os.path.isfile(weights):
            state.update(cast(dict[str, Any], checkpoint.load(weights)["mixer"]))
        if os.path.isfile(rng):
            state["_extra_state"] = checkpoint.load(rng)["random"]
        missing = [k for k in self.mixer.state_dict() if k not in state]
        if missing:
            logger.warning(
                "checkpoint %s holds no %s of the mixer (saved by a plain Trainer, or with another "
                "number of processes): the mixer resumes without it, so its draws or teacher differ "
                "from an uninterrupted run",
                folder,
                ", ".join(missing),
            )
        self.mixer.load_state_dict(state, strict=not missing)
