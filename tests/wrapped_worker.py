"""Run by tests/test_wrapped.py under ``torchrun --nproc_per_node 2`` (gloo, CPU): mixers on wrapped and
sharded models, each rank training on its own data.

For every mixer, three runs of the same steps from the same weights:

- ``ddp``: the mixer built on ``DistributedDataParallel(model)``;
- ``reference``: one process, no collective, the two ranks' batches each through a mixer seeded as that
  rank's (two mixers on one model), the loss the mean of the two: its gradient is the mean of the ranks'
  gradients, which DDP's all-reduce computes. Mixing is per rank (local scope), so "the concatenated
  batches" are mixed as each rank mixes its half;
- ``fsdp``: the model sharded with ``fully_shard`` (its block and the root), the mixer built on it.

Rank 0 writes ``{name: {"ranks": max |w_rank0 - w_rank1|, "ddp_vs_reference": ..., "fsdp_vs_ddp": ...}}``
and what the refusals said to ``sys.argv[1]`` (JSON).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP

from multimix import DenseMultiMix, EMATeacher, ManifoldMixup, Mixup, MultiMix, soft_cross_entropy
from multimix.train.distributed import process_group

K, STEPS, B = 4, 3, 6


class Net(nn.Module):
    """A small conv net: ``block`` gives a (b, 8, 4, 4) map (16 positions), ``fc`` the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.block(self.stem(x))).flatten(1))


def net() -> Net:
    torch.manual_seed(0)
    return Net()


def batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(B, 3, 4, 4, generator=g), torch.randint(0, K, (B,), generator=g)


