"""Damaged weight files (train/checkpoint.py's verification): each is refused with one line naming the
file and what to do.

The damage is done to the bytes on disk, as a failing disk, a bad copy or a cosmic ray would: one bit
flipped in the middle of a weight's data (which torch.load alone reads back without a complaint), the
file cut short, emptied, or replaced by random bytes.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import cli, tiny_config
from multimix.train import CheckpointError, checkpoint, train

SRC = Path(__file__).resolve().parents[1] / "src" / "multimix"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run (2 epochs: checkpoint.pt, best.pt, summary.json), trained once per module."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train(tiny_config(), run, progress=False)
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A copy of the trained run that a test may damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def flip_bit_in_a_weight(path: Path) -> tuple[str, float, float]:
    """Flip one bit of the middle element of the largest weight in ``path`` (an exponent bit of a
    float32, little-endian), in place; returns the weight's name, the element before and after."""
    state = torch.load(path, weights_only=True)
    name, weight = max(state["model"].items(), key=lambda kv: kv[1].numel())
    data = bytearray(path.read_bytes())
    start = data.find(weight.contiguous().numpy().tobytes())
    assert start > 0 and weight.dtype == torch.float32
    middle = weight.numel() // 2
    data[start + 4 * middle + 3] ^= 0x40
    path.write_bytes(bytes(data))
    return (
        name,
        float(weight.flatten()[middle]),
        float(load_unverified(path)[name].flatten()[middle]),
    )


def load_unverified(path: Path) -> dict[str, torch.Tensor]:
    """The model weights as torch.load reads them, checksums unchecked (what multimix did before)."""
    return torch.load(path, weights_only=True)["model"]


