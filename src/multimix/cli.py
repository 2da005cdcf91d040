"""The ``multimix`` command.

    multimix train   --dataset mnist1d --method multimix --epochs 30 --out runs/mm
    multimix train   --out runs/mm --resume                 # continue a killed run
    multimix compare --methods erm,mixup,manifold,multimix --seeds 3 --out runs/cmp

Every training option is a flag and a key of ``--config FILE.yaml``; flags override the file.
``--config NAME`` names a configuration packaged with the library (``demo``) when no file of that
name exists. Bad options exit with code 2 and say what is valid.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import gc
import logging
import os
import shlex
import signal
import sys
import warnings
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TextIO

from multimix.data.files import CorruptDataFile, DataFilesMissing
from multimix.train import checkpoint
from multimix.train.checkpoint import CheckpointError
from multimix.train.config import (
    MAX_SEED,
    METHODS,
    RENAMED_KEYS,
    TrainConfig,
    old_keys_in,
    renamed_keys_read,
    renamed_message,
)
from multimix.train.errors import ConfigError, RunDiverged
from multimix.train.methods import METHODS as METHOD_REGISTRY
from multimix.train.methods import methods_with
from multimix.train.runlock import FolderInUse
from multimix.train.workers import WorkerDied

#: Errors whose message says everything: one line on stderr, exit code 2, no traceback.
USER_ERRORS = (
    ConfigError,
    CheckpointError,
    DataFilesMissing,
    CorruptDataFile,
    FolderInUse,
    RunDiverged,
)

log = logging.getLogger("multimix")

GROUP_TITLES = {
    "data": "data",
    "method": "method options",
    "training": "optimisation",
    "run": "running",
}


class _DeprecatedFlag(argparse.Action):
    """An old flag name, still accepted (under its own key, renamed by :func:`resolve_config`); a
    one-line warning naming the new one follows once the options are valid (an invalid one gets the
    usual single error line)."""

    def __init__(
        self, option_strings: list[str], dest: str, *, new_flag: str, **kwargs: Any
    ) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new_flag = new_flag

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        said = getattr(namespace, "deprecated_flags", [])
        namespace.deprecated_flags = [*said, f"{option_string} is deprecated; use {self.new_flag}"]


def _flag_help(name: str, meta: Mapping[str, Any], default: object) -> str:
    """A field's help: which methods it applies to (from the method registry), its choices, its default."""
    applies = methods_with(name)
    text = (f"{', '.join(applies)}: " if applies else "") + meta["help"]
    if name == "method":
        text += ": " + "; ".join(f"{m.name}: {m.summary}" for m in METHOD_REGISTRY.values())
    elif meta["choices"]:
        text += f" {{{', '.join(meta['choices'])}}}"
    if "default" not in meta["help"]:  # some helps explain their default in words
        text += f" (default: {default})"
    return text


#: The configurations packaged with the library, one YAML file each: ``--config demo`` reads
#: ``configs/demo.yaml`` here, whatever the working directory and however the package was installed.
PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"


def packaged_configs() -> dict[str, Path]:
    """The packaged configurations by name (the file's name without ``.yaml``), sorted."""
    return {path.stem: path for path in sorted(PACKAGED_CONFIGS.glob("*.yaml"))}


def config_path(value: str | Path) -> Path:
    """The file ``--config`` reads: ``value`` where such a path exists (an existing path always wins),
    else the packaged configuration of that name; else a :class:`ConfigError` listing those names."""
    path = Path(value)
    if path.exists() or path.is_symlink():  # a dangling link is the user's file: its error names it
        return path
    packaged = packaged_configs()
    if str(value) in packaged:
        return packaged[str(value)]
    raise ConfigError(
        f"cannot read config file {value}: no such file, and no packaged configuration of that "
        f"name (packaged: {', '.join(packaged) or 'none'})"
    )


