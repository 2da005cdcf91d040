"""Compare methods over seeds: run each (method, seed), then tabulate and plot.

Runs land in ``out/<method>/seed<k>/``. A run whose summary already exists with the same settings is
reused, and a killed one is resumed, so an interrupted comparison continues where it stopped.
Each run's test accuracy is read at the epoch chosen on validation accuracy: that is the result.
Beside it, and named so as not to be mistaken for it, the tables carry the best test accuracy over
epochs — the MultiMix/AlignMixup papers' convention, optimistic because its epoch is chosen on the
test set — for comparison with their numbers (:data:`LEGEND`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import statistics
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from multimix.train import checkpoint
from multimix.train.checkpoint import CheckpointError
from multimix.train.config import TrainConfig
from multimix.train.errors import RunDiverged
from multimix.train.preflight import available_cpus, check_runnable
from multimix.train.run_folder import read_summary
from multimix.train.runlock import RunLock
from multimix.train.trainer import train
from multimix.train.workers import run_tasks

log = logging.getLogger(__name__)

CSV_FIELDS = [
    "method",
    "seed",
    "best_epoch",
    "val_acc",
    "test_acc",
    "final_test_acc",
    # the papers' convention: the highest test accuracy of any epoch (summary.json's
    # best_test_over_epochs); empty where the test set was not measured every epoch
    "best_test_acc_over_epochs",
    "time_per_epoch_s",
    "diverged",  # the epoch a run diverged in (its other figures empty); empty for a finished run
]

#: The two test figures' headings in the tables, each saying which it is.
TEST_HEADING = "test acc (%), epoch chosen on val."
BEST_TEST_HEADING = "best test acc over epochs (%), papers' convention, optimistic"

#: The line under every table, saying which test figure is which.
LEGEND = (
    f'"{TEST_HEADING}": at the epoch with the best validation accuracy — the result. '
    f'"{BEST_TEST_HEADING}": the highest test accuracy of any epoch, as the MultiMix/AlignMixup papers '
    "report it — its epoch is chosen on the test set, so it flatters every method; for comparison with "
    "the papers only (— where the test set was not measured every epoch: `--test-every` improvement "
    "or end, or a run older than this figure)."
)

#: Columns ``compare --evaluate`` adds (see :mod:`multimix.train.evaluation`): name, heading, scale.
EVAL_COLUMNS = [
    ("ece", "ECE (%)", 100),
    ("fgsm_acc", "FGSM acc (%)", 100),
    ("pgd_acc", "PGD acc (%)", 100),
    ("ood_auroc", "OOD AUROC (%)", 100),
    ("ood_fpr95", "OOD FPR95 (%)", 100),
    ("alignment", "alignment", 1),
    ("uniformity", "uniformity", 1),
]


def _run_one(config_dict: dict[str, Any], out: str) -> dict[str, Any]:
    """Train one run, resume it, or reuse its finished summary. Top-level so worker processes can import it.

    A folder holding a run this version cannot continue — other settings (e.g. made before a default
    changed), an unreadable or damaged checkpoint or best.pt, one written by another version — is moved aside to
    ``<folder>.stale-<time>``, never overwritten, and the run is trained again.
    """
    config = TrainConfig(**config_dict)
    folder = Path(out)
    ckpt = folder / "checkpoint.pt"
    with RunLock(folder):  # nobody else may train into, or move, this folder while we look at it
        if ckpt.exists():
            try:
                saved = checkpoint.saved_config(checkpoint.load(ckpt), ckpt)
                best = folder / "best.pt"
                if best.exists() or best.is_symlink():  # damaged, it could not be re-made: retrain
                    checkpoint.verify(best)
                diffs = config.differences(saved)
                problem = (
                    f"{folder} was trained with other settings: {'; '.join(diffs)}"
                    if diffs
                    else None
                )
            except CheckpointError as exc:
                problem = str(exc)
            if problem:
                stale = folder.with_name(f"{folder.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
                folder.rename(stale)
                log.warning("%s. Moved to %s; training it again", problem, stale.name)
            elif (summary := _finished_summary(folder / "summary.json")) is not None:
                return {**summary, "reused": True}
    try:
        return train(config, folder, resume=ckpt.exists(), progress=False)
    except RunDiverged as exc:  # a finding about the method, not a failure of the comparison
        log.debug("%s", exc)  # said in one line as the comparison's progress (_Progress)
        return exc.summary


def _finished_summary(path: Path) -> dict[str, Any] | None:
    """The summary of a finished run (or of one that diverged), or None where there is none to trust:
    no file, or one cut short or damaged, in which case the run is finished again from its checkpoint
    (which rewrites the summary)."""
    if not path.exists():
        return None
    try:
        summary = read_summary(path)
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        log.warning(
            "%s is unreadable (%s); finishing the run again from its checkpoint",
            path,
            checkpoint.first_line(exc),
        )
        return None
    return summary


def diverged(summary: dict[str, Any]) -> bool:
    """Whether a run's summary (or a results row) is of a run that diverged."""
    return bool(summary.get("diverged"))