def gen(rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(100 + rank)


MIXERS: dict[str, Callable[[nn.Module, torch.Generator], nn.Module]] = {
    "mixup": lambda m, g: Mixup(m, alpha=1.0, num_classes=K, generator=g),
    "manifold": lambda m, g: ManifoldMixup(m, layers=["block"], num_classes=K, generator=g),
    "multimix": lambda m, g: MultiMix(m, classifier="fc", n=20, num_classes=K, generator=g),
    "dense": lambda m, g: DenseMultiMix(
        m, features="block", classifier="fc", n=10, num_classes=K, generator=g
    ),
    # Tuples drawn over both ranks' rows (an all-gather inside the forward); seeded alike on every rank
    "multimix_global": lambda m, g: MultiMix(
        m,
        classifier="fc",
        n=20,
        num_classes=K,
        scope="global",
        generator=torch.Generator().manual_seed(7),
    ),
}
#: Mixers whose draws involve every rank: no one-process reference of the kind above.
COLLECTIVE = {"multimix_global"}


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as plain tensors (an FSDP model's shards gathered), without wrapper prefixes."""
    out = {}
    for key, value in model.state_dict().items():
        value = value.full_tensor() if isinstance(value, DTensor) else value
        out[key.removeprefix("module.")] = value.detach().clone()
    return out


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return max((a[k] - b[k]).abs().max().item() for k in a)


def train(mixers: list[nn.Module], params, batches: Callable[[int], list[tuple]]) -> None:
    """SGD steps; the loss of each step is the mean over (mixer, batch) pairs."""
    opt = torch.optim.SGD(params, lr=0.5)
    for step in range(STEPS):
        opt.zero_grad()
        losses = [
            soft_cross_entropy(*mixer(x, y))
            for mixer, (x, y) in zip(mixers, batches(step), strict=True)
        ]
        torch.stack(losses).mean().backward()
        opt.step()


def ranks_differ(state: dict[str, torch.Tensor]) -> float:
    gathered: list[dict[str, torch.Tensor] | None] = [None, None]
    dist.all_gather_object(gathered, state)
    return max_diff(gathered[0], gathered[1])


def compare(name: str, rank: int) -> dict[str, float]:
    make = MIXERS[name]
    model = net()
    ddp = DDP(model)
    train([make(ddp, gen(rank))], ddp.parameters(), lambda s: [batch(s, rank)])
    ddp_state = full_state(model)

    reference = None
    if name not in COLLECTIVE:
        alone = net()
        pair = [make(alone, gen(0)), make(alone, gen(1))]
        for mixer in pair:  # a computation of this process alone, on purpose
            mixer.check_gradient_sync = False
        train(pair, alone.parameters(), lambda s: [batch(s, 0), batch(s, 1)])
        reference = max_diff(ddp_state, full_state(alone))

    sharded = net()
    fully_shard(sharded.block)
    fully_shard(sharded)
    train([make(sharded, gen(rank))], sharded.parameters(), lambda s: [batch(s, rank)])
    fsdp_state = full_state(sharded)

    # The mixer's hooks placed before FSDP's (the mixer built, then the model sharded)
    early = net()
    mixer = make(early, gen(rank))
    fully_shard(early.block)
    fully_shard(early)
    train([mixer], early.parameters(), lambda s: [batch(s, rank)])
    return {
        "fsdp_mixer_first_vs_ddp": max_diff(full_state(early), ddp_state),
        "ranks": ranks_differ(ddp_state),
        "ddp_vs_reference": reference,
        "fsdp_vs_ddp": max_diff(fsdp_state, ddp_state),
        "fsdp_ranks": ranks_differ(fsdp_state),
        "moved": max_diff(ddp_state, full_state(net())),
    }


def wrapped_after(rank: int) -> dict[str, object]:
    """The mixer built on the model, DDP wrapped around it afterwards: refused, then run through it."""
    model = net()
    mixer = MultiMix(model, classifier="fc", n=20, num_classes=K, generator=gen(rank))
    ddp = DDP(model)
    x, y = batch(0, rank)
    try:
        mixer(x, y)
        refusal = None
    except RuntimeError as err:
        refusal = str(err)
    mixer.model = ddp  # what the message asks for
    train([mixer], ddp.parameters(), lambda s: [batch(s, rank)])
    return {"refusal": refusal, "ranks": ranks_differ(full_state(model))}


class Holder(nn.Module):
    """A module holding a net and its mixer whose forward returns the loss, as a LightningModule's
    training_step does: DDP around the holder synchronises the mixer's run of the net."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.net = net()
        self.mixer = MultiMix(self.net, classifier="fc", n=20, num_classes=K, generator=gen(rank))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(*self.mixer(x, y))


def inside_ddp_forward(rank: int) -> dict[str, float]:
    holder = DDP(Holder(rank))
    opt = torch.optim.SGD(holder.parameters(), lr=0.5)
    for step in range(STEPS):
        opt.zero_grad()
        holder(*batch(step, rank)).backward()
        opt.step()
    return {"ranks": ranks_differ(full_state(holder.module.net))}


def unsynchronised(rank: int) -> dict[str, float]:
    """The control: the check switched off on a plain model, each rank trains its own copy."""
    model = net()
    mixer = MultiMix(model, classifier="fc", n=20, num_classes=K, generator=gen(rank))
    mixer.check_gradient_sync = False
    train([mixer], model.parameters(), lambda s: [batch(s, rank)])
    return {"ranks": ranks_differ(full_state(model))}


def teacher_on_sharded(rank: int) -> dict[str, object]:
    """An EMA teacher on a sharded model: refused when built after sharding; built before and sharded
    alike, it follows the student (compared with the same teacher under DDP)."""
    model = net()
    fully_shard(model)
    try:
        EMATeacher(model)
        refusal = None
    except (ValueError, TypeError, RuntimeError) as err:
        refusal = str(err)

    states = []
    for sharded in (False, True):
        student = net()
        teacher = EMATeacher(student, momentum=0.5)
        if sharded:
            fully_shard(student)
            fully_shard(teacher.module)
            runner: nn.Module = student
        else:
            runner = DDP(student)
        mixer = MultiMix(
            runner,
            classifier="fc",
            n=20,
            num_classes=K,
            generator=gen(rank),
            teacher=teacher,
            distill_weight=1.0,
        )
        opt = torch.optim.SGD(runner.parameters(), lr=0.5)
        for step in range(STEPS):
            opt.zero_grad()
            soft_cross_entropy(*mixer(*batch(step, rank))).backward()
            opt.step()
            teacher.update()
        states.append(full_state(teacher.module))
    return {"refusal": refusal, "teacher_fsdp_vs_ddp": max_diff(states[1], states[0])}


def main() -> None:
    torch.set_num_threads(1)
    # The library's own group: it frees the runs' DDP wrappers (held in cycles by the mixers' hooks)
    # and waits for every rank before tearing gloo down; a bare destroy_process_group let a rank abort
    # at exit now and then ("terminate called without an active exception").
    with process_group("cpu") as d:
        rank = d.rank
        results: dict[str, object] = {name: compare(name, rank) for name in MIXERS}
        results["wrapped_after"] = wrapped_after(rank)
        results["inside_ddp_forward"] = inside_ddp_forward(rank)
        results["unsynchronised"] = unsynchronised(rank)
        results["teacher"] = teacher_on_sharded(rank)
        if rank == 0:
            with open(sys.argv[1], "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
