"""The public surface: one vocabulary, defaults that train, documented names, no reaching into
another package's private names."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import types
import warnings
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

import multimix
import multimix.functional as MF
from conftest import gen
from multimix import (
    ConfMix,
    CutMix,
    DenseMultiMix,
    EMATeacher,
    ManifoldMixup,
    Mixup,
    MixupOrCutMix,
    MultiMix,
)

SRC = Path(multimix.__file__).parent
PACKAGES = [
    "multimix",
    "multimix.functional",
    "multimix.mixers",
    "multimix.evaluate",
    "multimix.analysis",
    "multimix.data",
    "multimix.models",
]
OLD_NAMES = {
    "mixup_params",
    "cutmix_params",
    "random_subsets",
    "sample_tuples",
    "multimix_weights",
    "dense_multimix_weights",
}


# -- defaults -----------------------------------------------------------------------------------


def test_multimix_alpha_is_one_for_pairs_and_one_over_m_beyond():
    assert MF.multimix_alpha(1) == MF.multimix_alpha(2) == 1.0
    assert MF.multimix_alpha(3) == pytest.approx(1 / 3) and MF.multimix_alpha(64) == pytest.approx(
        1 / 64
    )
    with pytest.raises(ValueError, match="m must be >= 1, got 0"):
        MF.multimix_alpha(0)


# None: every default (m = 2); 5: the α rule for longer tuples
@pytest.mark.parametrize("m", [None, 5])
def test_functional_multimix_defaults_draw_what_the_mixer_draws(m):
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(fc=nn.Linear(6, 4)))
    x, y = torch.randn(16, 6), torch.randint(4, (16,))
    kw = {} if m is None else {"m": m}
    with MultiMix(model, classifier="fc", num_classes=4, generator=gen(2), **kw) as mixer:
        logits, targets = mixer(x, y)
    z_mixed, y_mixed = MF.multimix(x, MF.one_hot(y, 4), generator=gen(2), **kw)
    assert targets.shape == (1000, 4)
    assert torch.allclose(targets, y_mixed, atol=1e-6)
    assert torch.allclose(logits, model.fc(z_mixed), atol=1e-5)
    # The sparse sampler's defaults are the same draw.
    tuples = MF.sample_multimix_tuples(16, generator=gen(2), **kw)
    assert tuples.m == (2 if m is None else m)
    assert torch.allclose(MF.interpolate_tuples(tuples, MF.one_hot(y, 4)), targets, atol=1e-6)


class _SpatialNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv1d(3, 5, kernel_size=1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=2))


def test_functional_dense_multimix_defaults_draw_what_the_mixer_draws():
    torch.manual_seed(0)
    net = _SpatialNet()
    x, y = torch.randn(6, 3, 4), torch.randint(4, (6,))
    with DenseMultiMix(
        net, features="features", classifier="fc", num_classes=4, generator=gen(1)
    ) as mixer:
        logits, targets = mixer(x, y)
    with torch.no_grad():
        z_mixed, y_mixed = MF.dense_multimix(net.features(x), MF.one_hot(y, 4), generator=gen(1))
        expected_logits = net.fc(z_mixed).reshape(-1, 4)
    assert targets.shape == (1000 * 4, 4)
    assert torch.allclose(targets, y_mixed.reshape(-1, 4), atol=1e-6)
    assert torch.allclose(logits.detach(), expected_logits, atol=1e-5)


def test_default_multimix_keeps_targets_away_from_the_class_prior():
    # What the old default (the whole batch at α = 1) did: every mixed target near the class prior.
    y = MF.one_hot(torch.arange(64) % 10, 10)
    _, new = MF.multimix(torch.randn(64, 3), y, generator=gen(0))
    _, old = MF.multimix(torch.randn(64, 3), y, m=None, alpha=1.0, generator=gen(0))
    assert new.max(dim=1).values.mean() > 0.7 > 0.3 > old.max(dim=1).values.mean()


# -- the surface --------------------------------------------------------------------------------


def _modules() -> list[types.ModuleType]:
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        found.append(package)
        if name != "multimix":
            found += [
                importlib.import_module(info.name)
                for info in pkgutil.iter_modules(package.__path__, name + ".")
            ]
    return found


def _documented_constants(module: types.ModuleType) -> set[str]:
    """Module-level names assigned right after a ``#:`` comment, in the module's package."""
    documented = set()
    folder = Path(module.__file__).parent
    for path in folder.glob("*.py"):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.parse("\n".join(lines)).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and lines[
                node.lineno - 2
            ].lstrip().startswith("#:"):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                documented |= {t.id for t in targets if isinstance(t, ast.Name)}
    return documented


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
def test_every_public_name_is_importable_and_documented(module):
    names = getattr(module, "__all__", None)
    if names is None:
        return
    assert len(names) == len(set(names)), f"{module.__name__}.__all__ repeats a name"
    constants = None
    for name in names:
        obj = getattr(module, name)  # importable
        if isinstance(obj, types.ModuleType) or inspect.isclass(obj) or inspect.isroutine(obj):
            assert (obj.__doc__ or "").strip(), f"{module.__name__}.{name} has no docstring"
        else:  # a constant or a type alias: a `#:` comment says what it is
            constants = _documented_constants(module) if constants is None else constants
            assert name in constants, (
                f"{module.__name__}.{name} has no `#:` comment above its definition"
            )


