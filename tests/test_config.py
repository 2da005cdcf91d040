"""multimix.train.config: errors that name the key and its valid values; renamed keys (n, m, p) still
read, with a warning that names the new one."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

from multimix.cli import main
from multimix.train.config import RENAMED_KEYS, ConfigError, TrainConfig

OLD_VALUES = {"n": 300, "m": 3, "p": 0.5}


@pytest.mark.parametrize(("old", "new"), list(RENAMED_KEYS.items()))
def test_an_old_key_is_read_under_its_new_name_with_a_warning(old, new):
    with pytest.warns(DeprecationWarning, match=f"'{old}' is deprecated; use '{new}'"):
        config = TrainConfig.from_dict({"method": "multimix", old: OLD_VALUES[old]})
    assert getattr(config, new) == OLD_VALUES[old]
    with pytest.warns(DeprecationWarning, match=f"'{old}' is deprecated"):
        assert TrainConfig(**{old: OLD_VALUES[old]}) == TrainConfig(**{new: OLD_VALUES[old]})
    with pytest.warns(DeprecationWarning, match=f"'{old}' is deprecated"):
        assert getattr(config, old) == OLD_VALUES[old]


@pytest.mark.parametrize(("old", "new"), list(RENAMED_KEYS.items()))
def test_an_old_key_and_its_new_name_together_is_an_error(old, new):
    with pytest.raises(ConfigError, match=f"{old} and {new} given together"):
        TrainConfig.from_dict({old: OLD_VALUES[old], new: OLD_VALUES[old]})


def test_a_checkpoint_of_an_earlier_version_is_read_silently():
    saved = {
        k: v
        for k, v in TrainConfig(method="multimix").to_dict().items()
        if k not in RENAMED_KEYS.values()
    }
    saved.update(n=200, m=None, p=1.0)  # how earlier versions saved these keys
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = TrainConfig.from_dict(saved, source="saved")
    assert (config.mix_rows, config.tuple_size, config.mix_prob) == (200, None, 1.0)
    assert dataclasses.replace(config, seed=1).mix_rows == 200


def test_the_cli_takes_the_old_flags_with_a_one_line_warning(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "toy",
        "--method",
        "multimix",
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
    assert main([*args, "--n", "50", "--m", "3"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "multimix: warning: --n is deprecated; use --mix-rows" in err
    assert "multimix: warning: --m is deprecated; use --tuple-size" in err
    assert "mix_rows: 50\ntuple_size: 3\n" in (out / "config.yaml").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--n", "50", "--mix-rows", "40"])
    assert exit_info.value.code == 2
    assert "multimix: error: n and mix_rows given together" in capsys.readouterr().err


def test_a_config_file_with_an_old_key_warns_in_one_line_and_flags_still_override_it(
    tmp_path, capsys
):
    file = tmp_path / "old.yaml"
    file.write_text(
        "dataset: toy\nmethod: multimix\nepochs: 1\ntrain_size: 200\nn: 30\nthreads: 1\n"
    )
    assert (
        main(
            [
                "train",
                "--config",
                str(file),
                "--mix-rows",
                "20",
                "--quiet",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    assert (
        "multimix: warning: the option 'n' is deprecated; use 'mix_rows' (--mix-rows)"
        in capsys.readouterr().err
    )
    assert "mix_rows: 20\n" in (tmp_path / "r" / "config.yaml").read_text()


def test_config_errors_name_key_and_valid_values(tmp_path):
    with pytest.raises(
        ConfigError,
        match="unknown option key 'epoch'; valid keys: dataset, model, method, recipe, epochs",
    ):
        TrainConfig.from_dict({"epoch": 3}, source="option")
    with pytest.raises(
        ConfigError,
        match="invalid value for method: 'puzzlemix'; valid values: erm, mixup, manifold, multimix",
    ):
        TrainConfig.from_dict({"method": "puzzlemix"})
    with pytest.raises(
        ConfigError, match=r"invalid value for lr: -1.0; expected a finite number > 0"
    ):
        TrainConfig.from_dict({"lr": -1})
    with pytest.raises(ConfigError, match=r"invalid value for epochs: 'ten'"):
        TrainConfig.from_dict({"epochs": "ten"})
    with pytest.raises(
        ConfigError, match=r"invalid value for alpha: 0.0; expected a finite number > 0"
    ):
        TrainConfig.from_dict({"alpha": 0})
    with pytest.raises(ConfigError, match=r"invalid value for tuple_size: 0"):
        TrainConfig.from_dict({"tuple_size": 0})
    assert (
        TrainConfig.from_dict(
            {"tuple-size": "all", "batch-size": "64", "layers": "input,layer1"}
        ).tuple_size
        is None
    )
