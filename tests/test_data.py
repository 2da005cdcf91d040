"""Datasets: shapes, determinism, disjoint stratified splits, the CIFAR binary reader."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from conftest import gen
from multimix.data import (
    DATASETS,
    FILE_DATASETS,
    GaussianMixtureProblem,
    cifar,
    dataset_info,
    load_dataset,
    spirals,
)
from multimix.data.augment import random_crop_flip

OFFLINE = [d for d in DATASETS if d not in FILE_DATASETS]
SHAPES = {
    "mnist1d": (40,),
    "mnist1d-shuffled": (40,),
    "digits": (1, 8, 8),
    "toy": (2,),
    "spirals": (2,),
}


def rows(ds):
    return {tuple(r.tolist()) for r in ds.tensors[0].reshape(len(ds), -1)}


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_dataset_shapes_determinism_and_disjoint_splits(name):
    a = load_dataset(name, data_seed=0)
    b = load_dataset(name, data_seed=0)
    assert a.input_shape == SHAPES[name]
    for split in ("train", "val", "test"):
        xa, ya = getattr(a, split).tensors
        xb, yb = getattr(b, split).tensors
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xa.dtype == torch.float32 and ya.dtype == torch.int64
        assert ya.min() >= 0 and ya.max() < a.num_classes
    n_train, n_val = len(a.train), len(a.val)
    assert abs(n_val / (n_train + n_val) - 0.1) < 0.01
    assert rows(a.train).isdisjoint(rows(a.val))
    # Continuous samples
    assert rows(a.train).isdisjoint(rows(a.test)) or name in (
        "toy",
        "spirals",
    )
    # Stratified: class proportions of val follow train's.
    p_train = torch.bincount(a.train.tensors[1], minlength=a.num_classes) / n_train
    p_val = torch.bincount(a.val.tensors[1], minlength=a.num_classes) / n_val
    assert (p_train - p_val).abs().max() < 0.03
    c = load_dataset(name, data_seed=1)
    assert not torch.equal(c.val.tensors[0], a.val.tensors[0])  # another split for another seed


def test_dataset_info_matches_the_loaded_data():
    for name, kw in [
        ("mnist1d", {}),
        ("digits", {}),
        ("toy", {"toy_classes": 4, "toy_dim": 3, "train_size": 500}),
        ("spirals", {"train_size": 300}),
    ]:
        info = dataset_info(name, **kw)
        splits = load_dataset(name, **kw)
        assert info.input_shape == splits.input_shape and info.num_classes == splits.num_classes
        assert info.train_size == len(splits.train) + len(splits.val)


def test_mnist1d_sizes_and_shuffled_variant():
    plain, shuffled = load_dataset("mnist1d"), load_dataset("mnist1d-shuffled")
    assert len(plain.train) + len(plain.val) == 4000 and len(plain.test) == 1000
    # Same examples, positions permuted: per-example sorted values agree.
    x, xs = plain.test.tensors[0], shuffled.test.tensors[0]
    assert torch.allclose(x.sort(1).values, xs.sort(1).values, atol=1e-5)
    assert not torch.allclose(x, xs)


def test_mnist1d_generation_leaves_global_rngs_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("MULTIMIX_CACHE", str(tmp_path))  # force a fresh generation
    random.seed(123)
    np.random.seed(123)
    load_dataset("mnist1d")
    assert random.random() == random.Random(123).random()
    assert np.random.rand() == np.random.RandomState(123).rand()
    assert list(tmp_path.glob("mnist1d-*.npz"))  # cached for next time


def test_toy_problem_and_options():
    s = load_dataset("toy", toy_classes=4, toy_components=2, toy_dim=3, train_size=500)
    assert s.num_classes == 4 and s.input_shape == (3,)
    assert len(s.train) + len(s.val) == 500
    problem = s.info["problem"]
    assert isinstance(problem, GaussianMixtureProblem) and problem.means.shape == (4, 2, 3)
    x, y = s.test.tensors
    # The Bayes classifier beats chance comfortably on its own problem.
    assert (problem.bayes_predict(x) == y).float().mean() > 0.4
    lp = problem.log_posterior(x[:100])
    assert torch.allclose(lp.exp().sum(1), torch.ones(100, dtype=lp.dtype))


def test_spirals_radius_and_classes():
    x, y = spirals(2000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2000, 2) and set(y.tolist()) == {0, 1}
    assert x.norm(dim=1).max() < 1.3


def test_log_posterior_rows_normalise_and_match_bayes_rule():
    problem = GaussianMixtureProblem.random(4, 3, dim=2, seed=0)
    x, _ = problem.sample(500, generator=gen(0))
    lp = problem.log_posterior(x)
    assert torch.allclose(lp.exp().sum(1), torch.ones(500, dtype=lp.dtype))
    assert torch.equal(lp.argmax(1), problem.bayes_predict(x))
    # Against a direct evaluation of the mixture densities.
    d = problem.dim
    dens = torch.zeros(500, 4, dtype=torch.float64)
    for k in range(4):
        for j in range(3):
            diff = x.double() - problem.means[k, j]
            dens[:, k] += (
                torch.exp(-(diff**2).sum(1) / (2 * problem.sigma**2))
                / (2 * math.pi * problem.sigma**2) ** (d / 2)
                / 3
            )
    assert torch.allclose(lp.exp(), dens / dens.sum(1, keepdim=True), atol=1e-8)


def test_random_problem_is_seeded_and_in_range():
    a = GaussianMixtureProblem.random(3, 5, seed=7)
    b = GaussianMixtureProblem.random(3, 5, seed=7)
    assert torch.equal(a.means, b.means) and a.sigma == b.sigma
    assert a.means.shape == (3, 5, 2) and a.means.abs().max() <= 1 and 0.1 <= a.sigma <= 0.3
    _x, y = a.sample(3000, generator=gen(0))
    assert torch.bincount(y, minlength=3).min() > 900  # equal priors


# -- CIFAR: the reader on small files in the official format, written here ------------------------


def write_cifar_binary(path, images, labels, *, label_bytes=1):
    """Write images (N, 3, 32, 32) uint8 and labels (N,) in the official record format (with
    ``label_bytes=2`` the coarse label byte is written as 0)."""
    n = len(labels)
    rows = np.zeros((n, label_bytes + cifar.PIXELS), dtype=np.uint8)
    rows[:, label_bytes - 1] = labels.numpy().astype(np.uint8)
    rows[:, label_bytes:] = images.reshape(n, -1).numpy()
    rows.tofile(path)


def write_fake_cifar(root, name, n_train=20, n_test=10):
    spec = cifar.SPECS[name]
    folder = root / spec.folder
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    expected = {}
    for files, n in ((spec.train_files, n_train), (spec.test_files, n_test)):
        for f in files:
            images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
            labels = torch.randint(0, spec.num_classes, (n,), generator=g)
            write_cifar_binary(folder / f, images, labels, label_bytes=spec.label_bytes)
            expected[f] = (images, labels)
    return folder, expected


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reader_on_files_in_the_official_format(tmp_path, name):
    folder, expected = write_fake_cifar(tmp_path, name)
    spec = cifar.SPECS[name]
    f = spec.train_files[0]
    images, labels = cifar.read_binary(folder / f, label_bytes=spec.label_bytes)
    assert torch.equal(images, expected[f][0]) and torch.equal(labels, expected[f][1])
    # Byte layout: label byte(s) first, then the red plane row-major.
    raw = np.fromfile(folder / f, dtype=np.uint8)
    assert raw[spec.label_bytes - 1] == labels[0].item()
    assert raw[spec.label_bytes + 1] == images[0, 0, 0, 1].item()

    s = load_dataset(name, data_dir=str(tmp_path))  # the parent folder works too
    n_train = 20 * len(spec.train_files)
    assert len(s.train) + len(s.val) == n_train and len(s.test) == 10
    assert (
        s.input_shape == (3, 32, 32)
        and s.num_classes == spec.num_classes
        and s.augment == "crop-flip"
    )


def test_cifar_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(
        cifar.CifarFilesMissing, match=r"cifar-10-batches-bin.*cifar-10-binary.tar.gz.*--download"
    ):
        load_dataset("cifar10", data_dir=str(tmp_path))
    with pytest.raises(cifar.CifarFilesMissing, match="needs --data-dir"):
        load_dataset("cifar100")


def test_cifar_truncated_file_is_rejected(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(b"\x00" * 3000)
    with pytest.raises(ValueError, match="is not a CIFAR binary file: 3000 bytes"):
        cifar.read_binary(path, label_bytes=1)


def test_random_crop_flip_is_a_shifted_or_flipped_copy():
    # Every output must be exactly one crop of its own zero-padded image, possibly mirrored, and
    # the draws must actually vary (an identity "augmentation" fails this test).
    b, pad = 16, 2
    x = torch.arange(b * 3 * 8 * 8, dtype=torch.float32).reshape(b, 3, 8, 8) + 1
    y = random_crop_flip(x, padding=pad, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    seen = set()
    for i in range(b):
        matches = [
            (dy, dx, flip)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            for flip in (False, True)
            if torch.equal(
                y[i], (lambda c: c.flip(-1) if flip else c)(padded[i, :, dy : dy + 8, dx : dx + 8])
            )
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 4 and {f for _, _, f in seen} == {False, True}


def test_named_augmentations():
    from multimix.data.augment import AUGMENTATIONS

    x = torch.arange(2 * 28 * 28, dtype=torch.float32).reshape(2, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # without flips, every output is a shifted window of its own image
        out = AUGMENTATIONS["pad-crop"](x, generator=g)
        assert out.shape == x.shape
        nonzero = out[out > 0]
        diffs = out[:, :, :, 1:] - out[:, :, :, :-1]
        # Never reversed
        assert bool(((diffs == 1) | (out[:, :, :, 1:] == 0) | (out[:, :, :, :-1] == 0)).all())
        assert set(nonzero.tolist()) <= set(x.flatten().tolist())
    flips = [AUGMENTATIONS["pad-crop-flip"](x, generator=g) for _ in range(20)]
    assert any(bool(((f[:, :, :, 1:] - f[:, :, :, :-1]) == -1).any()) for f in flips)


def test_a_training_subset_is_stratified_seeded_and_leaves_the_test_set_whole():
    full = load_dataset("digits", data_seed=0)
    part = load_dataset("digits", data_seed=0, train_subset=400)
    assert len(part.train) + len(part.val) == 400  # the validation split is carved from the subset
    assert len(part.test) == len(full.test) and torch.equal(
        part.test.tensors[0], full.test.tensors[0]
    )
    counts = torch.bincount(torch.cat([part.train.tensors[1], part.val.tensors[1]]), minlength=10)
    whole = torch.bincount(torch.cat([full.train.tensors[1], full.val.tensors[1]]), minlength=10)
    # Stratified: the full set's class shares
    assert ((counts - 400 * whole / whole.sum()).abs() <= 1).all()
    again = load_dataset("digits", data_seed=0, train_subset=400)
    other = load_dataset("digits", data_seed=1, train_subset=400)
    assert torch.equal(again.train.tensors[0], part.train.tensors[0])
    assert not torch.equal(other.train.tensors[0], part.train.tensors[0])
    # every example of the subset is one of the full training set's
    pool = {
        tuple(row.tolist())
        for row in torch.cat([full.train.tensors[0], full.val.tensors[0]]).flatten(1)
    }
    assert all(tuple(row.tolist()) in pool for row in part.train.tensors[0].flatten(1))
    assert len(load_dataset("digits", train_subset=0).train) == len(full.train)  # 0: all of it


def test_a_subset_larger_than_the_files_uses_them_whole_with_a_warning(caplog):
    # Preflight refuses a subset larger than a release's known size; files smaller than their release get here.
    with caplog.at_level("WARNING"):
        splits = load_dataset("digits", train_subset=10_000)
    assert len(splits.train) == len(load_dataset("digits").train)
    assert "using all of them" in caplog.text