def add_config_flags(parser: argparse.ArgumentParser, *, exclude: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field (but ``exclude``); absent flags stay absent so the YAML file can fill them.
    Renamed fields keep their old flag as a deprecated alias (not listed in ``--help``)."""
    names = ", ".join(packaged_configs()) or "none"
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE|NAME",
        help="YAML file of options (flags override it), or the name of a configuration packaged "
        f"with multimix where no such file exists ({names})",
    )
    groups = {k: parser.add_argument_group(v) for k, v in GROUP_TITLES.items()}
    old_names = {new: old for old, new in RENAMED_KEYS.items()}
    for f in dataclasses.fields(TrainConfig):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        help_text = _flag_help(
            f.name, meta, f.default if f.default is not dataclasses.MISSING else None
        )
        group = groups[meta["group"]]
        if f.type in ("bool", bool):
            group.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            group.add_argument(
                flag, dest=f.name, default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_text
            )
        if f.name in old_names:
            group.add_argument(
                "--" + old_names[f.name],
                dest=old_names[f.name],
                action=_DeprecatedFlag,
                new_flag=flag,
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )


def resolve_config(
    args: argparse.Namespace, base: dict[str, Any] | None = None, *, method: str | None = None
) -> TrainConfig:
    """Defaults (or ``base``), then the YAML file, then flags: one validated TrainConfig. Each source
    may use a renamed key's old name (``n``, ``--n``), not together with its new one. ``method``:
    the method of one of compare's runs (a named recipe sets some options per method)."""
    from_file = TrainConfig.from_yaml(config_path(args.config)) if args.config else {}
    keys = {*TrainConfig.keys(), *RENAMED_KEYS}
    given = {k: v for k, v in vars(args).items() if k in keys}
    values = {
        **(base or {}),
        **{k.replace("-", "_"): v for k, v in renamed_keys_read(from_file).items()},
        **renamed_keys_read(given),
        **({} if method is None else {"method": method}),
    }
    config = TrainConfig.from_dict(values, source="--config" if args.config else "option")
    # Said once the options are known to be valid (an invalid one gets the usual single error line).
    for message in [
        *map(renamed_message, old_keys_in(from_file)),
        *getattr(args, "deprecated_flags", []),
    ]:
        sys.stderr.write(f"multimix: warning: {message}\n")
    args.deprecated_flags = []  # said once, however often the options are resolved
    return config


def default_out(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.dataset}-{config.model_name}-{config.method}-s{config.seed}"


def cmd_train(args: argparse.Namespace) -> int:
    from multimix.train.trainer import train

    out = args.out or default_out(resolve_config(args))
    base = None
    ckpt = out / "checkpoint.pt"
    if args.resume and ckpt.is_file():
        # Resuming needs only --out: the run's own settings are the base; flags may only repeat them
        # (or change runtime keys such as --device).
        base = checkpoint.saved_config(checkpoint.load(ckpt), ckpt).to_dict()
    config = resolve_config(args, base)
    args.continue_with = f"multimix train --out {shlex.quote(str(out))} --resume"
    if _torchrun_world() > 1:
        args.continue_with = f"the same torchrun command, with {args.continue_with}"
    args.run_out = out  # before its first checkpoint, a run is continued by its own command again
    summary = train(config, out, resume=args.resume, progress=False if args.quiet else None)
    if _torchrun_rank() != 0:
        return 0  # rank 0 reports for every process
    best = summary["best"]
    print(
        f"{config.dataset} / {config.model_name} / {config.method} (seed {config.seed}): "
        f"test accuracy {100 * best['test_acc']:.2f}% at epoch {best['epoch']} (best validation "
        f"{100 * best['val_acc']:.2f}%); final epoch {100 * summary['final']['test_acc']:.2f}%"
    )
    print(f"outputs in {out}/")
    return 0


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if not methods or bad:
        raise ConfigError(
            f"invalid value for --methods: {text!r}; valid methods: {', '.join(METHODS)}"
        )
    return methods


def cmd_compare(args: argparse.Namespace) -> int:
    from multimix.train.compare import (
        aggregate,
        diverged,
        format_table,
        plot_results,
        run_comparison,
        write_csv,
    )

    methods = parse_methods(args.methods)
    if args.seeds < 1:
        raise ConfigError(f"invalid value for --seeds: {args.seeds}; expected an integer >= 1")
    if args.jobs < 1:
        raise ConfigError(f"invalid value for --jobs: {args.jobs}; expected an integer >= 1")
    base = resolve_config(args)
    if base.seed + args.seeds - 1 > MAX_SEED:
        raise ConfigError(
            f"invalid value for --seeds: {args.seeds}; seeds {base.seed}..{base.seed + args.seeds - 1} "
            f"go past the largest seed, {MAX_SEED}"
        )
    seeds = list(range(base.seed, base.seed + args.seeds))
    out = args.out or Path("runs") / f"compare-{base.dataset}-{base.model_name}"
    args.continue_with = f"{shlex.join(['multimix', *args.argv])} (finished runs are reused, interrupted ones resumed)"
    # A named recipe sets some options per method (MultiMix's mixing): resolve each method's own
    variants = {m: resolve_config(args, method=m) for m in methods} if base.recipe else None
    rows = run_comparison(
        base,
        methods=methods,
        seeds=seeds,
        out=out,
        jobs=args.jobs,
        progress=False if args.quiet else None,
        variants=variants,
    )
    title = (
        f"{base.dataset} / {base.model_name}, {base.epochs} epochs, seeds {seeds[0]}–{seeds[-1]} "
        f"(test accuracy at the best validation epoch)"
    )
    plotted = args.evaluate and _evaluate_rows(out, rows, title=title)
    table = format_table(aggregate(rows))
    write_csv(out / "results.csv", rows)
    checkpoint.write_text(out / "results.md", f"# {title}\n\n{table}\n")
    plot_results(out / "results.png", rows, title=title)
    print(title)
    print(table)
    if lost := [r for r in rows if diverged(r)]:
        runs = ", ".join(f"{r['method']} seed {r['seed']} (epoch {r['diverged']})" for r in lost)
        sys.stderr.write(
            f"multimix: warning: {len(lost)} of {len(rows)} runs diverged and have no figures: "
            f"{runs}; their methods' cells say so (each run's summary.json records it)\n"
        )
    print(
        f"\nper-run results: {out / 'results.csv'}\nplot: {out / 'results.png'}"
        + (
            f"\nevaluation: {out / 'evaluation.png'} (and eval.json in each run folder)"
            if plotted
            else ""
        )
    )
    return 0


def _evaluate_rows(out: Path, rows: list[dict[str, Any]], *, title: str) -> bool:
    """``compare --evaluate``: evaluate every run that finished (a diverged one has nothing to measure),
    add its figures to its row, and plot them; False where no run finished, so nothing is plotted."""
    from multimix.evaluate import OOD_SETS
    from multimix.train.compare import diverged, plot_evaluation
    from multimix.train.evaluation import evaluate_run

    for row in rows:
        if diverged(row):
            continue
        result = evaluate_run(out / row["method"] / f"seed{row['seed']}")
        row.update(
            {k: result[k] for k in ("ece", "fgsm_acc", "pgd_acc", "alignment", "uniformity")}
        )
        row["ood_auroc"] = sum(result[f"ood_{k}_auroc"] for k in OOD_SETS) / len(OOD_SETS)
        row["ood_fpr95"] = sum(result[f"ood_{k}_fpr95"] for k in OOD_SETS) / len(OOD_SETS)
    if all(diverged(row) for row in rows):
        return False
    title += "; OOD: mean over " + ", ".join(OOD_SETS)
    plot_evaluation(out / "evaluation.png", rows, title=title)
    return True


class _Parser(argparse.ArgumentParser):
    # One line, exit 2 (argparse's own code), and where to look
    def error(self, message: str) -> NoReturn:
        self.exit(
            2, f"{self.prog}: error: {message} (see '{self.prog} --help' for the valid options)\n"
        )


def cmd_plot_boundary(args: argparse.Namespace) -> int:
    from multimix.analysis.plots import plot_decision_boundaries
    from multimix.train.compare import run_comparison
    from multimix.train.trainer import load_splits, model_from_checkpoint

    methods = parse_methods(args.methods)
    base = resolve_config(args, base={"dataset": "spirals", "epochs": 100, "lr": 3e-3})
    if base.dataset not in ("spirals", "toy") or (base.dataset == "toy" and base.toy_dim != 2):
        raise ConfigError(
            f"plot-boundary needs a 2-D dataset (spirals, or toy with toy_dim 2), got {base.dataset!r}"
        )
    out = args.out or Path("runs") / f"boundary-{base.dataset}"
    run_comparison(
        base,
        methods=methods,
        seeds=[base.seed],
        out=out,
        progress=None if not args.quiet else False,
    )
    models = {}
    for method in methods:
        model, _ = model_from_checkpoint(out / method / f"seed{base.seed}" / "checkpoint.pt")
        models[method] = model
    x, y = load_splits(base).train.tensors
    path = out / "boundary.png"
    plot_decision_boundaries(
        models,
        x,
        y,
        path,
        title=f"{base.dataset}: decision boundaries after {base.epochs} epochs "
        f"({base.model_name}, seed {base.seed})",
    )
    print(f"plot: {path}")
    return 0


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar or progress lines: warnings, errors, results",
    )
    # Also accepted after the command; SUPPRESS keeps an absent flag from undoing `multimix -v train`.
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="a line for every epoch",
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from multimix.evaluate import OOD_SETS
    from multimix.train.evaluation import ATTACKS, evaluate_run, format_eval_table

    attacks = [a for a in args.attacks.split(",") if a] if args.attacks else []
    ood = [o for o in args.ood.split(",") if o] if args.ood else []
    bad = [a for a in attacks if a not in ATTACKS]
    if bad:
        raise ConfigError(
            f"invalid value for --attacks: {args.attacks!r}; valid attacks: {', '.join(ATTACKS)}"
        )
    bad = [o for o in ood if o not in OOD_SETS]
    if bad:
        raise ConfigError(
            f"invalid value for --ood: {args.ood!r}; valid sets: {', '.join(OOD_SETS)}"
        )
    if args.eps is not None and not (args.eps >= 0 and args.eps != float("inf")):
        raise ConfigError(
            f"invalid value for --eps: {args.eps}; expected a finite number >= 0 (input units)"
        )
    if args.pgd_steps < 1:
        raise ConfigError(
            f"invalid value for --pgd-steps: {args.pgd_steps}; expected an integer >= 1"
        )
    if args.attack_examples < 1:
        raise ConfigError(
            f"invalid value for --attack-examples: {args.attack_examples}; expected an integer >= 1"
        )
    for run in args.runs:
        # A dangling or unreadable best.pt is there (evaluate_run refuses it, naming it): not absent
        if not any(
            (run / n).exists() or (run / n).is_symlink() for n in ("best.pt", "checkpoint.pt")
        ):
            raise ConfigError(
                f"invalid run folder {str(run)!r}: it holds no best.pt or checkpoint.pt"
            )
    from tqdm.auto import tqdm

    show = not args.quiet and sys.stderr.isatty()
    results = [
        evaluate_run(
            run,
            attacks=tuple(attacks),
            eps=args.eps,
            pgd_steps=args.pgd_steps,
            ood=tuple(ood),
            attack_examples=args.attack_examples,
        )
        for run in tqdm(args.runs, desc="evaluate", unit="run", disable=not show)
    ]
    print(format_eval_table(results))
    print("\nper run: eval.json, reliability.png, embedding.png in each run folder")
    return 0


