"""Data files of any size checked before training (issue 23, section 5): the counts the split needs,
empty sets, label bytes out of range, and a run resumed on other files than it started with.

Every file is small and written here, in the release's format (IDX for the MNIST family, CIFAR's binary
batches); the CLI runs in this process (``main``), as test_cli's bad-flag table runs it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_config, write_idx_release
from multimix.cli import main
from multimix.data import CorruptDataFile, cifar, load_dataset, summarise_files
from multimix.data.idx import read_idx_header, write_idx
from multimix.data.splits import class_counts_of_split, split_indices
from multimix.train.config import ConfigError
from multimix.train.preflight import check_runnable

#: A Fashion-MNIST run as small as the CLI allows: one epoch, one thread, a small model.
IMAGES_RUN = ["--dataset", "fashion-mnist", "--epochs", "1", "--threads", "1", "--quiet"]


def refused(argv: list[str], capsys) -> str:
    """The one line ``multimix ARGV`` ends with, having exited with code 2."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def train_argv(data, out, *extra: str) -> list[str]:
    return ["train", *IMAGES_RUN, "--data-dir", str(data), "--out", str(out), *extra]


def write_labels(folder, name: str, labels) -> None:
    write_idx(folder / f"{name}.gz", np.asarray(labels, dtype=np.uint8))


# -- counts, from the files' headers, before any work ------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "file", "role"),
    [
        ({"n_train": 0}, "train-images-idx3-ubyte.gz", "training"),
        ({"n_test": 0}, "t10k-images-idx3-ubyte.gz", "test"),
    ],
)
def test_an_empty_training_or_test_set_is_refused_naming_its_file(
    tmp_path, capsys, sizes, file, role
):
    write_idx_release(tmp_path / "data", **sizes)
    line = refused(train_argv(tmp_path / "data", tmp_path / "run"), capsys)
    assert str(tmp_path / "data" / file) in line
    assert "holds no images" in line and f"the {role} set needs at least one" in line
    assert not (tmp_path / "run").exists()  # refused before the folder was touched
    # The library's own load says the same
    with pytest.raises(CorruptDataFile, match="holds no images"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path / "data"))


def test_a_class_too_small_for_the_validation_split_is_refused_with_a_fraction_that_works(
    tmp_path, capsys
):
    # 30 images, 3 of each class: 10% for validation is 3 examples for 10 classes
    write_idx_release(tmp_path / "data", n_train=30)
    line = refused(train_argv(tmp_path / "data", tmp_path / "run"), capsys)
    assert line.startswith("multimix: error: invalid value for val_fraction: 0.1;")
    assert str(tmp_path / "data" / "train-labels-idx1-ubyte.gz") in line
    assert "splitting 30 training examples" in line
    assert "class 0: 3 in the files, 3 for training and 0 for validation" in line
    assert "use --val-fraction 0.35, which puts every class in both parts" in line
    assert not (tmp_path / "run").exists()
    # The fraction suggested passes, on the same files (checked, not trained: the check is the point)
    check_runnable(
        tiny_config(dataset="fashion-mnist", data_dir=str(tmp_path / "data"), val_fraction=0.35)
    )


def test_the_official_counts_are_not_assumed_for_a_folder_of_other_files(tmp_path):
    # 200 images pass at the default fraction; a train_subset larger than them (the recipe's 6000) uses
    # them all, as the load does, rather than being judged against the release's 60 000.
    write_idx_release(tmp_path, n_train=200)
    check_runnable(tiny_config(dataset="fashion-mnist", data_dir=str(tmp_path), train_subset=6000))
    with pytest.raises(
        ConfigError, match=r"invalid value for train_subset: 20; .*a subset of 20 of the 200"
    ):
        check_runnable(
            tiny_config(dataset="fashion-mnist", data_dir=str(tmp_path), train_subset=20)
        )