def test_internal_names_and_old_names_stay_importable_but_not_public():
    internal = {
        "multimix.functional": [
            "LAYOUTS",
            "positions_of",
            "dense_mix_logits_and_labels",
            *OLD_NAMES,
        ],
        "multimix.mixers": ["INPUT", "WRAPPER_PREFIXES"],
    }
    for module_name, names in internal.items():
        module = importlib.import_module(module_name)
        for name in names:
            assert hasattr(module, name), f"{module_name}.{name} is no longer importable"
            assert name not in module.__all__, (
                f"{module_name}.{name} is internal or deprecated, yet public"
            )
    from multimix.mixers import ATTENTIONS, SCOPES

    assert ATTENTIONS == ("none", "pooled", "cam") and SCOPES == ("local", "global")


@pytest.mark.parametrize(
    "cls",
    [Mixup, ManifoldMixup, ConfMix, CutMix, MixupOrCutMix, MultiMix, DenseMultiMix, EMATeacher],
)
def test_constructors_take_the_model_then_typed_keywords(cls):
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]  # after self
    assert parameters[0].name == "model"
    for p in parameters[1:]:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, (
            f"{cls.__name__}({p.name}=) is not keyword-only"
        )
        assert p.annotation is not inspect.Parameter.empty, f"{cls.__name__}({p.name}=) has no type"


def test_embedding_consumer_is_classifier_in_both_multimix_mixers():
    for cls in (MultiMix, DenseMultiMix):
        assert "classifier" in inspect.signature(cls.__init__).parameters


# -- the source ---------------------------------------------------------------------------------


def _sources() -> list[tuple[Path, ast.Module]]:
    return [
        (path, ast.parse(path.read_text(encoding="utf-8"))) for path in sorted(SRC.rglob("*.py"))
    ]


def _package(path: Path) -> str:
    """The package a source file belongs to: ``functional``, ``mixers``, ..., or ``""`` for top-level modules."""
    parts = path.relative_to(SRC).parts
    return parts[0] if len(parts) > 1 else ""


def test_no_module_imports_another_packages_private_names():
    offences = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("multimix.")
            ):
                continue
            target = node.module.split(".")[1]
            # multimix._validation, _io, _deprecation: shared helpers, public names
            if target.startswith("_"):
                target = ""
            for alias in node.names:
                if alias.name.startswith("_") and target and target != _package(path):
                    offences.append(
                        f"{path.relative_to(SRC)}:{node.lineno} imports {node.module}.{alias.name}"
                    )
    assert not offences, "\n".join(offences)


def test_the_library_uses_no_deprecated_name():
    offences = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Name)
                and node.id in OLD_NAMES
                and isinstance(node.ctx, ast.Load)
            ):
                offences.append(f"{path.relative_to(SRC)}:{node.lineno} uses {node.id}")
            elif isinstance(node, ast.Attribute) and node.attr in OLD_NAMES:
                offences.append(f"{path.relative_to(SRC)}:{node.lineno} uses .{node.attr}")
            elif isinstance(node, ast.ImportFrom) and path.name != "__init__.py":
                offences += [
                    f"{path.relative_to(SRC)}:{node.lineno} imports {a.name}"
                    for a in node.names
                    if a.name in OLD_NAMES
                ]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "MultiMix"
                and any(k.arg == "before" for k in node.keywords)
            ):
                offences.append(f"{path.relative_to(SRC)}:{node.lineno} passes MultiMix(before=)")
    assert not offences, "\n".join(offences)


def test_string_constants_are_defined_once():
    seen: dict[tuple[str, ...], str] = {}
    repeats = []
    for path, tree in _sources():
        for node in tree.body:
            if not isinstance(node, ast.Assign) or not isinstance(
                node.value, (ast.Tuple, ast.List, ast.Set)
            ):
                continue
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            if len(value) < 2 or not all(isinstance(v, str) for v in value):
                continue
            key, where = tuple(sorted(value)), f"{path.relative_to(SRC)}:{node.lineno}"
            if key in seen:
                repeats.append(f"{where} repeats {seen[key]}")
            seen.setdefault(key, where)
    assert not repeats, "\n".join(repeats)


def test_mixing_warns_about_nothing_of_ours():
    model = nn.Sequential(OrderedDict(body=nn.Linear(5, 6), fc=nn.Linear(6, 4)))
    x, y = torch.randn(8, 5), torch.randint(4, (8,))
    net = _SpatialNet()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=DeprecationWarning, module="multimix")
        for mixer in (
            Mixup(model, num_classes=4),
            ManifoldMixup(model, layers=["body"], num_classes=4),
            ConfMix(model, num_classes=4),
            MixupOrCutMix(model, num_classes=4),
            MultiMix(model, classifier="fc", num_classes=4, teacher=EMATeacher(model)),
        ):
            mixer(x, y)
            mixer.close()
        DenseMultiMix(net, features="features", classifier="fc", num_classes=4)(
            torch.randn(6, 3, 4), y[:6]
        )
        MF.multimix(torch.randn(8, 3), MF.one_hot(y, 4))
        MF.dense_multimix(torch.randn(8, 3, 4), MF.one_hot(y, 4))
