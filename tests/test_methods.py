"""multimix.train.methods: the method registry, and everything that reads it (config checks, the
builder, --help, config.yaml's resolved values)."""

from __future__ import annotations

import pytest
import torch
import yaml

from multimix.cli import build_parser, main
from multimix.models import build_model
from multimix.train.config import METHODS, ConfigError, TrainConfig
from multimix.train.methods import METHODS as REGISTRY
from multimix.train.methods import build_mixer, get_method, methods_with


def test_every_method_of_the_config_is_in_the_registry_and_builds_its_mixer():
    assert tuple(REGISTRY) == METHODS
    for name, method in REGISTRY.items():
        config = TrainConfig.from_dict({"dataset": "mnist1d", "method": name})
        model = build_model("cnn1d", input_shape=(40,), num_classes=10)
        mixer = build_mixer(config, model, 10, torch.Generator().manual_seed(0))
        assert (mixer is None) == (name == "erm"), name
        assert method.summary and method.name == name
        if mixer is not None:
            mixer.close()


def test_an_unknown_method_names_the_valid_ones():
    with pytest.raises(
        ConfigError, match="unknown method 'puzzlemix'; valid methods: erm, mixup, manifold"
    ):
        get_method("puzzlemix")


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("teacher_momentum", 0.99, lambda m: m.teacher),
        ("mix_scope", "global", lambda m: m.global_scope),
        ("alpha_schedule", "linear", lambda m: m.has_alpha),
    ],
)
def test_the_options_only_some_methods_take_are_checked_by_the_registry(option, value, allowed):
    extra = {"alpha_start": 0, "alpha_end": 1} if option == "alpha_schedule" else {}
    for name, method in REGISTRY.items():
        values = {"method": name, option: value, **extra}
        if allowed(method):
            assert getattr(TrainConfig.from_dict(values), option) == value
        else:
            with pytest.raises(ConfigError, match=f"{option}.*{name!r}"):
                TrainConfig.from_dict(values)


def test_help_lists_every_method_and_says_which_methods_an_option_applies_to():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]  # the `train` subcommand's parser
    text = " ".join(train.format_help().split())
    for method in REGISTRY.values():
        assert f"{method.name}: {' '.join(method.summary.split())}" in text
    assert methods_with("tuple_size") == ["multimix", "dense-multimix"]
    assert (
        "--tuple-size TUPLE_SIZE multimix, dense-multimix: batch members each generated example mixes"
        in text
    )
    assert "--n " not in text  # the deprecated alias works but is not advertised


def test_the_warmup_belongs_to_the_method():
    config = TrainConfig.from_dict({"method": "confmix", "confmix_warmup": 2})
    assert [get_method("confmix").mixes_at(config, e) for e in (1, 2, 3)] == [False, False, True]
    assert all(get_method("mixup").mixes_at(config, e) for e in (1, 2, 3))


@pytest.mark.parametrize(
    ("values", "rows", "alpha", "layers"),
    [
        ({"method": "manifold"}, 100, 2.0, "model"),
        ({"method": "manifold", "layers": "input", "alpha": 0.5}, 100, 0.5, ["input"]),
        ({"method": "confmix"}, 100, None, ["input"]),
        ({"method": "multimix"}, 100, 1.0, None),
        ({"method": "multimix", "tuple_size": 4}, 100, 0.25, None),
        ({"method": "dense-multimix", "tuple_size": "all"}, 50, 1 / 50, None),
        # A batch shorter than m mixes all of it
        (
            {"method": "multimix", "tuple_size": 8},
            5,
            1 / 5,
            None,
        ),
        ({"method": "erm"}, 100, None, None),
    ],
)
def test_the_values_a_run_uses_are_resolved_from_its_defaults(values, rows, alpha, layers):
    model = build_model("cnn1d", input_shape=(40,), num_classes=10)
    config = TrainConfig.from_dict({"dataset": "mnist1d", **values})
    used = get_method(config.method).values_used(config, model, rows=rows)
    assert used["alpha"] == pytest.approx(alpha) if alpha is not None else used["alpha"] is None
    assert used.get("layers") == (model.manifold_layers if layers == "model" else layers)


def test_config_yaml_records_the_values_the_run_used(tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "toy",
                "--method",
                "manifold",
                "--epochs",
                "1",
                "--train-size",
                "200",
                "--threads",
                "1",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert (
        recorded["alpha"] == 2.0
        and recorded["layers"]
        == build_model("mlp", input_shape=(2,), num_classes=3).manifold_layers
    )
    assert recorded["model"] == "mlp" and recorded["epochs"] == 1
    # The recorded file reproduces the run: as a --config, it gives the same settings.
    again = TrainConfig.from_dict(dict(recorded.items()))
    assert (
        again.differences(
            TrainConfig.from_dict(
                {
                    "dataset": "toy",
                    "method": "manifold",
                    "epochs": 1,
                    "train_size": 200,
                    "alpha": 2.0,
                    "layers": recorded["layers"],
                    "model": "mlp",
                }
            )
        )
        == []
    )
