"""The training configuration: one dataclass is the single source of truth.

Its fields are the CLI flags (``batch_size`` ↔ ``--batch-size``) and the keys of a ``--config`` YAML
file (either spelling). Values are parsed and checked here, so a YAML file and the command line get
the same errors: unknown keys and invalid values are rejected with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from multimix.data import DATASETS
from multimix.mixers import ATTENTIONS
from multimix.mixers import SCOPES as MIX_SCOPES
from multimix.models import DEFAULT_MODEL, MODELS
from multimix.schedules import SCHEDULES
from multimix.train.errors import ConfigError
from multimix.train.methods import METHODS as METHOD_REGISTRY
from multimix.train.methods import get_method
from multimix.train.recipes import NAMED_RECIPES, RECIPE_KEYS, recipe_for

OPTIMIZERS = ("adam", "sgd")
SCHEDULERS = ("cosine", "step", "none")
AMP = ("none", "bf16", "fp16")
TEST_EVERY = ("epoch", "improvement", "end")
#: The method names, in the registry's order (:data:`multimix.train.methods.METHODS`).
METHODS = tuple(METHOD_REGISTRY)
#: Methods that can mix over the global batch under torchrun (``mix_scope="global"``).
GLOBAL_SCOPE_METHODS = tuple(m.name for m in METHOD_REGISTRY.values() if m.global_scope)
#: α used when a method's α is not given (the registry's ``default_alpha``): Zhang et al. (mixup),
#: Verma et al. (manifold). MultiMix and Dense MultiMix choose their own: 1 for pairs, 1/m for longer tuples.
DEFAULT_ALPHA = {
    m.name: m.default_alpha for m in METHOD_REGISTRY.values() if m.default_alpha is not None
}

#: Teacher momentum suggested when self-distillation is wanted (``--teacher-momentum``); chosen by ablation.
DEFAULT_TEACHER_MOMENTUM = 0.99

#: The largest finite float32: float options beyond it overflow in training.
FLOAT32_MAX = 3.4028234663852886e38
#: The largest seed, since every generator a seed reaches (torch, NumPy, scikit-learn) accepts [0, 2**31 - 1].
MAX_SEED = 2**31 - 1

#: Keys renamed for clarity, old name -> new name. The old names are still read (from the CLI, a
#: ``--config`` file, a checkpoint, or ``TrainConfig(...)``) with a DeprecationWarning.
RENAMED_KEYS = {"n": "mix_rows", "m": "tuple_size", "p": "mix_prob"}


def _parse_subset(text: Any) -> int:
    """A training-subset size: an integer, or 'all' (0: the whole training set)."""
    if isinstance(text, str) and text.lower() == "all":
        return 0
    return _parse_int(text)


def _parse_optional_int(text: Any) -> int | None:
    if text is None or (isinstance(text, str) and text.lower() in ("none", "all", "batch")):
        return None
    if isinstance(text, bool):
        raise ValueError(text)
    value = int(text)
    if isinstance(text, float) and text != value:
        raise ValueError(text)
    return value


def _parse_list(text: Any) -> list[str] | None:
    if text is None:
        return None
    if isinstance(text, str):
        return [s.strip() for s in text.split(",") if s.strip()]
    if isinstance(text, (list, tuple)) and all(isinstance(s, str) for s in text):
        return list(text)
    raise ValueError(text)


def _parse_floats(text: Any) -> list[float]:
    """A comma-separated list of numbers ('0.25,0.5'), or a YAML list of them."""
    if isinstance(text, str):
        items: list[Any] = [t.strip() for t in text.split(",")]
    elif isinstance(text, (list, tuple)):
        items = list(text)
    else:
        raise ValueError(text)
    if not items or any(isinstance(t, bool) or t == "" for t in items):
        raise ValueError(text)
    return [float(t) for t in items]


def _parse_bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    if isinstance(text, str) and text.lower() in ("true", "yes", "1", "false", "no", "0"):
        return text.lower() in ("true", "yes", "1")
    raise ValueError(text)


def _parse_int(text: Any) -> int:
    if isinstance(text, bool):
        raise ValueError(text)
    if isinstance(text, float) and not text.is_integer():
        raise ValueError(text)
    return int(text)


def _parse_float(text: Any) -> float:
    if isinstance(text, bool):
        raise ValueError(text)
    return float(text)


#: A field's parser, from a raw value (CLI string, YAML scalar) to the field's type; ValueError if invalid.
Parser = Callable[[Any], Any]


def _opt(parse: Parser) -> Parser:
    """``parse``, or None for None and 'none'."""
    return lambda text: (
        None if text is None or (isinstance(text, str) and text.lower() == "none") else parse(text)
    )


def _str(text: Any) -> str:
    if not isinstance(text, str):
        raise ValueError(text)
    return text


def _field(
    default: Any,
    help: str,
    parse: Parser,
    choices: tuple[str, ...] | None = None,
    group: str = "training",
) -> Any:
    """A TrainConfig field: its default, ``--help`` text, parser, valid values and help group."""
    meta = {"help": help, "parse": parse, "choices": choices, "group": group}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything that defines a training run. See ``multimix train --help``."""

    # what to train
    dataset: str = _field("mnist1d", "dataset", _str, DATASETS, "data")
    model: str | None = _field(
        None, "model (default: the dataset's reference model)", _opt(_str), tuple(MODELS), "data"
    )
    method: str = _field("erm", "training method", _str, METHODS, "method")
    recipe: str | None = _field(
        None,
        "a published protocol, setting what it fixes unless given too: "
        + " | ".join(r.describe() for r in NAMED_RECIPES.values()),
        _opt(_str),
        tuple(NAMED_RECIPES),
    )
    # optimisation
    epochs: int = _field(None, "number of epochs (default: the dataset's recipe)", _parse_int)
    batch_size: int = _field(
        None,
        "training batch size, global under torchrun (default: the dataset's recipe)",
        _parse_int,
    )
    lr: float = _field(
        None,
        "learning rate, peak with the cosine schedule (default: the dataset's recipe)",
        _parse_float,
    )
    optimizer: str = _field(None, "optimizer (default: the dataset's recipe)", _str, OPTIMIZERS)
    weight_decay: float = _field(None, "weight decay (default: the dataset's recipe)", _parse_float)
    momentum: float = _field(0.9, "SGD momentum (0: plain SGD)", _parse_float)
    nesterov: bool = _field(True, "SGD: Nesterov momentum (when momentum > 0)", _parse_bool)
    scheduler: str = _field(
        "cosine",
        "learning-rate schedule over all steps: cosine decay, step (×--lr-decay at each of "
        "--milestones), or none (constant)",
        _str,
        SCHEDULERS,
    )
    milestones: list[float] = _field(  # noqa: RUF009 (_field copies a list default per instance)
        [0.25, 0.5, 0.75],
        "step schedule: where the learning rate is multiplied by --lr-decay, as fractions of the "
        "training (0.25,0.5,0.75: after a quarter, half and three quarters of the steps)",
        _parse_floats,
    )
    lr_decay: float = _field(0.1, "step schedule: the factor at each milestone", _parse_float)
    seed: int = _field(0, "training seed: initialisation, data order, mixing", _parse_int)
    # data
    data_seed: int = _field(
        0, "seed of the validation split (and of toy/spirals data)", _parse_int, group="data"
    )
    val_fraction: float = _field(
        0.1, "fraction of train held out for validation", _parse_float, group="data"
    )
    data_dir: str | None = _field(
        None,
        "folder of the dataset files (CIFAR binaries; IDX files, in it or in <folder>/<dataset>)",
        _opt(_str),
        group="data",
    )
    download: bool = _field(
        False,
        "download the dataset files (MD5-checked) into --data-dir if missing",
        _parse_bool,
        group="data",
    )
    toy_classes: int = _field(3, "toy: number of classes K", _parse_int, group="data")
    toy_components: int = _field(3, "toy: Gaussians per class N", _parse_int, group="data")
    toy_dim: int = _field(2, "toy: input dimension D", _parse_int, group="data")
    train_size: int = _field(
        1000,
        "toy/spirals: training examples (before the validation split)",
        _parse_int,
        group="data",
    )
    train_subset: int | None = _field(
        None,
        "train on a stratified subset of N training examples (before the validation "
        "split; chosen by --data-seed, the test set stays whole); 'all' or 0: the whole "
        "training set (default: the dataset's recipe, which subsets the real-image sets "
        "so that a CPU run takes minutes)",
        _opt(_parse_subset),
        group="data",
    )
    # method options
    alpha: float | None = _field(
        None,
        "mixing strength α (default per method: manifold 2; multimix methods 1 for pairs, 1/m for longer tuples; others 1; mixup-cutmix: mixup's)",
        _opt(_parse_float),
        group="method",
    )
    alpha_range: list[float] | None = _field(  # noqa: RUF009
        None,
        "LOW,HIGH: each batch member's Dirichlet concentration drawn uniformly in [LOW, HIGH] every "
        "batch, in place of one --alpha (the MultiMix paper's protocol: 0.5,2)",
        _opt(_parse_floats),
        group="method",
    )
    input_mixup_prob: float = _field(
        0.0,
        "probability that a batch is mixed by input mixup (α --input-mixup-alpha) instead of the "
        "method: a coin per batch, as the MultiMix and AlignMixup papers train (0: never)",
        _parse_float,
        group="method",
    )
    input_mixup_alpha: float = _field(
        1.0, "α of the input mixup of --input-mixup-prob", _parse_float, group="method"
    )
    per_sample: bool = _field(
        False, "one λ (one box) per pair instead of per batch", _parse_bool, group="method"
    )
    cutmix_alpha: float = _field(
        1.0, "CutMix's α (--alpha is mixup's)", _parse_float, group="method"
    )
    switch_prob: float = _field(
        0.5, "probability that a batch uses CutMix rather than mixup", _parse_float, group="method"
    )
    label_smoothing: float = _field(
        0.0, "targets (1 − ε)·one-hot + ε/K before any mixing", _parse_float, group="method"
    )
    # _field returns dataclasses.field(...), which copies a list default per instance (RUF009 cannot see it).
    layers: list[str] | None = _field(  # noqa: RUF009
        None,
        "comma-separated layer names (default: manifold: the model's; confmix: input)",
        _parse_list,
        group="method",
    )
    mix_rows: int = _field(
        1000, "generated (mixed) examples per batch, n (formerly --n)", _parse_int, group="method"
    )
    tuple_size: int | None = _field(
        2,
        "batch members each generated example mixes, m ('all' for the whole batch; formerly --m)",
        _parse_optional_int,
        group="method",
    )
    mix_prob: float = _field(
        1.0, "probability that a batch is mixed, p (formerly --p)", _parse_float, group="method"
    )
    keep_clean: bool = _field(False, "also train on the clean rows", _parse_bool, group="method")
    alpha_schedule: str = _field(
        "constant",
        "α over epochs: constant (--alpha), or linear/exp from --alpha-start to --alpha-end",
        _str,
        SCHEDULES,
        "method",
    )
    alpha_start: float | None = _field(
        None,
        "α at epoch 0 for linear/exp schedules (0 = no mixing)",
        _opt(_parse_float),
        group="method",
    )
    alpha_end: float | None = _field(
        None,
        "α reached (linear) or approached (exp) for linear/exp schedules",
        _opt(_parse_float),
        group="method",
    )
    half_life: float = _field(
        25.0,
        "exp schedule: epochs for α to close half its remaining gap",
        _parse_float,
        group="method",
    )
    confmix_scale: float = _field(
        1.0, "multiplies the per-example α (0.5 = '½ ConfMix')", _parse_float, group="method"
    )
    confmix_warmup: int = _field(
        5, "epochs of ERM before mixing starts", _parse_int, group="method"
    )
    attention: str = _field("none", "attention over positions", _str, ATTENTIONS, "method")
    mix_scope: str = _field(
        "local",
        "under torchrun: 'local' mixes each process's share of the batch "
        "(n and m per process, the paper's multi-GPU setting); 'global' mixes the whole global "
        "batch (n in total; results do not depend on the number of processes)",
        _str,
        MIX_SCOPES,
        "method",
    )
    teacher_momentum: float | None = _field(
        None,
        "EMA teacher momentum for self-distilled targets (none: no teacher)",
        _opt(_parse_float),
        group="method",
    )
    distill_weight: float = _field(
        1.0, "weight w of the distilled loss (with a teacher)", _parse_float, group="method"
    )
    temperature: float = _field(
        1.0, "temperature of the teacher's softmax", _parse_float, group="method"
    )
    # running
    device: str = _field("cpu", "torch device", _str, group="run")
    threads: int | None = _field(
        None, "CPU threads for torch (default: torch's choice)", _opt(_parse_int), group="run"
    )
    eval_batch_size: int = _field(
        256,
        "evaluation batch size (256 is fastest for the image models on a CPU: at "
        "1000, activations outgrow the caches and evaluation takes twice as long)",
        _parse_int,
        group="run",
    )
    test_every: str = _field(
        "epoch",
        "when to evaluate the test set: every epoch; 'improvement': at epochs whose "
        "validation accuracy is the best so far and at the last; 'end': once after training, "
        "on the weights chosen on validation and on the last ones. All three report the same "
        "best- and final-epoch test figures; the others leave the other epochs' test figures "
        "empty, at a fraction of the cost where the test set is large",
        _str,
        TEST_EVERY,
        "run",
    )
    tensorboard: bool = _field(
        False,
        "write TensorBoard events into <out>/tensorboard (pip install tensorboard)",
        _parse_bool,
        group="run",
    )
    amp: str = _field(
        "none",
        "automatic mixed precision: bf16 (CUDA or CPU) or fp16 (CUDA, with a gradient scaler); "
        "mixing weights and targets stay float32",
        _str,
        AMP,
        "run",
    )
    channels_last: bool = _field(
        False,
        "image models: NHWC memory layout (faster convolutions on recent GPUs)",
        _parse_bool,
        group="run",
    )
    compile: bool = _field(
        False,
        "torch.compile the model (the first steps are slow while it compiles)",
        _parse_bool,
        group="run",
    )
    cuda_graph: bool = _field(
        False,
        "CUDA, one process: capture the training step in CUDA graphs and replay them (one "
        "launch per step instead of hundreds; for small models and batches, whose steps wait on "
        "the host); one graph per host-side choice (manifold's layer, CutMix or mixup, MultiMix's "
        "p) and per α",
        _parse_bool,
        group="run",
    )
    sync_bn: bool = _field(
        False,
        "under torchrun on CUDA: SyncBatchNorm, so that batch-norm statistics are those of "
        "the global batch rather than of each process's share (results then do not depend on the "
        "number of processes; costs one all-reduce per BN layer)",
        _parse_bool,
        group="run",
    )

    def __post_init__(self) -> None:
        # Options left unset take the dataset's recipe; the resolved values are what is recorded.
        recipe = recipe_for(self.dataset)
        for key in RECIPE_KEYS:
            if getattr(self, key) is None:
                setattr(self, key, getattr(recipe, key))

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from a mapping of raw values (strings from the CLI, YAML scalars), checking everything.

        Keys may be spelt with ``-`` or ``_``; a renamed key (:data:`~multimix.train.config.RENAMED_KEYS`)
        is read under its new name, with a DeprecationWarning unless ``source`` is ``"saved"`` (a
        checkpoint's own config).
        """
        known = {f.name: f for f in fields(cls)}
        parsed: dict[str, Any] = {}
        for raw_key, raw in with_named_recipe(renamed_keys_read(values)).items():
            key = str(raw_key).replace("-", "_")
            if key not in known:
                raise ConfigError(
                    f"unknown {source} key {raw_key!r}; valid keys: {', '.join(known)}"
                )
            f = known[key]
            try:
                value = f.metadata["parse"](raw)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"invalid value for {key}: {raw!r} ({f.metadata['help']})"
                ) from None
            parsed[key] = value
        config = cls(**parsed)
        config.validate()
        if source != "saved":  # a checkpoint's own keys are not the user's to change
            for old in old_keys_in(values):
                _warn_renamed(old)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> dict[str, Any]:
        """Read the raw mapping of a YAML config file (checked later by :meth:`from_dict`)."""
        try:
            # Bytes: YAML is UTF-8 (or UTF-16 with a BOM) whatever the locale says
            data = yaml.safe_load(Path(path).read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.reader.ReaderError as exc:  # bytes that are not text in UTF-8
            raise ConfigError(
                f"config file {path} is not UTF-8 text (byte {exc.position}: {exc.reason}); "
                "save it as UTF-8"
            ) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = (
                f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            )
            what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"config file {path} is not valid YAML{where}: {what}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"config file {path} must hold a mapping of keys to values, got {type(data).__name__}"
            )
        return data

    # -- checks -----------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first key whose value is invalid, alone or for the method."""
        for f in fields(self):
            choices = f.metadata["choices"]
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise ConfigError(
                    f"invalid value for {f.name}: {value!r}; valid values: {', '.join(choices)}"
                )
        self._check_values()
        self._check_method_rules()

    def _need(self, ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"invalid value for {key}: {getattr(self, key)!r}; expected {what}")

    def _check_values(self) -> None:
        need = self._need
        # Every float option ends up in float32 arithmetic (a weight update, a Beta draw, a scale): a
        # value beyond float32's range overflows there, deep in torch, instead of here.
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("float", "float | None") and value is not None:
                need(
                    math.isfinite(value) and abs(value) <= FLOAT32_MAX,
                    f.name,
                    f"a finite number within float32's range (magnitude at most {FLOAT32_MAX:.4g})",
                )
        for key in (
            "epochs",
            "batch_size",
            "mix_rows",
            "eval_batch_size",
            "toy_components",
            "toy_dim",
            "train_size",
        ):
            need(getattr(self, key) >= 1, key, "an integer >= 1")
        need(self.toy_classes >= 2, "toy_classes", "an integer >= 2")
        need(
            self.train_subset is None or self.train_subset >= 0,
            "train_subset",
            "an integer >= 1, or 'all'",
        )
        # Every RNG they seed (torch, NumPy, scikit-learn) takes these
        for key in (
            "seed",
            "data_seed",
        ):
            need(0 <= getattr(self, key) <= MAX_SEED, key, f"an integer in [0, {MAX_SEED}]")
        need(
            self.tuple_size is None or self.tuple_size >= 1,
            "tuple_size",
            "an integer >= 1 or 'all'",
        )
        need(math.isfinite(self.lr) and self.lr > 0, "lr", "a finite number > 0")
        need(
            math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            "weight_decay",
            "a number >= 0",
        )
        need(0 <= self.momentum < 1, "momentum", "a number in [0, 1)")
        need(0 < self.val_fraction < 1, "val_fraction", "a number in (0, 1)")
        need(0 <= self.mix_prob <= 1, "mix_prob", "a number in [0, 1]")
        need(0 <= self.switch_prob <= 1, "switch_prob", "a number in [0, 1]")
        need(
            math.isfinite(self.cutmix_alpha) and self.cutmix_alpha > 0,
            "cutmix_alpha",
            "a finite number > 0",
        )
        need(0 <= self.label_smoothing < 1, "label_smoothing", "a number in [0, 1)")
        need(
            self.alpha is None or (math.isfinite(self.alpha) and self.alpha > 0),
            "alpha",
            "a finite number > 0",
        )
        need(self.threads is None or self.threads >= 1, "threads", "an integer >= 1")
        need(
            self.teacher_momentum is None or 0 <= self.teacher_momentum <= 1,
            "teacher_momentum",
            "a number in [0, 1]",
        )
        need(
            math.isfinite(self.distill_weight) and self.distill_weight >= 0,
            "distill_weight",
            "a number >= 0",
        )
        need(
            math.isfinite(self.temperature) and self.temperature > 0, "temperature", "a number > 0"
        )
        need(
            self.half_life > 0 and math.isfinite(self.half_life), "half_life", "a finite number > 0"
        )
        need(
            math.isfinite(self.confmix_scale) and self.confmix_scale > 0,
            "confmix_scale",
            "a finite number > 0",
        )
        need(self.confmix_warmup >= 0, "confmix_warmup", "an integer >= 0")
        need(
            self.layers is None or len(self.layers) > 0, "layers", "a non-empty list of layer names"
        )
        need(
            all(0 < f < 1 for f in self.milestones) and self.milestones == sorted(self.milestones),
            "milestones",
            "increasing fractions of the training in (0, 1), e.g. 0.25,0.5,0.75",
        )
        need(0 < self.lr_decay <= 1, "lr_decay", "a number in (0, 1]")
        need(
            self.alpha_range is None
            or (
                len(self.alpha_range) == 2
                and all(math.isfinite(a) and a > 0 for a in self.alpha_range)
                and self.alpha_range[0] <= self.alpha_range[1]
            ),
            "alpha_range",
            "LOW,HIGH with 0 < LOW <= HIGH",
        )
        need(0 <= self.input_mixup_prob <= 1, "input_mixup_prob", "a number in [0, 1]")
        need(
            math.isfinite(self.input_mixup_alpha) and self.input_mixup_alpha > 0,
            "input_mixup_alpha",
            "a finite number > 0",
        )

    def _check_method_rules(self) -> None:
        """The options that only some methods take, as the method registry says."""
        method = get_method(self.method)
        if self.alpha_schedule != "constant":
            if not method.has_alpha:
                with_alpha = [m.name for m in METHOD_REGISTRY.values() if m.has_alpha]
                raise ConfigError(
                    f"alpha_schedule applies to methods with an α ({', '.join(with_alpha)}), "
                    f"not to {self.method!r}"
                )
            for key in ("alpha_start", "alpha_end"):
                value = getattr(self, key)
                self._need(
                    value is not None and math.isfinite(value) and value >= 0,
                    key,
                    f"a number >= 0 (required by alpha_schedule={self.alpha_schedule!r})",
                )
        if self.teacher_momentum is not None and not method.teacher:
            teachers = [m.name for m in METHOD_REGISTRY.values() if m.teacher]
            raise ConfigError(
                f"teacher_momentum applies to {' and '.join(teachers)}, not to method {self.method!r}"
            )
        for key, default in (("alpha_range", None), ("input_mixup_prob", 0.0)):
            if getattr(self, key) != default and key not in method.options:
                raise ConfigError(
                    f"{key} applies to {', '.join(m.name for m in METHOD_REGISTRY.values() if key in m.options)}, "
                    f"not to method {self.method!r}"
                )
        if self.alpha_range is not None and self.alpha is not None:
            raise ConfigError(
                "give either alpha (one concentration) or alpha_range (one per member), not both"
            )
        if self.mix_scope != "local" and not method.global_scope:
            raise ConfigError(
                f"invalid value for mix_scope: {self.mix_scope!r}; global scope applies to "
                f"{' and '.join(GLOBAL_SCOPE_METHODS)}, not to method {self.method!r}"
            )

    # -- renamed keys, still read -----------------------------------------------------------

    @property
    def n(self) -> int:
        """Deprecated spelling of ``mix_rows``."""
        _warn_renamed("n")
        return self.mix_rows

    @property
    def m(self) -> int | None:
        """Deprecated spelling of ``tuple_size``."""
        _warn_renamed("m")
        return self.tuple_size

    @property
    def p(self) -> float:
        """Deprecated spelling of ``mix_prob``."""
        _warn_renamed("p")
        return self.mix_prob

    # -- derived ----------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.model or DEFAULT_MODEL[self.dataset]

    @property
    def method_alpha(self) -> float | None:
        """The α given, else the method's default; None where the mixer chooses or the method has no α."""
        return get_method(self.method).alpha(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    #: Keys that do not change what a run computes, so a run may be resumed with other values.
    RUNTIME_KEYS = (
        "device",
        "threads",
        "eval_batch_size",
        "test_every",
        "data_dir",
        "download",
        "tensorboard",
        "channels_last",
        "compile",
        "cuda_graph",
    )

    def differences(self, other: TrainConfig) -> list[str]:
        """Keys (other than runtime ones) whose values differ, as 'key: mine vs other'."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{k}: {mine[k]!r} vs {theirs[k]!r}"
            for k in mine
            if k not in self.RUNTIME_KEYS and mine[k] != theirs[k]
        ]


def with_named_recipe(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with what their ``recipe`` (:data:`~multimix.train.recipes.NAMED_RECIPES`) sets, for
    the keys they do not give themselves (either spelling); unchanged without a recipe."""
    name = values.get("recipe")
    if name is None or (isinstance(name, str) and name.lower() == "none"):
        return values
    recipe = NAMED_RECIPES.get(name) if isinstance(name, str) else None
    if recipe is None:
        raise ConfigError(
            f"invalid value for recipe: {name!r}; valid values: {', '.join(NAMED_RECIPES)}"
        )
    given = {str(k).replace("-", "_") for k in values}
    dataset = values.get("dataset", TrainConfig.dataset)
    if dataset not in recipe.datasets:
        raise ConfigError(
            f"recipe {name!r} is defined for {', '.join(recipe.datasets)}, not for dataset {dataset!r}"
        )
    method = values.get("method", TrainConfig.method)
    added = {k: v for k, v in recipe.values_for(str(method)).items() if k not in given}
    return {**values, **added}


def old_keys_in(values: dict[str, Any]) -> list[str]:
    """The renamed keys (:data:`~multimix.train.config.RENAMED_KEYS`) that ``values`` uses under their old name."""
    return [str(k).replace("-", "_") for k in values if str(k).replace("-", "_") in RENAMED_KEYS]


def renamed_keys_read(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (one source: a file, the flags, a checkpoint) with renamed keys under their new names;
    ConfigError if an old name and its new one are both there (they would disagree)."""
    out: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        if key in RENAMED_KEYS:
            new = RENAMED_KEYS[key]
            if new in values or new.replace("_", "-") in values:
                raise ConfigError(
                    f"{key} and {new} given together ({key}, --{key}, is the old name of {new}, "
                    f"--{new.replace('_', '-')}); give {new} alone"
                )
            raw_key = new
        out[raw_key] = value
    return out


def renamed_message(old: str) -> str:
    """What the deprecation of the old key ``old`` says."""
    new = RENAMED_KEYS[old]
    return f"the option {old!r} is deprecated; use {new!r} (--{new.replace('_', '-')})"


def _warn_renamed(old: str, stacklevel: int = 3) -> None:
    warnings.warn(renamed_message(old), DeprecationWarning, stacklevel=stacklevel)


_generated_init = TrainConfig.__init__


@functools.wraps(_generated_init)
def _init_reading_renamed_keys(self: TrainConfig, *args: Any, **kwargs: Any) -> None:
    olds = old_keys_in(kwargs)
    _generated_init(self, *args, **renamed_keys_read(kwargs))
    for old in olds:
        _warn_renamed(old)


TrainConfig.__init__ = _init_reading_renamed_keys  # type: ignore[method-assign]


__all__ = [
    "TrainConfig",
    "ConfigError",
    "METHODS",
    "ATTENTIONS",
    "MIX_SCOPES",
    "OPTIMIZERS",
    "SCHEDULERS",
    "AMP",
    "TEST_EVERY",
    "GLOBAL_SCOPE_METHODS",
    "DEFAULT_ALPHA",
    "DEFAULT_TEACHER_MOMENTUM",
    "MAX_SEED",
    "RENAMED_KEYS",
    "old_keys_in",
    "renamed_keys_read",
    "renamed_message",
]
