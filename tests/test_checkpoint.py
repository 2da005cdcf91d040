"""Checkpoints (multimix.train.checkpoint): a damaged, mismatched or malicious file gets a clear error,
and the code in a malicious pickle never runs. What compare does with a damaged run: test_cli.py."""

from __future__ import annotations

import os

import pytest
import torch

from conftest import cli, tiny_config
from multimix.train import CheckpointError, ConfigError, checkpoint, train


@pytest.mark.slow
def test_corrupt_and_mismatched_checkpoints_give_clear_errors(tmp_path):
    config = tiny_config()
    train(config, tmp_path)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(config, tmp_path)
    other = tiny_config(lr=0.5)
    with pytest.raises(
        CheckpointError, match=rf"other settings \(given vs saved\): lr: 0.5 vs {config.lr}"
    ):
        train(other, tmp_path, resume=True)
    data = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError,
        match=r"is damaged: cut short, or its zip structure is broken .*move it aside or delete it to start over",
    ):
        train(config, tmp_path, resume=True)
    # A pickle that would run code when loaded is refused, and the code never runs.
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "multimix-checkpoint", "version": 1, "x": _Payload(str(marker))}, evil)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(evil)
    assert not marker.exists()
    result = cli("train", "--out", str(tmp_path), "--resume")
    assert result.returncode == 2 and "is damaged: cut short" in result.stderr
    assert "Traceback" not in result.stderr


class _Payload:
    """Unpickling this would create a file: what a malicious checkpoint could do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))