def version() -> str:
    """The installed distribution's version; the package's own ``__version__`` where multimix runs
    from a source tree that was never installed."""
    try:
        return metadata.version("multimix")
    except metadata.PackageNotFoundError:
        from multimix import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="multimix", description="Embedding-space mixup: train and compare methods."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="a line for every epoch")
    parser.add_argument(
        "--version", action="version", version=f"multimix {version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    from multimix.train.recipes import describe

    recipes = (
        "Options marked 'the dataset's recipe' take, when not given, the settings chosen for the dataset on "
        "its validation split (the table of recipes and the validation figures behind them is among the "
        f"benchmark results, in the source repository and the documentation): {describe()}."
    )
    _add_train(sub, recipes)
    _add_compare(sub, recipes)
    _add_evaluate(sub)
    _add_plot_boundary(sub)
    return parser


# The subcommands' parsers; ``sub`` is build_parser's subparsers action.
def _add_train(sub: argparse._SubParsersAction[_Parser], recipes: str) -> None:
    p_train = sub.add_parser("train", help="train one model with one method", epilog=recipes)
    p_train.add_argument(
        "--out", type=Path, help="output folder (default: runs/<dataset>-<model>-<method>-s<seed>)"
    )
    p_train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint (its settings are read from it)",
    )
    add_output_flags(p_train)
    add_config_flags(p_train)
    p_train.set_defaults(func=cmd_train)