def run_comparison(
    base: TrainConfig,
    *,
    methods: list[str],
    seeds: list[int],
    out: str | Path,
    jobs: int = 1,
    progress: bool | None = None,
    variants: dict[str, TrainConfig] | None = None,
) -> list[dict[str, Any]]:
    """Train every (method, seed) pair; returns one row per run (see ``CSV_FIELDS``).

    ``variants``: each method's own config where it is not ``base`` with that method (a named recipe
    sets options per method); by default ``base`` with ``method`` replaced."""
    if variants is None:
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
    comparisons (several methods) are tabulated alike. Every configuration is checked before the
    first run starts. ``out`` is locked for the whole comparison; with ``jobs > 1`` the runs train in
    worker processes that end with this one (:mod:`multimix.train.workers`).
    """
    out = Path(out)
    tasks = _tasks(variants, seeds=seeds, out=out, jobs=jobs)
    for variant in variants.values():  # a bad layer name fails now, not in the tenth run
        check_runnable(variant)
    with RunLock(out):
        show_bar = sys.stderr.isatty() if progress is None else progress
        done = _Progress(tasks, show_bar=show_bar)
        args = [(config.to_dict(), str(run_out)) for _, config, run_out in tasks]
        if jobs <= 1:
            summaries = []
            for i, task in enumerate(args):
                summaries.append(_run_one(*task))
                done(i, summaries[-1])
        else:
            summaries = run_tasks(_run_one, args, jobs=jobs, on_done=done)
        done.close()
    return [_row(label, config, s) for (label, config, _), s in zip(tasks, summaries, strict=True)]


#: One run of a comparison (its label, configuration and folder).
Task = tuple[str, TrainConfig, Path]


def _tasks(
    variants: dict[str, TrainConfig], *, seeds: list[int], out: Path, jobs: int
) -> list[Task]:
    """Every (label, seed) run, validated; with ``jobs > 1`` each shares the cores (torch's default,
    all of them per process, would oversubscribe them)."""
    if jobs > 1:
        per_job = max(1, available_cpus() // jobs)
        variants = {
            k: v if v.threads else dataclasses.replace(v, threads=per_job)
            for k, v in variants.items()
        }
    tasks = []
    for label, variant in variants.items():
        for seed in seeds:
            config = dataclasses.replace(variant, seed=seed)
            config.validate()
            tasks.append((label, config, out / label / f"seed{seed}"))
    return tasks


class _Progress:
    """Called as each run finishes: a bar over the runs, and a log line with its result."""

    def __init__(self, tasks: list[Task], *, show_bar: bool) -> None:
        self.tasks = tasks
        self.bar = tqdm(total=len(tasks), desc="runs", unit="run", disable=not show_bar)
        self.started = time.monotonic()
        self.finished = 0

    def __call__(self, i: int, summary: dict[str, Any]) -> None:
        label, config, _ = self.tasks[i]
        self.finished += 1
        self.bar.update(1)
        if diverged(summary):
            what = summary["diverged"]
            log.warning(
                "[%d/%d runs, %s] %s seed %d: diverged (training loss %s in epoch %d, lr %g): "
                "no result%s",
                self.finished,
                len(self.tasks),
                _duration(time.monotonic() - self.started),
                label,
                config.seed,
                what["train_loss"],
                what["epoch"],
                what["lr"],
                " (found so earlier)" if summary.get("reused") else "",
            )
            return
        how = (
            "reused (finished earlier)"
            if summary.get("reused")
            else f"{summary['time_per_epoch_s']:.2f} s/epoch"
        )
        best = summary["best"]
        log.info(
            "[%d/%d runs, %s] %s seed %d: test %.2f%% at epoch %d (val %.2f%%), %s",
            self.finished,
            len(self.tasks),
            _duration(time.monotonic() - self.started),
            label,
            config.seed,
            100 * best["test_acc"],
            best["epoch"],
            100 * best["val_acc"],
            how,
        )

    def close(self) -> None:
        self.bar.close()


def _row(label: str, config: TrainConfig, summary: dict[str, Any]) -> dict[str, Any]:
    """A run's row of the results table (``CSV_FIELDS``); a run that diverged has no figures,
    only the epoch it diverged in."""
    if diverged(summary):
        return {
            "method": label,
            "seed": config.seed,
            **dict.fromkeys(CSV_FIELDS[2:-1]),
            "diverged": summary["diverged"]["epoch"],
        }
    return {
        "method": label,
        "seed": config.seed,
        "best_epoch": summary["best"]["epoch"],
        "val_acc": summary["best"]["val_acc"],
        "test_acc": summary["best"]["test_acc"],
        "final_test_acc": summary["final"]["test_acc"],
        # None where not measured every epoch, or in a summary written before this figure existed
        "best_test_acc_over_epochs": (summary.get("best_test_over_epochs") or {}).get("test_acc"),
        "time_per_epoch_s": summary["time_per_epoch_s"],
        "diverged": None,
    }


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _mean_std(runs: list[dict[str, Any]], key: str) -> tuple[float, float] | None:
    """Mean and standard deviation (0 for a single run) of ``key`` over ``runs``; None where a run has
    no value (the best test accuracy over epochs of a run not tested every epoch)."""
    values = [r[key] for r in runs]
    if any(v is None for v in values):
        return None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation per method, in the order methods first appear.

    A method with a run that diverged gets no figures (None): the mean of the runs that survived would
    flatter it. ``diverged`` counts those runs; the time per epoch is over the finished ones. The best
    test accuracy over epochs is None too where a run has none (not tested every epoch).
    """
    methods = list(dict.fromkeys(r["method"] for r in rows))
    finished = [r for r in rows if not diverged(r)]
    erm_time = [r["time_per_epoch_s"] for r in finished if r["method"] == "erm"]
    evaluated = [key for key, _, _ in EVAL_COLUMNS if any(key in r for r in finished)]
    out = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        done = [r for r in mine if not diverged(r)]
        t = statistics.mean(r["time_per_epoch_s"] for r in done) if done else None
        figures = ["val_acc", "test_acc", "best_test_acc_over_epochs", *evaluated]
        out.append(
            {
                "method": method,
                "runs": len(mine),
                "diverged": len(mine) - len(done),
                **{k: _mean_std(mine, k) if len(done) == len(mine) else None for k in figures},
                "time_per_epoch_s": t,
                "time_vs_erm": t / statistics.mean(erm_time) if erm_time and t else None,
            }
        )
    return out