def data_offset(path: Path, member_suffix: str) -> int:
    """Where the bytes of the zip record ending in ``member_suffix`` start in ``path``."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(member_suffix))
    raw = path.read_bytes()
    local = info.header_offset
    name_len = int.from_bytes(raw[local + 26 : local + 28], "little")
    extra_len = int.from_bytes(raw[local + 28 : local + 30], "little")
    return local + 30 + name_len + extra_len


def evaluate(run: Path, capsys, *extra: str) -> tuple[int, list[str], str]:
    """``multimix evaluate RUN`` in this process, cheap options: (exit code, stderr lines, stdout)."""
    from multimix.cli import main

    capsys.readouterr()
    argv = ["evaluate", str(run), "--attacks", "", "--ood", "gaussian", "--quiet", *extra]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


def assert_one_line(code: int, err: list[str], *fragments: str) -> None:
    assert code == 2, err
    assert len(err) == 1, err
    for fragment in fragments:
        assert fragment in err[0], (fragment, err[0])


# -- 1. damaged files --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["checkpoint.pt", "best.pt"])
def test_a_flipped_bit_in_a_weight_is_refused_with_the_record_named(run, name):
    path = run / name
    _, before, after = flip_bit_in_a_weight(path)
    # torch.load alone reads the damaged weight back as if nothing happened: this is what is caught.
    assert before != after
    with pytest.raises(CheckpointError) as exc:
        checkpoint.load(path)
    message = str(exc.value)
    assert message.startswith(f"{path} is damaged (record ")
    assert "/data/" in message and "fails its CRC-32 checksum" in message
    if name == "best.pt":
        assert "training the run again" in message and "checkpoint.pt" in message
    else:
        assert "move it aside or delete it to start over" in message


def test_a_flipped_bit_in_the_pickle_record_is_refused(run):
    path = run / "checkpoint.pt"
    data = bytearray(path.read_bytes())
    data[data_offset(path, "/data.pkl") + 40] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"record \S+/data\.pkl fails its CRC-32 checksum"):
        checkpoint.load(path)


def test_data_offset_finds_the_tensor_bytes(run):
    """The helper above reads a zip's local header right: the first data record holds a weight's bytes."""
    path = run / "best.pt"
    start = data_offset(path, "/data/0")
    raw = path.read_bytes()
    weights = load_unverified(path)
    assert any(raw[start : start + 16] == w.numpy().tobytes()[:16] for w in weights.values())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[: len(b) // 2], "is damaged: cut short, or its zip structure is broken"),
        (lambda b: b[:-1], "is damaged: cut short, or its zip structure is broken"),
        (lambda b: b"", "is empty (0 bytes)"),
        (lambda b: os.urandom(len(b)), "is not a readable checkpoint"),
        (lambda b: b"PK\x03\x04" + os.urandom(500), "is damaged: cut short"),
        # The central directory's end record (the archive's last 22 bytes) overwritten
        (lambda b: b[:-22] + bytes(22), "is damaged: cut short, or its zip structure is broken"),
    ],
    ids=["half", "last-byte-cut", "empty", "random-bytes", "zip-magic-then-noise", "no-end-record"],
)
@pytest.mark.parametrize("name", ["checkpoint.pt", "best.pt"])
def test_cut_emptied_or_random_files_are_refused(run, name, damage, message):
    path = run / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError) as exc:
        checkpoint.load(path)
    text = str(exc.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text
    advice = "training the run again" if name == "best.pt" else "to start over"
    assert advice in text


def test_an_intact_file_loads_and_a_legacy_non_zip_file_is_left_to_torch(run, tmp_path):
    state = checkpoint.load(run / "checkpoint.pt")
    checkpoint.verify(run / "best.pt")
    # torch's pre-1.6 format carries no checksums: it is read as before (torch.load judges it).
    legacy = tmp_path / "legacy.pt"
    torch.save(
        {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "x": torch.ones(3)},
        legacy,
        _use_new_zipfile_serialization=False,
    )
    assert torch.equal(checkpoint.load(legacy)["x"], torch.ones(3))
    assert state["format"] == checkpoint.FORMAT


def test_every_reader_of_checkpoint_files_goes_through_the_verification():
    """Only checkpoint.py calls torch.load; the others call checkpoint.load, which verifies first."""
    readers = [p for p in SRC.rglob("*.py") if "torch.load(" in p.read_text()]
    assert readers == [SRC / "train" / "checkpoint.py"]


@pytest.mark.slow  # two CLI processes
def test_flipped_bits_end_resume_and_evaluate_with_one_line(trained, tmp_path):
    """`multimix train --resume` of a run with an epoch left, and `multimix evaluate`, both exit 2
    with one line naming the damaged file; the intact run resumes."""
    run = Path(shutil.copytree(trained, tmp_path / "run"))
    # An epoch left: the checkpoint as it was after epoch 1 of 2 (its history cut; written intact).
    state = checkpoint.load(run / "checkpoint.pt")
    checkpoint.save(run / "checkpoint.pt", {**state, "history": state["history"][:1]})
    (run / "summary.json").unlink()
    intact = Path(shutil.copytree(run, tmp_path / "intact"))
    flip_bit_in_a_weight(run / "checkpoint.pt")
    result = cli("train", "--out", str(run), "--resume", "--quiet")
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1, result.stderr
    assert f"{run / 'checkpoint.pt'} is damaged (record " in err[0]

    flip_bit_in_a_weight(run / "best.pt")
    result = cli("evaluate", str(run), "--quiet")
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1, result.stderr
    assert f"{run / 'best.pt'} is damaged (record " in err[0] and "training the run again" in err[0]
    assert not (run / "eval.json").exists()

    train(tiny_config(), intact, resume=True, progress=False)
    assert (intact / "summary.json").is_file()


@pytest.mark.parametrize("damage", ["flip", "half", "empty"])
def test_evaluate_refuses_a_damaged_best_pt_in_one_line(run, capsys, damage):
    path = run / "best.pt"
    if damage == "flip":
        flip_bit_in_a_weight(path)
    else:
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2] if damage == "half" else b"")
    code, err, _ = evaluate(run, capsys)
    assert_one_line(code, err, str(path), "training the run again")
    assert not (run / "eval.json").exists()