def _add_compare(sub: argparse._SubParsersAction[_Parser], recipes: str) -> None:
    p_cmp = sub.add_parser(
        "compare", help="train several methods over several seeds and tabulate", epilog=recipes
    )
    p_cmp.add_argument(
        "--methods",
        default="erm,mixup,manifold,multimix",
        help=f"comma-separated, from {', '.join(METHODS)} (default: erm,mixup,manifold,multimix)",
    )
    p_cmp.add_argument(
        "--seeds", type=int, default=3, help="number of seeds, starting at --seed (default: 3)"
    )
    p_cmp.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at once, each in its own process (default: 1)",
    )
    p_cmp.add_argument(
        "--out", type=Path, help="output folder (default: runs/compare-<dataset>-<model>)"
    )
    p_cmp.add_argument(
        "--evaluate",
        action="store_true",
        help="also evaluate every run (as `multimix evaluate`, "
        "default settings) and add ECE, FGSM/PGD, OOD (mean over sets), alignment, uniformity",
    )
    add_output_flags(p_cmp)
    add_config_flags(p_cmp, exclude=("method",))  # --methods says which
    p_cmp.set_defaults(func=cmd_compare)


def _add_evaluate(sub: argparse._SubParsersAction[_Parser]) -> None:
    p_eval = sub.add_parser(
        "evaluate",
        help="calibration, FGSM/PGD robustness, OOD detection and embedding geometry of runs",
    )
    p_eval.add_argument(
        "runs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="run folders (their best.pt is evaluated)",
    )
    p_eval.add_argument(
        "--attacks",
        default="fgsm,pgd",
        help="comma-separated, from fgsm, pgd; empty for none (default: fgsm,pgd)",
    )
    p_eval.add_argument(
        "--eps",
        type=float,
        default=None,
        help="L∞ budget in input units (default per dataset: 0.1 for "
        "[0, 1] pixels, 8/255 of a pixel for CIFAR, 0.1 × the inputs' std otherwise)",
    )
    p_eval.add_argument("--pgd-steps", type=int, default=10, help="PGD steps (default: 10)")
    p_eval.add_argument(
        "--attack-examples",
        type=int,
        default=1000,
        help="first test examples attacked (default: 1000)",
    )
    p_eval.add_argument(
        "--ood",
        default="gaussian,uniform,shuffled",
        help="comma-separated OOD sets, from gaussian, uniform, shuffled (default: all three)",
    )
    add_output_flags(p_eval)
    p_eval.set_defaults(func=cmd_evaluate)


