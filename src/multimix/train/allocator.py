"""The CPU memory allocator of a training process: keep large buffers instead of handing them back.

glibc's ``malloc`` serves every allocation above its mmap threshold (at most 32 MiB by default) with
fresh pages from the kernel and returns them on ``free``. A tensor of 64 MiB — Dense MultiMix's
(n, r, K) logits at n = 10 000, r = 16, K = 100, or at n = 1000, K = 1000 — is then page-faulted in,
page by page, every time a step allocates it: on the 2-core machine of benchmarks/results/scaling.md one
such allocation costs ~16 ms, four times the arithmetic of the elementwise operation that asked for it,
and a Dense MultiMix step at those shapes ran 12× ERM's instead of the 3–4× its arithmetic predicts.
Raising the threshold keeps those buffers in the heap, where the next step finds them.

The training loop (:func:`multimix.train.train`) calls :func:`keep_large_buffers` for CPU runs; the
library's mixers never do: a process-wide setting is the application's choice. Call it at the start of
your own CPU training loop for the same effect, or set ``MALLOC_MMAP_THRESHOLD_`` (or preload jemalloc /
tcmalloc) yourself: then it leaves glibc alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

from multimix._validation import check_int

log = logging.getLogger(__name__)

#: glibc's ``mallopt`` parameter numbers (malloc.h): the mmap threshold, and the trim threshold (free
#: memory at the heap's top beyond which it is handed back: a freed buffer on top would be, at the default).
M_MMAP_THRESHOLD = -3
M_TRIM_THRESHOLD = -1
#: The threshold :func:`keep_large_buffers` sets, in bytes: allocations below it come from the heap.
DEFAULT_THRESHOLD = 1 << 30

_applied: int | None = None


def _user_tuned_malloc() -> bool:
    """Whether the environment already chooses the allocator's behaviour (then we leave it alone)."""
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        return True
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return True
    preload = os.environ.get("LD_PRELOAD", "")
    return "jemalloc" in preload or "tcmalloc" in preload or "mimalloc" in preload


def keep_large_buffers(threshold_bytes: int = DEFAULT_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds to ``threshold_bytes``, so that freed buffers below it are reused.

    Process-wide and idempotent. A no-op (returning False) off Linux, without glibc, or when the
    environment already tunes the allocator (``MALLOC_*_`` variables, ``GLIBC_TUNABLES``, a preloaded
    jemalloc/tcmalloc/mimalloc). The cost: memory a step freed stays with the process (its resident size
    stays near its peak) instead of returning to the system between steps.

    Returns:
        True when the threshold is (now or already) set.
    """
    global _applied
    threshold_bytes = check_int(threshold_bytes, "threshold_bytes", low=0, high=2**31 - 1)
    if _applied is not None and _applied >= threshold_bytes:
        return True
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc" or _user_tuned_malloc():
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None or not all(
        mallopt(param, ctypes.c_int(threshold_bytes)) == 1
        for param in (M_TRIM_THRESHOLD, M_MMAP_THRESHOLD)
    ):
        log.debug(
            "glibc refused a trim or mmap threshold of %d bytes; large buffers may not be reused",
            threshold_bytes,
        )
        return False
    _applied = threshold_bytes
    log.debug(
        "glibc's trim and mmap thresholds set to %d bytes: large buffers are reused",
        threshold_bytes,
    )
    return True


__all__ = ["keep_large_buffers", "DEFAULT_THRESHOLD"]
