"""MultiMix and Dense MultiMix in a LightningModule's ``training_step``, with real Lightning on the CPU:
training, the checkpoint's keys, exact resume from a checkpoint, and DDP over two processes (gloo).

The modules, the data and the seeded sampler: tests/lightning_modules.py; the torchrun worker:
tests/lightning_ddp_worker.py. The guide these tests back: docs/how-to/lightning.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from conftest import torchrun_env, torchrun_failure  # noqa: E402
from lightning_modules import (  # noqa: E402
    MLP,
    QUIET,
    Classifier,
    digit_tensors,
    loader,
    weights,
)

HERE = Path(__file__).resolve().parent
TIMEOUT = 300  # a hang fails the test instead of the suite


def trainer(root: Path, epochs: int, **kwargs: object) -> pl.Trainer:
    kwargs.setdefault("enable_checkpointing", False)
    return pl.Trainer(
        accelerator="cpu", max_epochs=epochs, default_root_dir=root, **QUIET, **kwargs
    )


#: Training set, batch size, learning rate, and the test accuracy to beat (chance is 0.1), per method.
#: Dense MultiMix classifies each of the 16 positions of a small map and learns more slowly.
SETTINGS = {"multimix": (512, 32, 0.01, 0.5), "dense": (1437, 32, 0.03, 0.3)}


@pytest.mark.parametrize("method", ["multimix", "dense"])
def test_a_mixer_in_training_step_trains_in_one_process(tmp_path, method):
    size, batch, lr, beat = SETTINGS[method]
    x, y, x_test, y_test = digit_tensors(size)
    module = Classifier(method, lr=lr)
    trainer(tmp_path, 2).fit(
        module, loader(x, y, batch, shuffle=True), loader(x_test, y_test, 512, shuffle=False)
    )
    steps = len(module.losses) // 2
    first, last = module.losses[:steps], module.losses[steps:]
    assert sum(last) / steps < sum(first) / steps  # the mixed loss falls from epoch 1 to epoch 2
    module.eval()
    with torch.no_grad():
        accuracy = (module.net(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy > beat


def test_the_checkpoint_has_each_weight_once_and_loads_strict_into_the_net_alone(tmp_path):
    x, y, _, _ = digit_tensors(64)
    module = Classifier("multimix")
    fit = trainer(tmp_path, 1)
    fit.fit(module, loader(x, y, 32, shuffle=True))
    fit.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]
    net_keys = [f"net.{k}" for k in MLP().state_dict()]
    assert sorted(state) == sorted([*net_keys, "mixer._extra_state"])
    alone = MLP()
    alone.load_state_dict(
        {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    )
    for k, v in alone.state_dict().items():
        assert torch.equal(v, module.net.state_dict()[k])
    assert state["mixer._extra_state"]["generator"] is not None  # the mixing draws are resumable


@pytest.mark.parametrize("method", ["multimix", "dense"])
def test_a_run_resumed_from_its_epoch_1_checkpoint_ends_with_the_uninterrupted_weights(
    tmp_path, method
):
    """Bitwise equal (torch.equal): the resumed run repeats the same operations on the same CPU from
    the same state — weights, Adam's moments, the mixer's generator (``mixer._extra_state``) and the
    data order (a function of the epoch, :class:`lightning_modules.EpochShuffle`) — so there is no
    rounding to tolerate. torch's global generator, which Lightning does not save, is left in a
    different state on purpose: nothing in training may draw from it."""
    x, y, _, _ = digit_tensors(96)
    data = loader(x, y, 32, shuffle=True)

    uninterrupted = Classifier(method)
    trainer(tmp_path / "a", 2).fit(uninterrupted, data)

    stopped = Classifier(method)
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1)
    trainer(tmp_path / "b", 1, enable_checkpointing=True, callbacks=[every_epoch]).fit(
        stopped, data
    )
    assert not all(
        torch.equal(a, b)
        for a, b in zip(weights(stopped).values(), weights(uninterrupted).values(), strict=True)
    )

    torch.manual_seed(12345)  # the global generator elsewhere than in the uninterrupted run
    resumed = Classifier(
        method, seed=7
    )  # other initial weights and draws: all must come from the file
    trainer(tmp_path / "c", 2).fit(resumed, data, ckpt_path=every_epoch.best_model_path)
    assert len(resumed.losses) == len(uninterrupted.losses) // 2  # only epoch 2 ran
    assert resumed.losses == uninterrupted.losses[len(resumed.losses) :]
    for name, value in weights(uninterrupted).items():
        assert torch.equal(weights(resumed)[name], value), name


@pytest.mark.slow
def test_ddp_over_two_processes_matches_one_process_and_resumes_exactly(tmp_path):
    """``strategy="ddp"``, two CPU processes (gloo) under torchrun, MultiMix with local scope: each rank
    mixes its own 16 examples, with a generator seeded alike on both ranks.

    What is compared, and why it is meaningful for a mixing method:

    - Both ranks end with equal weights (DDP's all-reduce keeps them in step; the mixer runs inside
      Lightning's DDP forward, so its draws do not desynchronise anything, and the check that refuses
      a mixer outside any DDP forward does not fire).
    - They equal a one-process run that does what DDP computes: each step, the two ranks' batches (as
      recorded by the worker) concatenated, each half mixed by its own mixer whose generator is seeded
      as that rank's, and the loss the mean of the halves' losses — whose gradient is DDP's average of
      the ranks' gradients. Equal to 1e-5: the average is taken by an all-reduce in DDP and by autograd
      here, which round differently (about 1e-7 per step), and 8 Adam steps amplify that a little.
    - A DDP run stopped after epoch 1 and resumed from its checkpoint by a fresh Trainer ends with the
      uninterrupted run's weights bitwise (same operations, same states; the checkpoint written by rank 0
      holds a generator state that is every rank's, since they are seeded alike).
    """
    out = tmp_path / "out"
    out.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(HERE / "lightning_ddp_worker.py"),
        str(out),
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=TIMEOUT, env=torchrun_env(), cwd=tmp_path
    )
    assert done.returncode == 0, torchrun_failure(done)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]

    for name, value in ranks[0]["weights"].items():
        assert torch.equal(ranks[1]["weights"][name], value), name
        assert torch.equal(ranks[0]["resumed"][name], value), name
        assert torch.equal(ranks[1]["resumed"][name], value), name

    batches = [
        (torch.cat([x0, x1]), torch.cat([y0, y1]))
        for (x0, y0), (x1, y1) in zip(ranks[0]["batches"], ranks[1]["batches"], strict=True)
    ]
    assert len(batches) == 8
    assert not torch.equal(batches[0][0][:16], batches[0][0][16:])  # the ranks saw different data
    one = Classifier("multimix", seed=0, splits=2)
    trainer(tmp_path / "one", 1).fit(one, DataLoader(batches, batch_size=None))
    for name, value in ranks[0]["weights"].items():
        torch.testing.assert_close(weights(one)[name], value, rtol=0, atol=1e-5)