def format_table(summary: list[dict[str, Any]]) -> str:
    """A Markdown table: accuracy in % as mean ± std over seeds, with :data:`LEGEND` under it."""
    extra = [c for c in EVAL_COLUMNS if any(c[0] in s for s in summary)]
    lines = [
        f"| method | runs | val acc (%) | {TEST_HEADING} | {BEST_TEST_HEADING} | time / epoch | vs ERM |"
        + "".join(f" {h} |" for _, h, _ in extra),
        "|---|---|---|---|---|---|---|" + "---|" * len(extra),
    ]
    for s in summary:
        ratio = f"{s['time_vs_erm']:.2f}×" if s["time_vs_erm"] is not None else "—"
        time_cell = f"{s['time_per_epoch_s']:.2f} s" if s["time_per_epoch_s"] is not None else "—"
        columns = [
            ("val_acc", 100),
            ("test_acc", 100),
            ("best_test_acc_over_epochs", 100),
            *((key, k) for key, _, k in extra),
        ]
        cells = " | ".join(_cell(s, key, k) for key, k in columns[:3])
        more = "".join(f" {_cell(s, key, k)} |" for key, k in columns[3:])
        lines.append(f"| {s['method']} | {s['runs']} | {cells} | {time_cell} | {ratio} |" + more)
    return "\n".join(lines) + "\n\n" + LEGEND


