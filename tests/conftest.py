"""Shared fixtures and helpers: small models with named layers (a residual, non-sequential one too),
seeded generators, the CLI in a child process, a tiny training run's config, run-folder readers, data
files in the releases' formats.

Tests import the plain helpers by name (``from conftest import MLPNet, cli``); fixtures come by argument.
Markers (pyproject.toml): ``cuda`` (skipped without a device), ``slow`` (``make test-fast`` leaves them out).
"""

# Where tests live: one file per module or subpackage of src/multimix, named after it, so that a change's
# tests are found by name; integration tests of the CLI stay in test_cli.py.
#   functional/* (sampling, pairwise, multimix, targets)    test_functional.py
#   functional/dense.py + mixers/dense.py (Dense MultiMix)  test_dense.py
#   functional/cutmix.py + mixers/cutmix.py (CutMix)        test_cutmix.py
#   mixers/* (the nn.Module mixers)                         test_mixers.py; on 🤗/timm models: test_hf.py
#   _validation.py (each bad argument, one clear error)     test_bad_input.py
#   __init__.py (the public API); _deprecation.py           test_public_api.py; test_deprecations.py
#   teacher.py                                              test_teacher.py
#   schedules.py (α schedules, ConfMix's α) and ConfMix     test_schedules.py
#   models/*                                                test_models.py
#   analysis/* (Bayes error, excess risk, MMLB)             test_analysis.py
#   evaluate/*, train/evaluation.py (`multimix evaluate`)   test_evaluate.py
#   data/* (generated sets, splits, toy problem, CIFAR)     test_data.py
#   data/idx.py, idx_images.py, files.py (MNIST family)     test_data_idx.py
#   train/trainer.py                                        test_train.py
#   train/config.py; train/methods.py                       test_config.py; test_methods.py
#   train/state.py, components.py, step.py                  test_run_state.py
#   train/run_folder.py; train/evaluator.py, reporting.py   test_run_folder.py; test_evaluator.py
#   train/checkpoint.py                                     test_checkpoint.py
#   train/runlock.py; train/workers.py                      test_runlock.py; test_workers.py
#   train/allocator.py (glibc keeps large CPU buffers)      test_allocator.py
#   train/recipes.py                                        test_recipes.py
#   train/distributed.py: training under torchrun           test_distributed.py
#   train/graphs.py and the rest of the GPU path            test_cuda.py (marked cuda)
#   cli.py, train/compare.py, train/preflight.py (its       test_cli.py
#     checks through the bad-flag table), _io.py's modes
#   benchmarks/ (the scripts, on tiny budgets)              test_benchmarks.py
#   docs/ (links, citations)                                test_docs_links.py
#   docs/ (the site's build; every code block, every command)  test_docs_build.py; test_docs_snippets.py
#   multi-label targets (functional), soft BCE; mixers     test_multilabel.py; test_multilabel_mixers.py
#   a mixer inside another module; 🤗 batches with labels   test_mixer_modules.py
#   mixers under unusual models; attacks under no_grad      test_misuse.py
#   wrapped (DDP) and sharded (FSDP2) models, torchrun     test_wrapped.py (+ wrapped_worker.py)
#   Lightning (docs/how-to/lightning.md)                    test_lightning.py (+ lightning_*.py)
#   integrations/transformers.py (MixupTrainer)             test_hf_trainer.py (+ hf_trainer_worker.py)
#   the paper's protocol: α ranges, OneOf, step schedule,   test_protocol.py
#     --input-mixup-prob, --recipe alignmixup
#   faults: divergence, full disks, the last write, JSON    test_faults.py
#   damaged checkpoints; evaluate's faults                  test_corruption.py
#   data files' counts and fingerprints                     test_data_faults.py
#   LICENSE, CITATION.cff, versions, the wheel              test_package.py

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from torch import nn