@pytest.mark.parametrize(
    ("count", "message"),
    [
        (0, r"class 9: 0 in the files.*every class needs at least 2 examples .*class 9 has 0"),
        (1, r"class 9: 1 in the files.*every class needs at least 2 examples .*class 9 has 1"),
    ],
)
def test_a_class_the_files_hold_fewer_than_two_of_cannot_be_split(tmp_path, count, message):
    write_idx_release(tmp_path, n_train=200, gz=True)
    labels = np.arange(200) % 9  # classes 0..8 only ...
    labels[:count] = 9  # ... and this many of class 9
    write_labels(tmp_path, "train-labels-idx1-ubyte", labels)
    with pytest.raises(ConfigError, match=message):
        check_runnable(tiny_config(dataset="fashion-mnist", data_dir=str(tmp_path)))


def test_label_and_image_counts_are_compared_from_the_headers(tmp_path, capsys):
    write_idx_release(tmp_path, n_train=40)
    write_labels(tmp_path, "train-labels-idx1-ubyte", np.arange(39) % 10)
    line = refused(train_argv(tmp_path, tmp_path / "run"), capsys)
    assert "train-labels-idx1-ubyte.gz holds 39 labels but" in line and "holds 40 images" in line


def test_an_idx_label_out_of_range_is_named_with_its_record(tmp_path, capsys):
    write_idx_release(tmp_path, n_train=40)
    labels = np.arange(20) % 10
    labels[7] = 12
    write_labels(tmp_path, "t10k-labels-idx1-ubyte", labels)
    line = refused(train_argv(tmp_path, tmp_path / "run"), capsys)
    assert str(tmp_path / "t10k-labels-idx1-ubyte.gz") in line
    assert "holds label 12 (record 7, counting from 0), expected labels in [0, 10)" in line


def test_a_plain_idx_file_whose_size_does_not_fit_its_header_is_refused_from_the_header(tmp_path):
    write_idx(tmp_path / "x", np.zeros((3, 28, 28), dtype=np.uint8))
    assert read_idx_header(tmp_path / "x") == (np.dtype("u1"), (3, 28, 28))
    (tmp_path / "x").write_bytes((tmp_path / "x").read_bytes()[:-1])
    with pytest.raises(
        CorruptDataFile, match=r"x is 2367 bytes, expected 2368 for its header's shape"
    ):
        read_idx_header(tmp_path / "x")
    write_idx(tmp_path / "y.gz", np.zeros((5, 28, 28), dtype=np.uint8))
    assert read_idx_header(tmp_path / "y.gz")[1] == (5, 28, 28)


def test_summaries_read_the_counts_of_the_files_given(tmp_path):
    write_idx_release(tmp_path, n_train=30, n_test=7)
    files = summarise_files("kmnist", str(tmp_path))
    assert files is not None and files.test_size == 7
    assert np.array_equal(files.train_labels, np.arange(30) % 10)
    assert summarise_files("toy") is None


# -- CIFAR's binary batches: record counts from the sizes, label bytes read at once ---------------------


def write_cifar(root, name: str, n: int = 12) -> None:
    """``name``'s binary files in ``root``, ``n`` records each, labels cycling through the classes
    (from one file to the next)."""
    spec = cifar.SPECS[name]
    root.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(spec.train_files + spec.test_files):
        rows = np.zeros((n, spec.label_bytes + cifar.PIXELS), dtype=np.uint8)
        rows[:, spec.label_bytes - 1] = (np.arange(n) + i * n) % spec.num_classes
        rows.tofile(root / f)


def set_byte(path, offset: int, value: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] = value
    path.write_bytes(bytes(data))


