"""Evaluate a finished run: calibration, FGSM/PGD robustness, OOD detection and embedding geometry of
the weights chosen on validation (``best.pt``; in a run without one, the last epoch's, ``checkpoint.pt``),
written to ``eval.json`` (whose ``weights`` says which file and epoch) and two plots in the run folder.

Attack budgets are in input units. Defaults per dataset (``default_eps``): images with pixels in
[0, 1] (digits, MNIST, KMNIST, Fashion-MNIST) ε = 0.1 and inputs clipped to [0, 1], as in the MNIST
literature; CIFAR, standardised by its loader, 8/255 of a pixel divided by the mean channel std; other
data (MNIST-1D, toy problems) 0.1 × the standard deviation of the test inputs, unclipped.
Out-of-distribution sets: noise and shuffled inputs made from the test set, and for the 28×28 sets
the test images of their counterpart (Fashion-MNIST ↔ MNIST, KMNIST → MNIST) where its files are found,
else, in MNIST's place, scikit-learn's 1797 handwritten 8×8 digits framed as MNIST's (``ood_digits_*``;
no download; never for MNIST itself, whose own kind they are).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch

from multimix._io import write_json
from multimix.data import DataFilesMissing, cifar, digits, idx_images
from multimix.evaluate import (
    OOD_SETS,
    alignment,
    auroc,
    calibration,
    embeddings,
    fpr_at_tpr,
    make_ood,
    ood_score,
    reliability_diagram,
    robust_accuracy,
    uniformity,
)
from multimix.train.checkpoint import CheckpointError
from multimix.train.components import load_splits, trained_model
from multimix.train.config import TrainConfig
from multimix.train.errors import ConfigError, RunDiverged
from multimix.train.reporting import tensorboard_writer
from multimix.train.run_folder import read_summary
from multimix.train.runlock import RunLock

log = logging.getLogger(__name__)

PIXEL_DATASETS = ("digits", "mnist", "kmnist", "fashion-mnist")
#: A real out-of-distribution set of the same shape, used when its files are found.
OTHER_DATASET = {"fashion-mnist": "mnist", "mnist": "fashion-mnist", "kmnist": "mnist"}


def _files_found(name: str, data_dir: str | None) -> bool:
    try:
        idx_images.find_files(name, data_dir)
    except DataFilesMissing:
        return False
    return True


ATTACKS = ("fgsm", "pgd")


def default_eps(dataset: str, x_test: torch.Tensor) -> tuple[float, tuple[float, float] | None]:
    """(ε, clamp) for a dataset; see the module docstring."""
    if dataset in PIXEL_DATASETS:
        return 0.1, (0.0, 1.0)
    if dataset in cifar.SPECS:
        return (8 / 255) / (sum(cifar.STD) / 3), None
    return 0.1 * float(x_test.std()), None


def evaluate_run(
    run: str | Path,
    *,
    attacks: tuple[str, ...] = ATTACKS,
    eps: float | None = None,
    pgd_steps: int = 10,
    ood: tuple[str, ...] = OOD_SETS,
    attack_examples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate the run in folder ``run``; returns the metrics (also in ``run/eval.json``)."""
    run = Path(run)
    weights = _weights_file(run)
    bad = [a for a in attacks if a not in ATTACKS] + [o for o in ood if o not in OOD_SETS]
    if bad:
        raise ConfigError(
            f"unknown attack or OOD set {bad}; attacks: {', '.join(ATTACKS)}; OOD sets: {', '.join(OOD_SETS)}"
        )
    with RunLock(run, argument="RUN_DIR"):  # not while a run trains into it
        _refuse_diverged(run)
        return _evaluate(
            run,
            weights,
            attacks=attacks,
            eps=eps,
            pgd_steps=pgd_steps,
            ood=ood,
            attack_examples=attack_examples,
            seed=seed,
        )


class NonFiniteOutputs(CheckpointError):
    """The weights give non-finite outputs (NaN or inf): there is nothing to measure."""


def _refuse_diverged(run: Path) -> None:
    """A run whose summary says it diverged has no result: the weights it kept (of an epoch before
    the divergence) are not the model its settings train, so they are not measured."""
    path = run / "summary.json"
    try:
        summary = read_summary(path)
    except (OSError, ValueError):
        return  # no summary (a run under way or killed), or one unreadable: the weights decide
    if what := summary.get("diverged"):
        raise RunDiverged(
            f"{run} diverged (training loss {what.get('train_loss')} in epoch {what.get('epoch')}, "
            f"lr {what.get('lr')}; {path}): its weights are not a result, so nothing is evaluated. "
            "Train it again with a lower --lr",
            epoch=int(what.get("epoch", 0)),
            summary=summary,
        )


