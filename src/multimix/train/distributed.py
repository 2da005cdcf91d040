"""Process-group plumbing for training under ``torchrun``, kept out of the training loop.

``torchrun`` starts one process per device and tells each, through environment variables, who it is
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and where to meet the others (``MASTER_ADDR``/``PORT``).
:func:`process_group` reads them, joins the group (gloo on the CPU, NCCL on CUDA) and leaves it at
the end; outside torchrun it yields a one-process :class:`Dist` and touches nothing, so the same
training code runs either way.

What is synchronised across ranks, and how:

- the initial weights: every rank seeds the same generator before building the model, and
  ``DistributedDataParallel`` broadcasts rank 0's weights and buffers anyway;
- the data order: every rank draws the same seeded permutation of the training set and takes its
  contiguous share (:func:`share`) of each global batch;
- gradients: averaged by DDP during backward; the trainer weights each rank's loss so that the average
  is the gradient of the global batch's mean loss, whatever the split (:func:`all_reduce_sum`);
- metrics: sums reduced to every rank; only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist

# Imported before any process group exists, on purpose. The group must end in destroy_process_group,
# not during interpreter finalisation, where tearing down its gloo threads can abort a process whose
# run succeeded ("terminate called without an active exception"; pytorch PR 179291). This module,
# which DDP may import, has functions with ``group=group.WORLD`` defaults: imported after init, they
# would hold the group for the interpreter's life; imported now, the defaults are None.
if dist.is_available():
    import torch.distributed.nn.functional
from torch import Tensor, nn

from multimix.mixers.collective import share

log = logging.getLogger(__name__)

#: Environment variables torchrun sets in every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Dist:
    """Where this process stands in the group: rank in [0, world_size), local_rank on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one process that writes files and logs progress."""
        return self.rank == 0


def from_environment() -> Dist | None:
    """The :class:`Dist` torchrun's environment describes, or None when not started by torchrun."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    missing = [v for v in TORCHRUN_VARIABLES if v not in os.environ]
    if missing:
        raise RuntimeError(
            f"incomplete torchrun environment: {', '.join(missing)} not set; start the run with "
            "torchrun (e.g. torchrun --standalone --nproc_per_node 2 --no-python multimix train ...)"
        )
    return Dist(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
    )


def rank_device(device: str, d: Dist) -> torch.device:
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun (one GPU per process)."""
    dev = torch.device(device)
    if dev.type == "cuda" and d.world_size > 1 and dev.index is None:
        return torch.device("cuda", d.local_rank)
    return dev


@contextlib.contextmanager
def process_group(device: str, *, timeout_s: float = 600.0) -> Iterator[Dist]:
    """Join torchrun's process group for the duration of the block (a no-op outside torchrun).

    Backend: NCCL when training on CUDA, gloo otherwise. ``timeout_s`` bounds how long a collective
    waits for a rank that stopped answering, so that a rank failing silently ends the run with an
    error instead of a hang (torchrun also stops every process as soon as one exits with an error).
    """
    env = from_environment()
    if env is None or dist.is_initialized():
        yield env or Dist()
        return
    dev = rank_device(device, env)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, timeout=timeout, device_id=dev)
    else:  # no device_id argument at all, not even None
        dist.init_process_group(backend=backend, timeout=timeout)
    log.debug("rank %d/%d joined the %s process group", env.rank, env.world_size, backend)
    try:
        yield env
    except BaseException:
        dist.destroy_process_group()  # torchrun stops the other ranks: no barrier that could wait for them
        raise
    _release_group_holders()
    # Every rank reaches the end before any tears its connections down: a gloo rank that destroys its
    # group while another still talks to it can abort ("terminate called without an active exception").
    dist.barrier()
    dist.destroy_process_group()


def _release_group_holders() -> None:
    """Free the run's unreachable objects now, while the process group is still up.

    The run ends with the model, its mixer (whose hooks point back at the model) and the DDP wrapper
    in reference cycles, so the wrapper's reducer, which holds the group, would outlive
    destroy_process_group until the garbage collector next ran, possibly at interpreter finalisation.
    """
    gc.collect()


def wrap_model(
    model: nn.Module,
    d: Dist,
    device: torch.device,
    *,
    sync_bn: bool,
    compile: bool,
    find_unused_parameters: bool,
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """``(model, net, eval_net)``: the model (with SyncBatchNorm if asked, under torchrun), what a
    training step calls (it in ``DistributedDataParallel`` under torchrun, compiled if asked) and
    what evaluation calls (outside DDP, whose forward expects every rank to take part, while each
    rank evaluates its own share of the data)."""
    if sync_bn and d.world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = model
    if d.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters,
        )
    if compile:
        # dynamo does not guard on module hooks: a graph traced for an earlier run in this process (a
        # model of the same class, without a mixer's hooks) would be reused, and nothing mixed.
        torch._dynamo.reset()
        net = _compiled(net)
    eval_net = net if d.world_size == 1 else (_compiled(model) if compile else model)
    return model, net, eval_net


def _compiled(module: nn.Module) -> nn.Module:
    """``torch.compile(module)``. Its stubs type the result as a plain callable; given a module, it
    returns an ``OptimizedModule``, itself an ``nn.Module`` that wraps the original."""
    return cast(nn.Module, torch.compile(module))


def _group_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the active process group (0 without one)."""
    return dist.get_rank() if _group_active() else 0


def world_size() -> int:
    """Processes in the active process group (1 without one)."""
    return dist.get_world_size() if _group_active() else 1


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The sum over ranks (in place, returned); the tensor itself in a single process."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: object, d: Dist) -> object:
    """Rank 0's ``obj`` on every rank (pickled between our own processes; nothing read from disk)."""
    if d.world_size == 1:
        return obj
    box = [obj if d.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj: object, d: Dist) -> list[object]:
    """Every rank's ``obj``, in rank order."""
    if d.world_size == 1:
        return [obj]
    out: list[object] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.world_size > 1:
        dist.barrier()


__all__ = [
    "Dist",
    "from_environment",
    "rank_device",
    "process_group",
    "wrap_model",
    "share",
    "rank",
    "world_size",
    "all_reduce_sum",
    "broadcast_object",
    "all_gather_objects",
    "barrier",
]