# Property tests run many small tensor ops; a wall-clock deadline would only measure machine load.
settings.register_profile(
    "multimix", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("multimix")

# Under pytest-xdist (`make test` runs two workers) each worker takes one core; alone, a run takes two.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


class Encoder(nn.Module):
    """A two-layer MLP encoder."""

    def __init__(self, d_in: int = 6, d: int = 16) -> None:
        super().__init__()
        self.layer1 = nn.Linear(d_in, d)
        self.act = nn.ReLU()
        self.layer2 = nn.Linear(d, d)

    def forward(self, x):
        return self.layer2(self.act(self.layer1(x)))


class MLPNet(nn.Module):
    """encoder -> classifier ``fc``."""

    def __init__(self, d_in: int = 6, d: int = 16, k: int = 4) -> None:
        super().__init__()
        self.encoder = Encoder(d_in, d)
        self.fc = nn.Linear(d, k)

    def forward(self, x):
        return self.fc(self.encoder(x))


class ResidualNet(nn.Module):
    """Non-sequential: a skip connection around ``block`` and a functional ReLU between."""

    def __init__(self, d_in: int = 6, d: int = 16, k: int = 4) -> None:
        super().__init__()
        self.stem = nn.Linear(d_in, d)
        self.block = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
        self.head = nn.Linear(d, k)

    def forward(self, x):
        h = self.stem(x)
        h = torch.relu(h + self.block(h))
        return self.head(h)


@pytest.fixture
def mlp() -> MLPNet:
    torch.manual_seed(0)
    return MLPNet()


@pytest.fixture
def resnet() -> ResidualNet:
    torch.manual_seed(0)
    return ResidualNet()


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Generated datasets go to a per-session cache (subprocesses inherit it), never the user's."""
    os.environ["MULTIMIX_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return


# -- random draws --------------------------------------------------------------------------------


def gen(seed: int = 0) -> torch.Generator:
    """A seeded CPU generator: a test's draws, independent of the global RNG."""
    return torch.Generator().manual_seed(seed)


# -- order ----------------------------------------------------------------------------------------


def pytest_collection_modifyitems(config, items) -> None:
    """Run the slow tests (child processes, torchrun, long trainings) first, each file's in its order.

    Under ``-n 2`` (``make test``) the two workers then end on the quick tests, which fill the gaps,
    instead of one worker finishing a 40-second torchrun test while the other waits idle.
    """
    # A stable sort: the order within each group is kept
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# -- the CLI in a child process (tests that use it are marked slow) --------------------------------


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m multimix.cli ARGS`` in a child process, stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "multimix.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def torchrun_env() -> dict[str, str]:
    """The environment for a child ``torchrun``: this process's, without any torch.distributed
    variables it may carry, one thread per worker, and the venv's scripts first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    bin_dir = Path(sys.executable).parent
    env.update(OMP_NUM_THREADS="1", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    return env


def torchrun_failure(proc: subprocess.CompletedProcess, tail: int = 3000) -> str:
    """What a failed torchrun launch said, for an assertion message: every rank's error lines (Python
    tracebacks' last lines, C++ ``terminate called``/``what():``), which torchrun's summary of exit
    codes pushes far above the tail, then the tail of stderr."""
    text = f"{proc.stdout or ''}\n{proc.stderr or ''}"
    markers = ("Error", "error:", "terminate called", "what():", "Traceback", "Aborted")
    errors = [line for line in text.splitlines() if any(m in line for m in markers)]
    return "\n".join(["error lines:", *errors[-40:], "stderr tail:", (proc.stderr or "")[-tail:]])


# -- training runs -------------------------------------------------------------------------------

#: A run of a second or two: the toy problem, 300 examples, one thread. Tests override what they study.
TINY_RUN = {"dataset": "toy", "train_size": 300, "epochs": 2, "batch_size": 50, "threads": 1}


def tiny_config(**overrides):
    """TINY_RUN with ``overrides``, as a TrainConfig."""
    from multimix.train import TrainConfig

    return TrainConfig.from_dict({**TINY_RUN, **overrides})


# -- run folders ---------------------------------------------------------------------------------


def read_metrics(run_dir: Path) -> list[dict]:
    """The per-epoch records of a run, as written to its metrics.jsonl."""
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


# -- data files in the releases' formats, small, written by the tests --------------------------------


def write_idx_release(
    folder: Path, *, n_train: int = 40, n_test: int = 20, gz: bool = True, seed: int = 0
) -> dict:
    """The four IDX files of a (small) MNIST-family release in ``folder``; returns the arrays written."""
    from multimix.data.idx import write_idx

    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), array)
    return arrays
