"""Recognising models sharded by FSDP, for the mixers' gradient-sync check and the EMA teacher."""

from __future__ import annotations

from torch import nn


def _fsdp_classes() -> tuple[type, ...]:
    """FSDP2's ``FSDPModule`` (what ``fully_shard`` makes a module) and FSDP1's wrapper, where this torch
    build has them."""
    try:
        import torch.distributed.fsdp as fsdp
    except ImportError:  # pragma: no cover - torch built without distributed support
        return ()
    found = (getattr(fsdp, name, None) for name in ("FSDPModule", "FullyShardedDataParallel"))
    return tuple(cls for cls in found if isinstance(cls, type))


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` or one of its submodules is sharded by FSDP (``fully_shard`` or the wrapper)."""
    classes = _fsdp_classes()
    return bool(classes) and any(isinstance(m, classes) for m in model.modules())


def reshard(model: nn.Module) -> None:
    """Return every ``fully_shard`` unit of ``model`` to its sharded parameters.

    FSDP2 keeps the root's parameters gathered after a forward (its backward would gather them again);
    a module that never runs backward, such as an EMA teacher, stays gathered until told.
    """
    for module in model.modules():
        release = getattr(module, "reshard", None)
        if callable(release) and isinstance(module, _fsdp_classes()):
            release()