def _cell(s: dict[str, Any], key: str, scale: int) -> str:
    """``key``'s mean ± std in method summary ``s``, or why there is no number."""
    if s.get("diverged"):
        return f"diverged ({s['diverged']} of {s['runs']} runs)"
    if s.get(key) is None:  # a figure some run lacks (the legend says why)
        return "—"
    digits = 2 if scale == 100 else 3
    mean, std = s[key]
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=CSV_FIELDS + [k for k, _, _ in EVAL_COLUMNS if any(k in r for r in rows)]
    )
    writer.writeheader()
    writer.writerows(rows)
    checkpoint.write_text(path, buffer.getvalue())


def accuracy_axis(values: list[float]) -> tuple[float, float]:
    """Limits of an accuracy axis (%) for ``values``: a point of margin, and never less than 3 points
    in all, so that seed-to-seed noise is not magnified into a gap."""
    low, high = min(values), max(values)
    pad = max(1.0, (3.0 - (high - low)) / 2)
    return max(0.0, low - pad), min(100.0, high + pad)


def plot_results(path: str | Path, rows: list[dict[str, Any]], *, title: str) -> None:
    """Test accuracy per method at the epoch chosen on validation (the result, never the best over
    epochs), every seed a dot, mean ± std beside them; written atomically as PNG.

    Dots, not bars: a bar's length reads as a quantity from zero, so bars on an axis that starts at
    92 % make half a point look like a chasm. The axis spans the data with a margin of at least
    a few points, and its label says what the marks are.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    summary = aggregate(rows)
    names = [
        s["method"] + (f"\n(diverged: {s['diverged']} of {s['runs']})" if s["diverged"] else "")
        for s in summary
    ]
    width = 1.3 * len(names) + 2.5
    fig, ax = plt.subplots(figsize=(width, 3.8), dpi=120)
    values = []
    legend = {"one seed", "mean ± std"}  # each mark named once, where it first appears
    for i, s in enumerate(summary):
        accs = [100 * r["test_acc"] for r in rows if r["method"] == s["method"] and not diverged(r)]
        values += accs
        offsets = [
            0.12 * (j - (len(accs) - 1) / 2) / max(1, len(accs) - 1) for j in range(len(accs))
        ]
        ax.scatter(
            [i - 0.15 + o for o in offsets],
            accs,
            s=18,
            color="#4C72B0",
            alpha=0.8,
            zorder=3,
            label=_first("one seed", legend) if accs else None,
        )
        if s["test_acc"] is None:  # a run diverged: its seeds that finished are shown, no mean
            continue
        mean, std = 100 * s["test_acc"][0], 100 * s["test_acc"][1]
        ax.errorbar(
            [i + 0.15],
            [mean],
            yerr=[std],
            fmt="o",
            color="#C44E52",
            capsize=4,
            zorder=3,
            label=_first("mean ± std", legend),
        )
        ax.annotate(f"{mean:.1f}", (i + 0.22, mean), fontsize=8, va="center")
    ax.set_ylim(*(accuracy_axis(values) if values else (0.0, 100.0)))
    ax.set_xticks(range(len(names)), names)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel("test accuracy (%),\nepoch chosen on val.")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(textwrap.fill(title, int(12 * width)), fontsize=9)  # a long title, not cut off
    fig.tight_layout()
    checkpoint.atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)


def _first(label: str, unused: set[str]) -> str | None:
    """``label`` the first time it is asked for (and taken from ``unused``), None after."""
    if label in unused:
        unused.discard(label)
        return label
    return None


def plot_evaluation(path: str | Path, rows: list[dict[str, Any]], *, title: str) -> None:
    """One panel per evaluation metric: every seed a dot, the mean a bar's end; PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    rows = [r for r in rows if not diverged(r)]  # no figures to show
    columns = [c for c in EVAL_COLUMNS if any(c[0] in r for r in rows)]
    fig, axes = plt.subplots(
        1, len(columns), figsize=(2.2 * len(columns) + 1, 3.2), dpi=120, squeeze=False
    )
    for ax, (key, heading, scale) in zip(axes[0], columns, strict=True):
        for i, method in enumerate(methods):
            values = [scale * r[key] for r in rows if r["method"] == method]
            ax.scatter([i] * len(values), values, s=12, color="#4C72B0", alpha=0.8)
            if values:
                ax.scatter([i], [statistics.mean(values)], marker="_", s=300, color="#C44E52")
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=7)
        ax.set_title(heading, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    checkpoint.atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
