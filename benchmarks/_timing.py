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


def interleaved_samples(
    cases: dict[str, Callable[[], object]],
    device: torch.device,
    rounds: int,
    *,
    min_block_s: float = 0.02,
    warmup: int = 3,
) -> dict[str, list[float]]:
    """Seconds per call of each case in each of ``rounds`` rounds (blocks of calls ≥ min_block_s).

    Every round times every case once; the order rotates from round to round, so that no case always
    runs first (after a pause) or right after the same neighbour.
    """
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
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = cases[name]
            sync(device)
            t0 = time.perf_counter()
            for _ in range(blocks[name]):
                fn()
            sync(device)
            samples[name].append((time.perf_counter() - t0) / blocks[name])
    return samples


def interleaved(
    cases: dict[str, Callable[[], object]],
    device: torch.device,
    rounds: int,
    *,
    min_block_s: float = 0.02,
    warmup: int = 3,
) -> dict[str, float]:
    """Median seconds per call of each case over ``rounds`` rounds (blocks of calls ≥ min_block_s)."""
    samples = interleaved_samples(cases, device, rounds, min_block_s=min_block_s, warmup=warmup)
    return {name: statistics.median(values) for name, values in samples.items()}


def paired_ratios(
    samples: dict[str, list[float]], baseline: str
) -> dict[str, tuple[float, float, float]]:
    """Each case against ``baseline`` round by round: (median, first quartile, third quartile) of the
    per-round ratios. A ratio of two blocks timed seconds apart is not moved by the machine slowing
    down or speeding up between rounds, which a ratio of two medians is."""
    out = {}
    for name, values in samples.items():
        ratios = [a / b for a, b in zip(values, samples[baseline], strict=True)]
        q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
        out[name] = (statistics.median(ratios), q1, q3)
    return out
