"""Gathering a batch over the processes of ``torch.distributed``, for mixing over the global batch.

MultiMix with ``scope="global"`` interpolates tuples drawn from every process's examples. Each process
holds its own rows; these helpers give every process all of them, in rank order, with gradients flowing
back to the process that owns each row (PyTorch's differentiable all-gather, whose backward sums the
gradients of every copy of a row into its owner's: a reduce-scatter). Shares may differ in size (a global batch
that does not split evenly): rows are padded to the largest share for the collective and the padding
is dropped after it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

try:  # torch >= 2.6: the traceable functional collective (torch.compile can see through it)
    from torch.distributed._functional_collectives import all_gather_single as _all_gather_differentiable
except ImportError:  # older torch: the torch.distributed.nn version, deprecated since
    import torch.distributed.nn.functional as _dist_nn

    def _all_gather_differentiable(tensor: Tensor, gather_dim: int, group) -> Tensor:
        return torch.cat(_dist_nn.all_gather(tensor, group=group), dim=gather_dim)


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
    mine = torch.tensor([local], dtype=torch.int64, device=device)
    out = torch.empty(size, dtype=torch.int64, device=device)
    dist.all_gather_into_tensor(out, mine)
    return out.tolist()


def gather_rows(rows: Tensor, sizes: list[int]) -> Tensor:
    """All processes' ``rows`` (b_r, ...), concatenated in rank order: (Σ b_r, ...).

    Differentiable: the gradient of the result reaches each process's own ``rows``. ``sizes`` is
    :func:`gather_sizes`'s answer (the same on every process).
    """
    if len(sizes) == 1:
        return rows
    longest = max(sizes)
    padded = rows if rows.shape[0] == longest else torch.cat([rows, rows.new_zeros(longest - rows.shape[0], *rows.shape[1:])])
    if rows.requires_grad:
        gathered = _all_gather_differentiable(padded.contiguous(), 0, dist.group.WORLD)
    else:
        gathered = padded.new_empty(len(sizes) * longest, *padded.shape[1:])
        dist.all_gather_into_tensor(gathered, padded.contiguous())
    if min(sizes) == longest:
        return gathered
    return torch.cat([part[:n] for part, n in zip(gathered.split(longest), sizes)])


__all__ = ["world", "share", "gather_sizes", "gather_rows"]
