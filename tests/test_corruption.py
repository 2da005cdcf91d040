"""Damaged, mismatched and diverged weight files (train/checkpoint.py's verification, components.py's
trained_model, train/evaluation.py): each is refused with one line naming the file and what to do, and
``multimix evaluate`` says which weights it measured.

The damage is done to the bytes on disk, as a failing disk, a bad copy or a cosmic ray would: one bit
flipped in the middle of a weight's data (which torch.load alone reads back without a complaint), the
file cut short, emptied, or replaced by random bytes.
"""

from __future__ import annotations

import json
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


# -- dangling, unreadable ------------------------------------------------------------------------------


def test_evaluate_refuses_a_dangling_best_pt_link_rather_than_measuring_another_epoch(run, capsys):
    (run / "best.pt").unlink()
    (run / "best.pt").symlink_to(run / "moved" / "best.pt")
    code, err, _ = evaluate(run, capsys)
    assert_one_line(code, err, f"{run / 'best.pt'} is a symbolic link to", "which does not exist")


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file whatever its mode"
)
def test_evaluate_refuses_an_unreadable_best_pt_in_one_line(run, capsys):
    (run / "best.pt").chmod(0)
    try:
        code, err, _ = evaluate(run, capsys)
    finally:
        (run / "best.pt").chmod(0o644)
    assert_one_line(code, err, f"{run / 'best.pt'} cannot be read", "Permission")


def test_a_file_that_cannot_be_opened_is_named_with_its_error(run, capsys, monkeypatch):
    """What chmod 000 gives a user other than root (who reads any file), whatever user runs the tests."""
    real_open = Path.open

    def refuse(self, *args, **kwargs):
        if self.name == "best.pt":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    code, err, _ = evaluate(run, capsys)
    assert_one_line(code, err, f"{run / 'best.pt'} cannot be read (PermissionError")


def test_a_folder_named_best_pt_is_refused(run, capsys):
    (run / "best.pt").unlink()
    (run / "best.pt").mkdir()
    code, err, _ = evaluate(run, capsys)
    assert_one_line(code, err, f"{run / 'best.pt'} is a folder")


# -- 2. weights that do not fit the model ----------------------------------------------------------


def _rewrite_weights(path: Path, change) -> None:
    """Rewrite ``path`` through checkpoint.save (so its checksums hold) with its weights changed."""
    state = checkpoint.load(path)
    state["model"] = change(dict(state["model"]))
    checkpoint.save(path, {k: v for k, v in state.items() if k not in ("format", "version")})


def _rename_first(w):
    key = next(iter(w))
    return {("renamed." + k if k == key else k): v for k, v in w.items()}


def _reshape_first_matrix(w):
    key = next(k for k, v in w.items() if v.dim() == 2)
    return {**w, key: torch.zeros(w[key].shape[0] + 1, w[key].shape[1])}


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (_rename_first, ["1 weight(s) missing, the first", "1 unexpected, the first 'renamed."]),
        (lambda w: dict(list(w.items())[1:]), ["1 weight(s) missing, the first"]),
        (
            lambda w: {**w, "extra.weight": torch.zeros(2)},
            ["1 unexpected, the first 'extra.weight'"],
        ),
        (_reshape_first_matrix, ["1 of another shape, the first", "where the model has"]),
        (lambda w: {k: v.tolist() for k, v in w.items()}, ["holds no model weights"]),
    ],
    ids=["renamed", "missing", "unexpected", "reshaped", "not-tensors"],
)
def test_weights_that_do_not_fit_the_model_are_named(run, capsys, change, fragments):
    from multimix.train.components import model_from_checkpoint

    path = run / "best.pt"
    _rewrite_weights(path, change)
    with pytest.raises(CheckpointError) as exc:
        model_from_checkpoint(path)
    assert str(exc.value).startswith(str(path)) and "\n" not in str(exc.value)
    for fragment in fragments:
        assert fragment in str(exc.value)
    code, err, _ = evaluate(run, capsys)
    assert_one_line(code, err, str(path), *fragments)


def test_a_checkpoint_without_weights_is_named(run):
    from multimix.train.components import model_from_checkpoint

    state = checkpoint.load(run / "checkpoint.pt")
    del state["model"]
    checkpoint.save(run / "checkpoint.pt", state)
    with pytest.raises(
        CheckpointError, match=r"holds no model weights \(its 'model' entry is NoneType"
    ):
        model_from_checkpoint(run / "checkpoint.pt")


# -- 3. a diverged run -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_evaluate_says_a_diverged_run_has_nothing_to_evaluate(run, capsys, value):
    def poison(w):
        key = next(k for k, v in w.items() if v.dim() == 2)
        bad = w[key].clone()
        bad[0, 0] = value
        return {**w, key: bad}

    _rewrite_weights(run / "best.pt", poison)
    code, err, _ = evaluate(run, capsys)
    assert_one_line(
        code,
        err,
        f"{run}: the model's outputs on the test set are not finite",
        "best.pt (epoch",
        "the run diverged; nothing to evaluate",
    )
    assert not (run / "eval.json").exists()


# -- 4. which weights were measured --------------------------------------------------------------


@pytest.mark.slow  # two evaluations (a t-SNE each)
def test_evaluate_says_which_weights_it_measured(run, capsys):
    best_epoch = json.loads((run / "summary.json").read_text())["best"]["epoch"]
    code, _, out = evaluate(run, capsys)
    result = json.loads((run / "eval.json").read_text())
    assert code == 0 and result["weights"] == f"best.pt (epoch {best_epoch})"
    assert result["weights_epoch"] == best_epoch
    assert f"| {run} | best.pt (epoch {best_epoch}) |" in out

    # A run without best.pt (killed before its first improvement, or best.pt deleted): the last epoch.
    (run / "best.pt").unlink()
    code, _, out = evaluate(run, capsys)
    result = json.loads((run / "eval.json").read_text())
    assert code == 0 and result["weights"] == "checkpoint.pt (last epoch 2; no best.pt)"
    assert result["weights_epoch"] == 2
    assert f"| {run} | checkpoint.pt (last epoch 2; no best.pt) |" in out


def test_trained_model_tells_the_epoch_of_its_weights(run):
    from multimix.train.components import trained_model

    best_epoch = json.loads((run / "summary.json").read_text())["best"]["epoch"]
    assert trained_model(run / "best.pt").epoch == best_epoch
    last = trained_model(run / "checkpoint.pt")
    assert last.epoch == 2 and not last.model.training


@pytest.mark.slow  # a CLI process
def test_the_cli_subprocess_shows_no_traceback_for_a_diverged_run(run):
    """The same one line from a fresh process (nothing of pytest's in-process setup)."""
    _rewrite_weights(
        run / "best.pt", lambda w: {k: torch.full_like(v, float("nan")) for k, v in w.items()}
    )
    result = cli("evaluate", str(run), "--attacks", "", "--ood", "gaussian", "--quiet")
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1 and "Traceback" not in result.stderr
    assert "the run diverged" in err[0]
