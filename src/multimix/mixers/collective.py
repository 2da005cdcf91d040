"""Gathering a batch over the processes of ``torch.distributed``, for mixing over the global batch.

MultiMix with ``scope="global"`` interpolates tuples drawn from every process's examples. Each process
holds its own rows; these helpers give every process all of them, in rank order, with gradients flowing
back to the process that owns each row (an all-gather whose backward sums the gradients of every copy
of a row into its owner's: a reduce-scatter). Shares may differ in size (a global batch
that does not split evenly): rows are padded to the largest share for the collective and the padding
is dropped after it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

# torch >= 2.13 names these *_single (the *_tensor names warn that they are deprecated).
_all_gather_into = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_into = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def _gloo() -> bool:
    return dist.get_backend() == "gloo"


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 whose backward returns each process the summed gradient of its rows.

    Plain ``torch.distributed`` collectives, not the functional collectives: at mixing sizes (a few
    kilobytes) a collective costs its latency, and the functional version adds a layer of its own
    to every call. On NCCL: all-gather forward, reduce-scatter backward. On gloo, whose all-reduce
    answers sooner than its all-gather: all-reduce of slotted rows forward, all-reduce of the
    gradient backward, then this process's slice (the same sums).

    ``benchmarks/results/global_scope.md`` measures global scope's step with these choices (gloo,
    two processes); no result file compares the collectives themselves, a case
    ``benchmarks/global_scope.py`` would hold.
    """

    @staticmethod
    def forward(ctx: Any, rows: Tensor) -> Tensor:
        world_size, rank, length = dist.get_world_size(), dist.get_rank(), rows.shape[0]
        ctx.rank, ctx.length = rank, length
        if _gloo():
            # gloo's all-reduce answers sooner than its all-gather (see the class docstring): each
            # process fills its own slot of a zero tensor and the sum is everyone's rows.
            out = rows.new_zeros(world_size * length, *rows.shape[1:])
            out[rank * length : (rank + 1) * length] = rows
            dist.all_reduce(out)
            return out
        out = rows.new_empty(world_size * length, *rows.shape[1:])
        _all_gather_into(out, rows.contiguous())
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        if not _gloo():
            mine = grad.new_empty(ctx.length, *grad.shape[1:])
            _reduce_scatter_into(mine, grad)
            return mine
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.length : (ctx.rank + 1) * ctx.length]


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def share(total: int, rank: int, world_size: int) -> slice:
    """The contiguous share of ``total`` items that ``rank`` takes: the first ``total % world_size``
    ranks take one more, so shares differ by at most one and cover every item once, in order."""
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def gather_sizes(local: int, device: torch.device) -> list[int]:
    """Every process's number of rows, in rank order (one small all-gather; read on the host)."""
    _, size = world()
    if size == 1:
        return [local]
    sizes = torch.zeros(size, dtype=torch.int64, device=device)
    sizes[dist.get_rank()] = local
    dist.all_reduce(sizes)  # each process fills its own slot: the sum holds every size
    return sizes.tolist()


def gather_rows(rows: Tensor, sizes: list[int]) -> Tensor:
    """All processes' ``rows`` (b_r, ...), concatenated in rank order: (Σ b_r, ...).

    Differentiable: the gradient of the result reaches each process's own ``rows``. ``sizes`` is
    :func:`gather_sizes`'s answer (the same on every process).
    """
    if len(sizes) == 1:
        return rows
    longest = max(sizes)
    padded = (
        rows
        if rows.shape[0] == longest
        else torch.cat([rows, rows.new_zeros(longest - rows.shape[0], *rows.shape[1:])])
    )
    # Function.apply is unannotated in torch; the result is forward's Tensor.
    gathered = _GatherRows.apply(padded)  # type: ignore[no-untyped-call]
    if min(sizes) == longest:
        return gathered
    # strict: gathered holds len(sizes) padded shares of `longest` rows, one per process.
    return torch.cat([part[:n] for part, n in zip(gathered.split(longest), sizes, strict=True)])


def gather_packed(tensors: list[Tensor | None], sizes: list[int]) -> list[Tensor | None]:
    """:func:`gather_rows` of several batch-first tensors in one collective (each collective has a
    latency of its own): flattened to (b, ·), packed side by side in their common floating dtype
    (float32 at least, so that targets keep their precision under autocast), gathered, and split
    back, each in its own dtype and shape. Differentiable; None entries stay None."""
    present = [t for t in tensors if t is not None]
    if len(sizes) == 1 or not present:
        return list(tensors)
    dtype = torch.float32
    for tensor in present:
        dtype = torch.promote_types(dtype, tensor.dtype)
    flat = [t.reshape(t.shape[0], -1) for t in present]
    gathered = gather_rows(torch.cat([f.to(dtype) for f in flat], dim=1), sizes)
    parts = iter(gathered.split([f.shape[1] for f in flat], dim=1))
    total = gathered.shape[0]
    out: list[Tensor | None] = []
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        part = next(parts).to(t.dtype).reshape(total, *t.shape[1:])
        # What carried no gradient (targets, attention) carries none after the gather either.
        out.append(part if t.requires_grad else part.detach())
    return out


__all__ = ["world", "share", "gather_sizes", "gather_rows", "gather_packed"]
