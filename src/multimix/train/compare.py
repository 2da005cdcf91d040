"""Compare methods over seeds: run each (method, seed), then tabulate and plot.

Runs land in ``out/<method>/seed<k>/``. A run whose summary already exists with the same settings is
reused, and a killed one is resumed, so an interrupted comparison continues where it stopped.
Each run's test accuracy is read at the epoch chosen on validation accuracy.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from multimix.train import checkpoint
from multimix.train.config import TrainConfig
from multimix.train.trainer import train

log = logging.getLogger(__name__)

CSV_FIELDS = ["method", "seed", "best_epoch", "val_acc", "test_acc", "final_test_acc", "time_per_epoch_s"]


def _run_one(config_dict: dict[str, Any], out: str) -> dict[str, Any]:
    """Train one run, or reuse its finished summary. Top-level so worker processes can pickle it."""
    config = TrainConfig(**config_dict)
    out = Path(out)
    if (out / "checkpoint.pt").exists():
        saved = TrainConfig(**checkpoint.load(out / "checkpoint.pt")["config"])
        if diffs := config.differences(saved):
            # A run made with other settings (e.g. before a default changed): keep it, out of the way.
            stale = out.with_name(f"{out.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
            out.rename(stale)
            log.warning("%s was trained with other settings (%s); moved to %s and retraining", out, "; ".join(diffs), stale)
        elif (out / "summary.json").exists():
            return json.loads((out / "summary.json").read_text())
    return train(config, out, resume=True, progress=False)


def run_comparison(
    base: TrainConfig,
    *,
    methods: list[str],
    seeds: list[int],
    out: str | Path,
    jobs: int = 1,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    """Train every (method, seed) pair; returns one row per run (see :data:`CSV_FIELDS`)."""
    variants = {method: dataclasses.replace(base, method=method) for method in methods}
    return run_variants(variants, seeds=seeds, out=out, jobs=jobs, progress=progress)


def run_variants(
    variants: dict[str, TrainConfig],
    *,
    seeds: list[int],
    out: str | Path,
    jobs: int = 1,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    """Train every (labelled config, seed) pair into ``out/<label>/seed<k>``; one row per run.

    The row's ``method`` is the variant's label, so ablations (several settings of one method) and
    comparisons (several methods) are tabulated alike.
    """
    out = Path(out)
    tasks = []
    for label, variant in variants.items():
        for seed in seeds:
            config = dataclasses.replace(variant, seed=seed)
            config.validate()
            tasks.append((label, config, out / label / f"seed{seed}"))
    summaries: dict[Path, dict[str, Any]] = {}
    bar = tqdm(total=len(tasks), desc="runs", unit="run", disable=None if progress is None else not progress)
    if jobs <= 1:
        for label, config, run_out in tasks:
            bar.set_postfix(run=label, seed=config.seed)
            summaries[run_out] = _run_one(config.to_dict(), str(run_out))
            bar.update(1)
    else:
        # Separate processes (spawned: no forked torch state), each with its share of the cores.
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_run_one, c.to_dict(), str(o)): o for _, c, o in tasks}
            for future in as_completed(futures):
                summaries[futures[future]] = future.result()
                bar.update(1)
    bar.close()
    rows = []
    for label, config, run_out in tasks:
        s = summaries[run_out]
        rows.append({
            "method": label,
            "seed": config.seed,
            "best_epoch": s["best"]["epoch"],
            "val_acc": s["best"]["val_acc"],
            "test_acc": s["best"]["test_acc"],
            "final_test_acc": s["final"]["test_acc"],
            "time_per_epoch_s": s["time_per_epoch_s"],
        })
    return rows


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation per method, in the order methods first appear."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    erm_time = [r["time_per_epoch_s"] for r in rows if r["method"] == "erm"]
    out = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]

        def stats(key: str) -> tuple[float, float]:
            values = [r[key] for r in mine]
            return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

        t = statistics.mean(r["time_per_epoch_s"] for r in mine)
        out.append({
            "method": method,
            "runs": len(mine),
            "val_acc": stats("val_acc"),
            "test_acc": stats("test_acc"),
            "time_per_epoch_s": t,
            "time_vs_erm": t / statistics.mean(erm_time) if erm_time else None,
        })
    return out


def format_table(summary: list[dict[str, Any]]) -> str:
    """A Markdown table: accuracy in % as mean ± std over seeds."""
    lines = [
        "| method | runs | val acc (%) | test acc (%) | time / epoch | vs ERM |",
        "|---|---|---|---|---|---|",
    ]
    for s in summary:
        ratio = f"{s['time_vs_erm']:.2f}×" if s["time_vs_erm"] is not None else "—"
        lines.append(
            f"| {s['method']} | {s['runs']} | {100 * s['val_acc'][0]:.2f} ± {100 * s['val_acc'][1]:.2f} | "
            f"{100 * s['test_acc'][0]:.2f} ± {100 * s['test_acc'][1]:.2f} | {s['time_per_epoch_s']:.2f} s | {ratio} |"
        )
    return "\n".join(lines)


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    checkpoint.write_text(path, buffer.getvalue())


def plot_bars(path: str | Path, summary: list[dict[str, Any]], *, title: str) -> None:
    """Bar chart of test accuracy (mean ± std over seeds) per method, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    names = [s["method"] for s in summary]
    means = [100 * s["test_acc"][0] for s in summary]
    stds = [100 * s["test_acc"][1] for s in summary]
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2, 3.6), dpi=120)
    ax.bar(names, means, yerr=stds, capsize=4, color="#4C72B0")
    low = min(m - s for m, s in zip(means, stds))
    ax.set_ylim(max(0.0, low - 3), min(100.0, max(m + s for m, s in zip(means, stds)) + 1.5))
    for i, (m, s) in enumerate(zip(means, stds)):
        ax.text(i, m + s + 0.2, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    checkpoint.atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