def test_a_cifar_label_out_of_range_is_named_with_its_file_and_record(tmp_path, capsys):
    write_cifar(tmp_path, "cifar10")
    record = 1 + cifar.PIXELS
    set_byte(tmp_path / "data_batch_2.bin", 5 * record, 10)
    argv = ["train", "--dataset", "cifar10", "--epochs", "1", "--data-dir", str(tmp_path)]
    line = refused([*argv, "--out", str(tmp_path / "run")], capsys)
    assert str(tmp_path / "data_batch_2.bin") in line
    assert (
        f"record 5 (counting from 0; byte {5 * record}) has label 10, expected one in [0, 10)"
        in line
    )
    assert not (tmp_path / "run").exists()
    with pytest.raises(CorruptDataFile, match=r"data_batch_2.bin: record 5 "):
        cifar.load("cifar10", tmp_path)  # the load checks them too


def test_a_cifar100_coarse_label_out_of_range_is_named(tmp_path):
    write_cifar(tmp_path, "cifar100")
    set_byte(tmp_path / "test.bin", 3 * (2 + cifar.PIXELS), 20)
    with pytest.raises(
        CorruptDataFile,
        match=r"test.bin: record 3 .* has coarse label 20, expected one in \[0, 20\)",
    ):
        summarise_files("cifar100", str(tmp_path))


def test_an_empty_or_cut_cifar_file_is_refused_naming_it(tmp_path, capsys):
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "test_batch.bin").write_bytes(b"")
    argv = [
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "r"),
    ]
    line = refused(argv, capsys)
    assert f"{tmp_path / 'test_batch.bin'} is empty (0 bytes): it holds no records" in line
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * 3000)
    assert "is not a positive multiple of the 3073-byte record" in refused(argv, capsys)


def test_cifar_counts_and_split_come_from_the_files(tmp_path):
    write_cifar(tmp_path, "cifar10", n=4)  # 20 training records, 2 of each class
    files = summarise_files("cifar10", str(tmp_path))
    assert files is not None and files.test_size == 4 and len(files.train_labels) == 20
    with pytest.raises(ConfigError, match=r"splitting 20 training examples of data_batch_1.bin"):
        check_runnable(tiny_config(dataset="cifar10", data_dir=str(tmp_path), model="mlp"))
    check_runnable(
        tiny_config(dataset="cifar10", data_dir=str(tmp_path), model="mlp", val_fraction=0.5)
    )


# -- the split the check simulates is the run's own ---------------------------------------------------


def test_the_checked_split_is_the_one_the_load_makes(tmp_path):
    write_idx_release(tmp_path, n_train=120)
    splits = load_dataset("mnist", data_dir=str(tmp_path), val_fraction=0.2, train_subset=90)
    y = torch.from_numpy(np.arange(120) % 10).long()
    keep, held = split_indices(y, val_fraction=0.2, seed=0, train_subset=90)
    assert torch.equal(splits.train.tensors[1], y[keep]) and torch.equal(
        splits.val.tensors[1], y[held]
    )
    train, val = class_counts_of_split(y, 10, val_fraction=0.2, seed=0, train_subset=90)
    assert train.tolist() == torch.bincount(y[keep], minlength=10).tolist()
    assert int(train.sum()) + int(val.sum()) == 90


def test_a_split_that_cannot_be_stratified_falls_back_to_a_random_one():
    # 3 validation examples for 10 classes: scikit-learn refuses to stratify; the split is still made
    y = torch.arange(30) % 10
    keep, held = split_indices(y, val_fraction=0.1, seed=0)
    assert len(held) == 3 and len(keep) == 27
    assert sorted(torch.cat([keep, held]).tolist()) == list(range(30))


# -- a run resumed on other data is refused -----------------------------------------------------------

#: A run of 60 small images trained in a second: all of them (no subset warning), an MLP.
SMALL = ["--model", "mlp", "--val-fraction", "0.2", "--train-subset", "all"]


