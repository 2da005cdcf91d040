"""Default training recipes per dataset: what a run gets for the options the user does not give.

Mixing regularises, and a regulariser needs a schedule long enough to pay off: with a generic short
schedule every mixing method scores below ERM. So each dataset has a recipe — epochs, batch size,
optimizer, learning rate, weight decay — chosen on the **validation** split by
``benchmarks/recipes.py`` for ERM and manifold mixup *together* (a recipe that only suits ERM makes
every regulariser look bad). Its table, with the validation figures behind each choice, is
``benchmarks/results/recipes.md``. Augmentation is part of each dataset (see :mod:`multimix.data`).

A flag or a ``--config`` key always wins over the recipe; the resolved values are recorded in the
run's ``config.yaml`` and checkpoint, so resuming never depends on this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """The optimisation settings a dataset gets by default, and why."""

    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    why: str
    train_subset: int | None = None  # None: the whole training set


#: The options a recipe sets (each a TrainConfig field).
RECIPE_KEYS = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "train_subset")

#: Datasets with no recipe chosen on validation yet get the library's generic settings.
GENERIC = Recipe(
    30, 100, "adam", 1e-3, 0.0, "no recipe chosen on validation yet: the generic settings"
)

#: Chosen by ``python benchmarks/recipes.py`` (grid lr {1e-3, 3e-3, 1e-2} × epochs {30, 100}, Adam,
#: batch 100, ERM and manifold mixup, 2 seeds, validation accuracy): benchmarks/results/recipes.md.
#: Validation accuracy (%) of ERM / manifold mixup at the chosen setting, mean of 2 seeds, in each reason.
RECIPES: dict[str, Recipe] = {
    "mnist1d": Recipe(
        100,
        100,
        "adam",
        1e-2,
        0.0,
        "best pair mean, 94.4 / 99.1 (next: lr 3e-3, 92.5 / 95.5); at the grid's corner, as "
        "the demo configuration (--config demo), also tuned on validation",
    ),
    "mnist1d-shuffled": Recipe(
        100,
        100,
        "adam",
        1e-2,
        0.0,
        "best pair mean, 59.1 / 59.0; at the grid's corner: this harder task may want "
        "longer training still",
    ),
    "digits": Recipe(
        100, 100, "adam", 3e-3, 0.0, "best pair mean, 97.2 / 98.6 (30 epochs: mixing lags ERM)"
    ),
    "toy": Recipe(
        30,
        100,
        "adam",
        1e-3,
        0.0,
        "every cell within 1 point (81.0 pair mean at best): the shortest, lowest-lr of the ties",
    ),
    "spirals": Recipe(
        100, 100, "adam", 1e-3, 0.0, "best pair mean, 100 / 99 (30 epochs: manifold mixup 92)"
    ),
    # Real images, on a stratified subset so that a run on two CPU cores takes minutes (the full sets: pass
    # --train-subset all, and choose epochs for them). benchmarks/results/recipes_images.md: grid lr {1e-3, 3e-3,
    # 1e-2} × epochs {10, 20, 40}, the same protocol otherwise.
    "fashion-mnist": Recipe(
        40,
        100,
        "adam",
        1e-2,
        0.0,
        "best pair mean on 6000 training examples, 92.5 / 92.3 (20 epochs at best 90.7 / 89.7: "
        "manifold mixup trails ERM there); the grid's corner, so it may want more epochs still",
        train_subset=6000,
    ),
    "mnist": Recipe(
        40,
        100,
        "adam",
        1e-2,
        0.0,
        "Fashion-MNIST's recipe (same images, same model), not chosen on MNIST's own validation split: "
        "its files are not available offline where the recipes were chosen",
        train_subset=6000,
    ),
    "kmnist": Recipe(
        40,
        100,
        "adam",
        1e-2,
        0.0,
        "Fashion-MNIST's recipe (same images, same model), not chosen on KMNIST's own validation split: "
        "its files are not available offline where the recipes were chosen",
        train_subset=6000,
    ),
}


def recipe_for(dataset: str) -> Recipe:
    """The recipe of ``dataset`` (:data:`GENERIC` where none has been chosen)."""
    return RECIPES.get(dataset, GENERIC)


def describe() -> str:
    """One line per dataset with a recipe, for ``--help`` and the README."""
    lines = [
        f"{name}: {r.epochs} epochs, batch {r.batch_size}, {r.optimizer} lr {r.lr:g}, weight decay "
        f"{r.weight_decay:g}"
        + ("" if r.train_subset is None else f", {r.train_subset} training examples")
        for name, r in RECIPES.items()
    ]
    lines.append(
        f"other datasets: {GENERIC.epochs} epochs, batch {GENERIC.batch_size}, {GENERIC.optimizer} lr "
        f"{GENERIC.lr:g}, weight decay {GENERIC.weight_decay:g}"
    )
    return "; ".join(lines)


@dataclass(frozen=True)
class NamedRecipe:
    """A published training protocol, chosen with ``--recipe NAME``: the settings it fixes.

    Attributes:
        name: what ``--recipe`` takes.
        source: where the protocol comes from.
        datasets: the datasets it is defined for.
        settings: TrainConfig keys and values for every method.
        model: the model it trains.
        mixing: keys and values for the methods in ``mixing_methods`` (the paper's mixing protocol).
        mixing_methods: the methods ``mixing`` applies to.
    """

    name: str
    source: str
    datasets: tuple[str, ...]
    settings: dict[str, Any]
    model: str
    mixing: dict[str, Any]
    mixing_methods: tuple[str, ...]

    def values_for(self, method: str) -> dict[str, Any]:
        """The keys and values this recipe sets for a run of ``method``."""
        values = {**self.settings, "model": self.model}
        if method in self.mixing_methods:
            values.update(self.mixing)
        return values

    def describe(self) -> str:
        """One line for ``--help``: what the recipe sets."""

        def show(values: dict[str, Any]) -> str:
            return ", ".join(f"{k.replace('_', '-')} {_text(v)}" for k, v in values.items())

        return (
            f"{self.name} ({self.source}; {', '.join(self.datasets)}): model {self.model}, "
            f"{show(self.settings)}; for {' and '.join(self.mixing_methods)} also {show(self.mixing)}"
        )


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(f"{v:g}" for v in value)
    return "all" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


#: The protocols ``--recipe`` names. Epochs are the user's (the papers train CIFAR for 2000 epochs).
NAMED_RECIPES: dict[str, NamedRecipe] = {
    "alignmixup": NamedRecipe(
        name="alignmixup",
        source="the training code of AlignMixup (CVPR 2022), whose protocol MultiMix's comparison follows",
        datasets=("cifar10", "cifar100", "fashion-mnist"),
        settings=dict(
            optimizer="sgd",
            lr=0.1,
            momentum=0.9,
            nesterov=False,
            weight_decay=1e-4,
            batch_size=128,
            scheduler="step",
            milestones=[0.25, 0.5, 0.75],
            lr_decay=0.1,
        ),
        model="preactresnet18",
        # MultiMix's paper: the whole batch (m = b), n = 1000, each member's α ~ U(0.5, 2) per batch,
        # a fair coin per batch between input mixup and the embedding-space mix.
        mixing=dict(
            mix_rows=1000,
            tuple_size=None,
            alpha_range=[0.5, 2.0],
            input_mixup_prob=0.5,
        ),
        mixing_methods=("multimix", "dense-multimix"),
    ),
}


__all__ = [
    "Recipe",
    "RECIPES",
    "RECIPE_KEYS",
    "GENERIC",
    "recipe_for",
    "describe",
    "NamedRecipe",
    "NAMED_RECIPES",
]
