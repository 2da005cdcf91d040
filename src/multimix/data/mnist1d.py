"""MNIST-1D (Greydanus, 2020), generated offline with the ``mnist1d`` package and cached.

The package's ``make_dataset`` builds the data from templates; its download path is never used.
Default: 5000 examples, 4000 train / 1000 test, sequences of length 40, 10 classes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

LENGTH = 40  # points per sequence
TRAIN_SIZE = 4000  # of the default 5000 examples; the other 1000 are the test set


def cache_dir() -> Path:
    """Where generated data is cached: ``$MULTIMIX_CACHE`` or ``~/.cache/multimix``."""
    return Path(os.environ.get("MULTIMIX_CACHE", Path.home() / ".cache" / "multimix"))


def generate(
    *, shuffled: bool = False, num_samples: int = 5000, seed: int = 42
) -> dict[str, np.ndarray]:
    """Generate MNIST-1D arrays ``x, y, x_test, y_test`` (float32 / int64), cached on disk."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args(as_dict=True)
    args.update(num_samples=num_samples, seed=seed, shuffle_seq=shuffled)
    args.pop("url")  # never used: we generate, we do not download
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"mnist1d-{key}.npz"
    if path.exists():
        try:
            with np.load(path) as f:
                return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except Exception as exc:  # a damaged cache file is regenerated, not trusted
            log.warning("regenerating MNIST-1D: could not read cache %s (%s)", path, exc)

    # make_dataset reseeds NumPy's and Python's global RNGs; give the caller theirs back.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        from mnist1d.utils import ObjectView

        data = make_dataset(ObjectView(args))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = {
        "x": data["x"].astype(np.float32),
        "y": data["y"].astype(np.int64),
        "x_test": data["x_test"].astype(np.float32),
        "y_test": data["y_test"].astype(np.int64),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz.tmp", delete=False) as tmp:
        np.savez(tmp, **arrays)
    os.replace(tmp.name, path)  # atomic: a concurrent reader sees the old file or the whole new one
    return arrays


def load(
    *, shuffled: bool = False, num_samples: int = 5000
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(x_train (N, 40), y_train, x_test, y_test)`` tensors."""
    a = generate(shuffled=shuffled, num_samples=num_samples)
    x, y, x_test, y_test = (torch.from_numpy(a[k]) for k in ("x", "y", "x_test", "y_test"))
    return x, y, x_test, y_test
