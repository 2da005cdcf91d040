"""Default recipes per dataset: applied when an option is absent, never when it is given."""

from __future__ import annotations

import pytest
import yaml

from multimix.cli import main
from multimix.train import recipes
from multimix.train.config import TrainConfig
from multimix.train.recipes import GENERIC, RECIPE_KEYS, Recipe, recipe_for

TOY = Recipe(
    epochs=2, batch_size=50, optimizer="sgd", lr=0.05, weight_decay=1e-4, why="a test recipe"
)
RUN = ["--dataset", "toy", "--train-size", "300", "--threads", "1", "--quiet"]


@pytest.fixture
def toy_recipe(monkeypatch):
    monkeypatch.setitem(recipes.RECIPES, "toy", TOY)
    return TOY


def recorded(out) -> dict:
    return yaml.safe_load((out / "config.yaml").read_text())


def test_every_recipe_is_a_valid_config():
    for dataset, recipe in recipes.RECIPES.items():
        config = TrainConfig.from_dict({"dataset": dataset})
        assert {k: getattr(config, k) for k in RECIPE_KEYS} == {
            k: getattr(recipe, k) for k in RECIPE_KEYS
        }
        assert recipe.why


def test_a_dataset_without_a_recipe_gets_the_generic_settings():
    assert recipe_for("no such dataset") is GENERIC
    config = (
        TrainConfig.from_dict({"dataset": "cifar100"})
        if "cifar100" not in recipes.RECIPES
        else None
    )
    if config is not None:
        assert (config.epochs, config.lr, config.optimizer) == (
            GENERIC.epochs,
            GENERIC.lr,
            GENERIC.optimizer,
        )


def test_the_recipe_fills_absent_options_and_is_recorded(tmp_path, toy_recipe):
    assert main(["train", *RUN, "--out", str(tmp_path / "run")]) == 0
    saved = recorded(tmp_path / "run")
    assert {k: saved[k] for k in RECIPE_KEYS} == {k: getattr(TOY, k) for k in RECIPE_KEYS}


def test_a_flag_wins_over_the_recipe(tmp_path, toy_recipe):
    assert (
        main(["train", *RUN, "--epochs", "1", "--lr", "0.01", "--out", str(tmp_path / "run")]) == 0
    )
    saved = recorded(tmp_path / "run")
    assert (saved["epochs"], saved["lr"]) == (1, 0.01)
    # The rest: recipe
    assert (saved["optimizer"], saved["batch_size"], saved["weight_decay"]) == (
        "sgd",
        50,
        1e-4,
    )


def test_a_config_file_wins_over_the_recipe(tmp_path, toy_recipe):
    (tmp_path / "c.yaml").write_text("epochs: 1\noptimizer: adam\n")
    assert (
        main(["train", *RUN, "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")])
        == 0
    )
    saved = recorded(tmp_path / "run")
    assert (saved["epochs"], saved["optimizer"], saved["lr"]) == (1, "adam", 0.05)


def test_resuming_uses_the_recorded_values_not_a_recipe_changed_since(
    tmp_path, monkeypatch, toy_recipe
):
    out = tmp_path / "run"
    assert main(["train", *RUN, "--out", str(out)]) == 0
    monkeypatch.setitem(recipes.RECIPES, "toy", Recipe(5, 20, "adam", 0.3, 0.0, "changed since"))
    # No "other settings" error
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    saved = recorded(out)
    assert {k: saved[k] for k in RECIPE_KEYS} == {k: getattr(TOY, k) for k in RECIPE_KEYS}


def test_help_lists_the_recipes(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "the dataset's recipe" in capsys.readouterr().out


def test_a_recipe_may_train_on_a_subset_and_all_overrides_it(tmp_path, monkeypatch):
    monkeypatch.setitem(
        recipes.RECIPES,
        "digits",
        Recipe(
            epochs=1,
            batch_size=50,
            optimizer="adam",
            lr=1e-3,
            weight_decay=0.0,
            why="a test recipe",
            train_subset=300,
        ),
    )
    run = ["--dataset", "digits", "--threads", "1", "--quiet"]
    assert main(["train", *run, "--out", str(tmp_path / "part")]) == 0
    assert recorded(tmp_path / "part")["train_subset"] == 300
    assert main(["train", *run, "--train-subset", "all", "--out", str(tmp_path / "all")]) == 0
    assert recorded(tmp_path / "all")["train_subset"] == 0
    assert (
        "digits: 1 epochs, batch 50, adam lr 0.001, weight decay 0, 300 training examples"
        in recipes.describe()
    )
