"""Interleaved timing shared by the benchmarks: every case is timed in every round, in turn, so
load on a shared machine hits all sides of a ratio alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    cases: dict[str, Callable[[], object]],
    device: torch.device,
    rounds: int,
    *,
    min_block_s: float = 0.02,
    warmup: int = 3,
) -> dict[str, float]:
    """Median seconds per call of each case over ``rounds`` rounds (blocks of calls ≥ min_block_s)."""
    blocks = {}
    for name, fn in cases.items():
        for _ in range(warmup):
            fn()
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        once = max(time.perf_counter() - t0, 1e-7)
        blocks[name] = max(1, int(min_block_s / once))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(blocks[name]):
                fn()
            sync(device)
            samples[name].append((time.perf_counter() - t0) / blocks[name])
    return {name: statistics.median(values) for name, values in samples.items()}
