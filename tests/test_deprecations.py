"""Renamed names keep working: each old name warns (DeprecationWarning naming the new one) and gives
the new name's result under the same seed."""

from __future__ import annotations

import importlib
import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn

import multimix.functional as MF
from conftest import gen
from multimix import MultiMix

# old name -> (new name, module that defines both, positional args, keyword args without the generator)
ALIASES = {
    "mixup_params": ("sample_mixup", "pairwise", (8,), {"alpha": 0.4, "per_sample": True}),
    "cutmix_params": ("sample_cutmix", "cutmix", ((4, 3, 8, 8),), {"alpha": 1.0}),
    "random_subsets": ("sample_subsets", "multimix", (20, 10, 3), {}),
    "sample_tuples": ("sample_multimix_tuples", "multimix", (10,), {"n": 20, "m": 3, "alpha": 0.5}),
    "multimix_weights": ("sample_multimix_weights", "multimix", (10,), {"n": 20}),
    "dense_multimix_weights": ("sample_dense_multimix_weights", "dense", (6, 5), {"n": 7, "m": 3}),
}


def flat(result: object) -> list[torch.Tensor]:
    """The tensors of a sampler's result, in order (a tensor, a tuple of them, or a MixTuples)."""
    return (
        [result]
        if isinstance(result, torch.Tensor)
        else [t for t in result if isinstance(t, torch.Tensor)]
    )


@pytest.mark.parametrize("old", sorted(ALIASES))
def test_old_sampler_name_warns_and_equals_the_new_one(old):
    new, _, args, kwargs = ALIASES[old]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = getattr(MF, old)(*args, **kwargs, generator=gen(3))
    assert [w.category for w in caught] == [DeprecationWarning]
    message = str(caught[0].message)
    assert (
        f"multimix.functional.{old} is deprecated" in message
        and f"multimix.functional.{new}" in message
    )
    assert caught[0].filename == __file__  # points at the caller's line, not at the library
    expected = getattr(MF, new)(*args, **kwargs, generator=gen(3))
    assert len(flat(got)) == len(flat(expected)) > 0
    assert all(torch.equal(a, b) for a, b in zip(flat(got), flat(expected), strict=True))


@pytest.mark.parametrize("old", sorted(ALIASES))
def test_old_sampler_name_is_importable_where_it_was(old):
    new, module, _, _ = ALIASES[old]
    defining = importlib.import_module(f"multimix.functional.{module}")
    assert getattr(defining, old) is getattr(MF, old)
    assert getattr(defining, new) is getattr(MF, new)
    assert old not in MF.__all__ and new in MF.__all__
    alias = getattr(MF, old)
    assert alias.__name__ == old and new in alias.__doc__


def linear_model(d: int = 6, k: int = 4) -> nn.Module:
    return nn.Sequential(OrderedDict(body=nn.Linear(5, d), fc=nn.Linear(d, k)))


def test_multimix_before_still_works_warns_and_equals_classifier():
    torch.manual_seed(0)
    model = linear_model()
    x, y = torch.randn(8, 5), torch.randint(4, (8,))
    with pytest.warns(
        DeprecationWarning,
        match=r"MultiMix\(before=\.\.\.\) is deprecated; use MultiMix\(classifier=",
    ):
        old = MultiMix(model, before="fc", n=30, num_classes=4, generator=gen(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = MultiMix(model, classifier="fc", n=30, num_classes=4, generator=gen(1))
        assert old.classifier == new.classifier == "fc"
        for a, b in zip(old(x, y), new(x, y), strict=True):
            assert torch.equal(a, b)
    with pytest.warns(
        DeprecationWarning, match=r"MultiMix\.before is deprecated; use MultiMix\.classifier"
    ):
        assert old.before == "fc"
    old.close(), new.close()


def test_multimix_before_and_classifier_together_or_neither_is_an_error():
    model = linear_model()
    with pytest.raises(
        TypeError, match=r"both classifier='fc' and its deprecated alias before='body'"
    ):
        MultiMix(model, classifier="fc", before="body")
    with pytest.raises(TypeError, match=r"missing required keyword argument classifier="):
        MultiMix(model)
    # A bad name is reported under the argument the caller used.
    with (
        pytest.warns(DeprecationWarning, match="before="),
        pytest.raises(ValueError, match=r"before='head' is not a submodule"),
    ):
        MultiMix(model, before="head")
    with pytest.raises(ValueError, match=r"classifier='head' is not a submodule"):
        MultiMix(model, classifier="head")