def _add_plot_boundary(sub: argparse._SubParsersAction[_Parser]) -> None:
    p_plot = sub.add_parser(
        "plot-boundary", help="train on a 2-D problem and plot each method's decision boundary"
    )
    p_plot.add_argument(
        "--methods",
        default="erm,mixup,manifold",
        help=f"comma-separated, from {', '.join(METHODS)}",
    )
    p_plot.add_argument("--out", type=Path, help="output folder (default: runs/boundary-<dataset>)")
    add_output_flags(p_plot)
    add_config_flags(p_plot, exclude=("method",))
    p_plot.set_defaults(func=cmd_plot_boundary)


class Terminated(BaseException):
    """SIGTERM, raised where the main thread is so that cleanup (stopping workers) runs."""


def _raise_terminated(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated


def _warning_line(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    sys.stderr.write(f"multimix: warning: {message}\n")


def _torchrun_rank() -> int:
    """This process's rank when started by torchrun (0 otherwise)."""
    return int(os.environ.get("RANK", "0") or 0) if "WORLD_SIZE" in os.environ else 0


def _torchrun_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


#: errno values that more space (or a higher limit) cures: the disk, the quota, the file-size limit.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}


def _continue_hint(args: argparse.Namespace) -> str | None:
    """How to continue the command that stopped, as it stands now (None: nothing to say)."""
    out = getattr(args, "run_out", None)
    if out is not None and not (out / "checkpoint.pt").is_file():
        command = shlex.join(["multimix", *args.argv])
        return "the same torchrun command" if _torchrun_world() > 1 else command
    return getattr(args, "continue_with", None)


def _machine_fault(exc: OSError | UnicodeError, args: argparse.Namespace) -> str:
    """One line for a fault of the machine rather than of the options: what, where, what to do.

    Files are written atomically (:func:`multimix._io.atomic_write`): whatever file was being written
    keeps its previous version, so the command can be run again once the cause is gone.
    """
    hint = _continue_hint(args)
    again = f"continue with: {hint}" if hint else "run the command again"
    if isinstance(exc, UnicodeEncodeError):  # a name the file system's encoding cannot hold
        return (
            f"the name {exc.object!r} cannot be written in this system's file name encoding "
            f"({sys.getfilesystemencoding()}: {exc.reason}); choose a name in that encoding, or run "
            "under a UTF-8 locale (e.g. LC_ALL=C.UTF-8)"
        )
    if isinstance(exc, UnicodeError):
        return (
            f"text that is not in the expected encoding ({exc}); "
            "files multimix reads as text (YAML, JSON) are UTF-8"
        )
    where = f"{exc.filename}: " if exc.filename is not None else ""
    what = f"{where}{exc.strerror or exc} [errno {exc.errno}]"
    if exc.errno in _NO_SPACE:
        return (
            f"{what}; nothing written is lost: free some space (or raise the limit), then {again}"
        )
    if exc.errno in _NO_PERMISSION:
        return f"{what}; give this user the right to write there (or choose another folder), then {again}"
    if exc.errno == errno.ENAMETOOLONG:
        return f"{what}; choose a shorter name"
    return f"{what}; {again} once that is fixed"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    rank = _torchrun_rank()
    if _torchrun_world() > 1 and args.command != "train":
        parser.exit(
            2,
            f"multimix: error: under torchrun only `multimix train` runs (one process per device); "
            f"`multimix {args.command}` runs on its own (compare: --jobs N for runs in parallel)\n",
        )
    level = (
        logging.DEBUG
        if args.verbose
        else logging.WARNING
        if getattr(args, "quiet", False) or rank
        else logging.INFO
    )
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        # log lines go above a progress bar, not through it; our deprecations are shown, in one line
        with logging_redirect_tqdm(), warnings.catch_warnings():
            warnings.filterwarnings("default", category=DeprecationWarning, module="multimix")
            warnings.showwarning = _warning_line
            return args.func(args)
    except USER_ERRORS as exc:
        # Under torchrun every rank meets the same bad option or folder: rank 0 says it once.
        code, message = 2, f"multimix: error: {exc}\n" if rank == 0 else None
    except (OSError, UnicodeError) as exc:  # the machine's fault (disk, quota, permission, name)
        # Only the process that met it knows (under torchrun, rank 0 writes): it says so itself.
        code, message = 2, f"multimix: error: {_machine_fault(exc, args)}\n"
    except WorkerDied as exc:  # not the user's input, but nothing a traceback would explain either
        code, message = 1, f"multimix: error: {exc}\n"
    except (KeyboardInterrupt, Terminated) as exc:
        hint = _continue_hint(args)
        code = 130 if isinstance(exc, KeyboardInterrupt) else 143
        message = (
            "multimix: interrupted" + (f"; to continue: {hint}" if hint else "") + "\n"
            if rank == 0
            else None
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    if message:
        sys.stderr.write(message)
    # Out of the except block, the error's traceback is unreferenced, but what its frames held (under
    # torchrun: the model, its DDP wrapper and the process group they keep) sits in reference cycles.
    # Freed now, while the interpreter is whole: freed during its finalisation, the group's gloo
    # threads can abort the process ("terminate called without an active exception"). Said first:
    # freeing a group whose collective was cut short can wait for it until torchrun kills the rank.
    # One process holds no group, and a full collection there only delays the error line.
    if _torchrun_world() > 1:
        gc.collect()
    parser.exit(code)


if __name__ == "__main__":
    sys.exit(main())