def _weights_file(run: Path) -> Path:
    """``best.pt`` wherever the run has one, else ``checkpoint.pt``.

    A ``best.pt`` that is damaged, unreadable or a dangling link is refused when loaded, not passed over
    for ``checkpoint.pt``: the last epoch's weights are another model than the one asked for.
    """
    for name in ("best.pt", "checkpoint.pt"):
        if (run / name).exists() or (run / name).is_symlink():
            return run / name
    raise CheckpointError(
        f"{run} holds no trained model (best.pt or checkpoint.pt); is it a run folder?"
    )


def _describe_weights(weights: Path, epoch: int | None) -> str:
    """Which weights are measured, for eval.json and the table: "best.pt (epoch 3)", or
    "checkpoint.pt (last epoch 5; no best.pt)" in a run killed before its first improvement."""
    if weights.name == "best.pt":
        return "best.pt" if epoch is None else f"best.pt (epoch {epoch})"
    last = "last epoch" if epoch is None else f"last epoch {epoch}"
    return f"{weights.name} ({last}; no best.pt)"


def _check_finite(
    run: Path, weights: str, model: torch.nn.Module, z: torch.Tensor, logits: torch.Tensor
) -> None:
    """NonFiniteOutputs if the test set's logits or embeddings hold a NaN or inf: every metric after this
    would be NaN or fail deep inside scikit-learn (PCA, t-SNE)."""
    bad = int((~torch.isfinite(logits)).sum()) + int((~torch.isfinite(z)).sum())
    if bad == 0:
        return
    params = sum(int((~torch.isfinite(p)).sum()) for p in model.state_dict().values())
    raise NonFiniteOutputs(
        f"{run}: the model's outputs on the test set are not finite ({bad} NaN/inf values in its "
        f"logits and embeddings; {params} non-finite numbers in the weights of {weights}): "
        "the run diverged; nothing to evaluate. Train it again, e.g. with a lower --lr"
    )


def _evaluate(
    run: Path,
    weights: Path,
    *,
    attacks: Sequence[str],
    eps: float | None,
    pgd_steps: int,
    ood: Sequence[str],
    attack_examples: int,
    seed: int,
) -> dict[str, Any]:
    start = time.perf_counter()
    trained = trained_model(weights)
    model, config = trained.model, trained.config
    which = _describe_weights(weights, trained.epoch)
    splits = load_splits(config)
    x, y = splits.test.tensors
    # The run's evaluation batch: on a CPU, larger ones outgrow the caches.
    bs = config.eval_batch_size
    # One pass gives the classifier's inputs (embedding geometry) and the logits (everything else).
    # A class attribute, a str, of every model (multimix.models); typed as nn.Module's __getattr__ says.
    classifier = cast(str, model.classifier_layer)
    z, logits = embeddings(model, x, classifier, batch_size=bs, return_logits=True)
    _check_finite(run, which, model, z, logits)
    probs = torch.softmax(logits.float(), 1)
    name = f"{config.dataset} {config.method} s{config.seed}"
    result: dict[str, Any] = {
        "run": str(run),
        "weights": which,
        "weights_epoch": trained.epoch,
        "test_acc": float((logits.argmax(1) == y).float().mean()),
    }
    result.update(calibration(probs, y))
    reliability_diagram(probs, y, run / "reliability.png", title=name)
    budget, clamp = default_eps(config.dataset, x)
    result["eps"] = budget if eps is None else eps
    xa, ya = x[:attack_examples], y[:attack_examples]
    for attack in attacks:
        extra: dict[str, Any] = {}
        if attack == "pgd":
            extra = {"steps": pgd_steps, "generator": torch.Generator().manual_seed(seed)}
        result[f"{attack}_acc"] = robust_accuracy(
            model, xa, ya, attack=attack, eps=result["eps"], clamp=clamp, batch_size=bs, **extra
        )
    result.update(_ood_detection(model, logits, x, config, ood, batch_size=bs, seed=seed))
    result["alignment"], result["uniformity"] = alignment(z, y), uniformity(z)
    _plot_embedding(z, y, run / "embedding.png", title=f"{name}: classifier inputs")
    result["seconds"] = time.perf_counter() - start
    write_json(run / "eval.json", result)
    if config.tensorboard:  # the run logs to TensorBoard: the evaluation goes beside its curves
        _to_tensorboard(run, result, trained.epoch)
    log.info("%s: evaluated in %.1f s", run, result["seconds"])
    return result