def test_a_run_resumed_on_other_files_is_refused_and_on_a_copy_of_its_own_resumes(tmp_path, capsys):
    import shutil

    from multimix.train import checkpoint

    own, other, copy = tmp_path / "own", tmp_path / "other", tmp_path / "moved" / "copy"
    write_idx_release(own, n_train=60, seed=0)
    write_idx_release(other, n_train=60, seed=1)  # the same counts and labels, other pixels
    shutil.copytree(own, copy)
    run = tmp_path / "run"
    argv = ["train", *IMAGES_RUN, *SMALL, "--out", str(run)]
    assert main([*argv, "--data-dir", str(own)]) == 0
    saved = checkpoint.load(run / "checkpoint.pt")["data"]
    assert saved["data_dir"] == str(own) and saved["dataset"] == "fashion-mnist"
    assert set(saved["files"]) == {
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    }
    capsys.readouterr()

    line = refused([*argv, "--resume", "--data-dir", str(other)], capsys)
    # The run folder is named where the trainer passes the checkpoint's path (RunState's source)
    assert line.startswith("multimix: error: cannot resume ")
    assert str(run) in line or "cannot resume this run from its checkpoint" in line
    assert f"it was started on the files in {own}, and --data-dir {other} holds others" in line
    assert "train-images-idx3-ubyte: train-images-idx3-ubyte.gz (" in line
    assert "train-labels-idx1-ubyte" not in line  # the labels are the same: only what differs
    assert "resume with --data-dir pointing at those files" in line and "another --out" in line

    # The same files elsewhere (another machine, a moved folder): data_dir is a runtime setting
    assert main([*argv, "--resume", "--data-dir", str(copy)]) == 0


def test_files_changed_in_place_are_refused_on_resume(tmp_path, capsys):
    write_idx_release(tmp_path / "data", n_train=60)
    run = tmp_path / "run"
    argv = ["train", *IMAGES_RUN, *SMALL, "--out", str(run), "--data-dir", str(tmp_path / "data")]
    assert main(argv) == 0
    capsys.readouterr()
    labels = np.arange(20) % 10
    labels[:2] = labels[1::-1]  # two test labels swapped: same size, other contents
    write_labels(tmp_path / "data", "t10k-labels-idx1-ubyte", labels)
    line = refused([*argv, "--resume"], capsys)
    assert f"the files in {tmp_path / 'data'} have changed since it started" in line
    assert "t10k-labels-idx1-ubyte: t10k-labels-idx1-ubyte.gz (" in line


def test_a_fingerprint_is_of_the_contents_not_of_where_or_how_they_are_stored(tmp_path):
    from multimix.data import data_fingerprint, fingerprint

    write_idx_release(tmp_path / "a", gz=True)
    write_idx_release(tmp_path / "b" / "mnist", gz=False)  # in the dataset's subfolder, not gzipped
    splits = load_dataset("mnist", data_dir=str(tmp_path / "a"), val_fraction=0.25)
    a = data_fingerprint("mnist", str(tmp_path / "a"), splits)
    b = data_fingerprint("mnist", str(tmp_path / "b"), splits)
    assert a["files"]["train-images-idx3-ubyte"]["name"] == "train-images-idx3-ubyte.gz"
    assert b["files"]["train-images-idx3-ubyte"]["name"] == "mnist/train-images-idx3-ubyte"
    assert a["data_dir"] == str(tmp_path / "a") and fingerprint.differences(a, b) == []
    write_idx_release(tmp_path / "b" / "mnist", gz=False, seed=1)
    changed = data_fingerprint("mnist", str(tmp_path / "b"), splits)
    assert [d.split(":")[0] for d in fingerprint.differences(a, changed)] == [
        "t10k-images-idx3-ubyte",
        "train-images-idx3-ubyte",
    ]
    assert fingerprint.differences(a, {**changed, "dataset": "kmnist"}) == [
        "dataset: mnist vs kmnist"
    ]


def test_files_still_to_be_downloaded_are_judged_by_the_release_counts(tmp_path):
    # Nothing to read yet, nothing fetched by the check: the official 60 000 pass the split
    check_runnable(tiny_config(dataset="mnist", data_dir=str(tmp_path), download=True))
    assert not list(tmp_path.iterdir())
