"""IDX files and the datasets read from them (MNIST, Fashion-MNIST, KMNIST): small files written here,
in the releases' format; the real Fashion-MNIST where Debian's package is installed."""

from __future__ import annotations

import functools
import gzip
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_idx_release
from multimix.data import DataFilesMissing, dataset_info, files, idx_images, load_dataset
from multimix.data.files import CorruptDataFile
from multimix.data.idx import read_idx, write_idx

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([3, 1, 2], dtype=np.uint8),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
    ],
)
def test_idx_round_trip(tmp_path, suffix, array):
    path = tmp_path / f"a-idx{suffix}"
    write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    got = read_idx(path)
    assert got.shape == array.shape and np.array_equal(got, array)


def test_idx_header_is_the_published_one(tmp_path):
    write_idx(tmp_path / "x", np.zeros((2, 28, 28), dtype=np.uint8))
    assert (tmp_path / "x").read_bytes()[:16] == bytes.fromhex("00000803000000020000001c0000001c")


def test_corrupt_idx_files_are_named(tmp_path):
    good = tmp_path / "good"
    write_idx(good, np.zeros((3, 28, 28), dtype=np.uint8))
    data = good.read_bytes()
    cases = {
        "magic": (b"\x12\x34" + data[2:], "is not an IDX file: its magic number is 1234"),
        "truncated": (
            data[:-5],
            r"holds 2347 bytes of values, expected 2352 for shape \(3, 28, 28\)",
        ),
        "header": (data[:10], "announces 3 dimensions but the file ends before them"),
        "empty": (b"", "its magic number is missing"),
        "gzip": (gzip.compress(data)[:-20], "is not a readable gzip file"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CorruptDataFile, match=message) as exc:
            read_idx(path)
        assert str(path) in str(exc.value)


@pytest.mark.parametrize("layout", ["in-data-dir", "in-subfolder"])
@pytest.mark.parametrize("gz", [True, False])
def test_load_a_release_from_its_files(tmp_path, layout, gz):
    folder = tmp_path if layout == "in-data-dir" else tmp_path / "kmnist"
    arrays = write_idx_release(folder, gz=gz)
    x, y, xt, yt = idx_images.load("kmnist", tmp_path)
    assert x.shape == (40, 1, 28, 28) and xt.shape == (20, 1, 28, 28)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(
        (x[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(arrays["train-images-idx3-ubyte"])
    )
    assert torch.equal(yt, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    splits = load_dataset("kmnist", data_dir=str(tmp_path), val_fraction=0.25)
    assert splits.input_shape == dataset_info("kmnist").input_shape == (1, 28, 28)
    assert len(splits.train) == 30 and len(splits.val) == 10 and len(splits.test) == 20
    assert splits.augment == "pad-crop"


def test_release_files_are_checked_against_each_other(tmp_path):
    write_idx_release(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(19, dtype=np.uint8) % 10)
    with pytest.raises(
        CorruptDataFile, match=r"t10k-labels-idx1-ubyte holds 19 labels but .* holds 20 images"
    ):
        idx_images.load("mnist", tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(20, 10, dtype=np.uint8))
    with pytest.raises(
        CorruptDataFile,
        match=r"holds label 10 \(record 0, counting from 0\), expected labels in \[0, 10\)",
    ):
        idx_images.load("mnist", tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((20, 32, 32), dtype=np.uint8))
    with pytest.raises(
        CorruptDataFile,
        match=r"shape \(20, 32, 32\), expected unsigned bytes of shape \(N, 28, 28\)",
    ):
        idx_images.load("mnist", tmp_path)


def test_missing_files_say_where_to_get_them(tmp_path):
    with pytest.raises(DataFilesMissing) as exc:
        load_dataset("fashion-mnist", data_dir=str(tmp_path))
    message = str(exc.value)
    assert "\n" not in message
    for part in (
        str(tmp_path),
        str(tmp_path / "fashion-mnist"),
        "dataset-fashion-mnist",
        "--download",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ):
        assert part in message
    with pytest.raises(DataFilesMissing, match="--download needs --data-dir"):
        load_dataset("mnist", download=True)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_is_checked_and_atomic(tmp_path, monkeypatch):
    # A real HTTP server on loopback plays the mirror: the files it serves are a small release.
    served = tmp_path / "mirror"
    write_idx_release(served, gz=True)
    md5 = {stem: files.md5sum(served / f"{stem}.gz") for stem in idx_images.FILES}
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        dead = "http://127.0.0.1:9/"  # nothing listens: the next mirror is tried
        release = idx_images.IdxRelease(mirrors=(dead, url), md5=md5)
        monkeypatch.setitem(idx_images.RELEASES, "mnist", release)
        x, *_ = idx_images.load("mnist", tmp_path / "data", download_if_missing=True)
        assert x.shape == (40, 1, 28, 28)
        assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(
            f"{s}.gz" for s in idx_images.FILES
        )
        # A mirror serving other bytes is refused and leaves nothing behind.
        wrong = dict(md5, **{"t10k-labels-idx1-ubyte": "0" * 32})
        monkeypatch.setitem(
            idx_images.RELEASES, "mnist", idx_images.IdxRelease(mirrors=(url,), md5=wrong)
        )
        with pytest.raises(DataFilesMissing, match=r"has MD5 .*, expected 0{32}"):
            idx_images.download("mnist", tmp_path / "other")
        assert not (tmp_path / "other" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
        assert not list((tmp_path / "other" / "mnist").glob(".*tmp"))
    finally:
        server.shutdown()


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_the_debian_package():
    x, y, xt, yt = idx_images.load("fashion-mnist")  # no data_dir: the package's folder is searched
    assert x.shape == (60_000, 1, 28, 28) and xt.shape == (10_000, 1, 28, 28)
    assert torch.equal(torch.bincount(y), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(yt), torch.full((10,), 1000))
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