def _ood_detection(
    model: torch.nn.Module,
    logits: torch.Tensor,
    x: torch.Tensor,
    config: TrainConfig,
    ood: Sequence[str],
    *,
    batch_size: int,
    seed: int,
) -> dict[str, float]:
    """AUROC and FPR at 95 % TPR of the maximum softmax probability, test set against each OOD set."""
    g = torch.Generator().manual_seed(seed)
    inside = ood_score(logits, "msp")
    out_sets = {kind: make_ood(x, kind, generator=g) for kind in ood}
    other = OTHER_DATASET.get(config.dataset)
    # A real dataset of the same shape
    if other is not None and _files_found(other, config.data_dir):
        out_sets[other] = idx_images.load(other, config.data_dir)[2]
    elif other == "mnist":  # no MNIST files: scikit-learn's handwritten digits, framed as MNIST's
        out_sets["digits"] = digits.load_28x28()
    result: dict[str, float] = {}
    for kind, x_out in out_sets.items():
        with torch.no_grad():
            out_logits = torch.cat(
                [model(x_out[i : i + batch_size]) for i in range(0, len(x_out), batch_size)]
            )
        outside = ood_score(out_logits, "msp")
        result[f"ood_{kind}_auroc"] = auroc(inside, outside)
        result[f"ood_{kind}_fpr95"] = fpr_at_tpr(inside, outside, 0.95)
    return result


def _to_tensorboard(run: Path, result: dict[str, Any], epoch: int | None) -> None:
    """Every number of ``result`` as ``eval/<key>`` at ``epoch``, the epoch of the weights measured
    (where the file does not say: the run's chosen epoch from summary.json, else 0)."""
    board = tensorboard_writer(run)
    if epoch is None:
        epoch = _chosen_epoch(run / "summary.json")
    for key, value in result.items():
        if isinstance(value, float):
            board.add_scalar(f"eval/{key}", value, epoch)
    board.close()


def _chosen_epoch(summary: Path) -> int:
    """The epoch ``summary.json`` says was chosen on validation; 0 where it says none (no file, a
    file cut short, a run that diverged)."""
    try:
        return int((read_summary(summary).get("best") or {}).get("epoch", 0))
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


def _plot_embedding(
    z: torch.Tensor, y: torch.Tensor, path: Path, *, title: str, tsne_points: int = 500
) -> None:
    """PCA of all embeddings and t-SNE of the first ``tsne_points`` (t-SNE is quadratic), coloured by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from multimix._io import atomic_write

    n = min(tsne_points, len(z))
    views = [("PCA", PCA(n_components=2, random_state=0).fit_transform(z.numpy()), y.numpy())]
    if n > 5:
        tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=0)
        views.append((f"t-SNE ({n} examples)", tsne.fit_transform(z[:n].numpy()), y[:n].numpy()))
    fig, axes = plt.subplots(1, len(views), figsize=(4.2 * len(views), 4), dpi=120, squeeze=False)
    for ax, (name, points, labels) in zip(axes[0], views, strict=True):
        scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=4, alpha=0.7)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(
        *scatter.legend_elements(), fontsize=6, title="class", title_fontsize=7, loc="best"
    )
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)


def format_eval_table(results: list[dict[str, Any]]) -> str:
    """A Markdown table, one row per run: the weights measured (file and epoch), accuracy, calibration,
    robustness, OOD and geometry."""
    # Runs may differ in their metrics (a real OOD set only where its files are found): a column per metric seen.
    skip = ("run", "weights", "weights_epoch", "seconds", "eps")
    keys = list(dict.fromkeys(k for r in results for k in r if k not in skip))
    lines = ["| run | weights | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for r in results:
        lines.append(
            f"| {r['run']} | {r.get('weights', '—')} | "
            + " | ".join(f"{r[k]:.4f}" if k in r else "—" for k in keys)
            + " |"
        )
    return "\n".join(lines)


__all__ = ["evaluate_run", "default_eps", "format_eval_table", "ATTACKS", "NonFiniteOutputs"]
