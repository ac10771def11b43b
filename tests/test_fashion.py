"""``task=fashion``: Fashion-MNIST from Debian's package, read and verified like MNIST."""

import dataclasses
import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from xentlab.errors import DataUnavailable
from xentlab.tasks import idx_files
from xentlab.tasks.idx_files import FASHION_MNIST

from conftest import DATA_ROOT, ROOT


def idx(array: np.ndarray) -> bytes:
    """The IDX format by hand: zero, zero, type 0x08 (unsigned byte), rank, big-endian sizes, data."""
    return struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@pytest.fixture
def hand_made(tmp_path, monkeypatch):
    """Four small IDX files, gzipped where Debian's package puts them, and a data set whose
    hashes are theirs; its torchvision download fails, as without the internet."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": np.array([3, 1, 4, 1, 5], dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": np.array([9, 2], dtype=np.uint8)}
    debian = tmp_path / "debian"
    debian.mkdir()
    for name, array in arrays.items():
        (debian / f"{name}.gz").write_bytes(gzip.compress(idx(array)))
    monkeypatch.setattr(idx_files, "DEBIAN_DIR", debian)

    def offline(files, root):
        raise OSError("no internet")

    hashes = {n: hashlib.sha256(idx(a)).hexdigest() for n, a in arrays.items()}
    files = dataclasses.replace(FASHION_MNIST, sha256=hashes, sources=(FASHION_MNIST.sources[0],
                                                                       ("torchvision download", offline)))
    return files, arrays, tmp_path / "root"


def test_the_reader_takes_debians_gzipped_files_and_reads_them_back(hand_made):
    files, arrays, root = hand_made
    x, y = files.load(root, train=True)
    assert torch.equal(x, torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert y.tolist() == [3, 1, 4, 1, 5] and y.dtype == torch.int64
    xt, yt = files.load(root, train=False)
    assert xt.shape == (2, 28, 28) and yt.tolist() == [9, 2]
    written = (root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes()
    assert written == idx(arrays["t10k-labels-idx1-ubyte"])


def test_a_corrupted_file_is_named_with_the_repair(hand_made):
    files, _, root = hand_made
    raw = files.ensure(root)
    victim = raw / "train-labels-idx1-ubyte"
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x07")
    with pytest.raises(DataUnavailable, match="Fashion-MNIST file .*train-labels-idx1-ubyte is corrupted.*Delete"):
        files.load(root, train=True)


def test_with_no_source_the_error_says_how_to_get_one(hand_made, monkeypatch, tmp_path):
    files, _, _ = hand_made
    monkeypatch.setattr(idx_files, "DEBIAN_DIR", tmp_path / "nowhere")
    with pytest.raises(DataUnavailable, match="could not obtain Fashion-MNIST.*no internet.*apt-get install "
                                              "dataset-fashion-mnist"):
        files.ensure(tmp_path / "empty")


@pytest.mark.skipif(not idx_files.DEBIAN_DIR.is_dir() and not (DATA_ROOT / "FashionMNIST" / "raw").is_dir(),
                    reason="no Fashion-MNIST here (apt-get install dataset-fashion-mnist)")
def test_the_hashes_xentlab_carries_are_those_of_the_real_files():
    x, y = FASHION_MNIST.load(DATA_ROOT, train=True)
    assert x.shape == (60000, 28, 28) and y.bincount().tolist() == [6000] * 10  # its published class sizes
    raw = FASHION_MNIST.raw_dir(DATA_ROOT)
    assert {n: hashlib.sha256((raw / n).read_bytes()).hexdigest() for n in FASHION_MNIST.sha256} == FASHION_MNIST.sha256
    ref = ROOT.parent / "shared" / "data" / "FASHION_MNIST.sha256"
    if ref.exists():
        assert dict(reversed(line.split()) for line in ref.read_text().splitlines() if line.strip()) == \
            FASHION_MNIST.sha256
    mean, std = (x.float() / 255).mean().item(), (x.float() / 255).std().item()
    from xentlab.tasks.fashion import FASHION_MEAN, FASHION_STD

    assert (mean, std) == (pytest.approx(FASHION_MEAN, abs=5e-5), pytest.approx(FASHION_STD, abs=5e-5))


def test_fashion_is_a_task_with_mnists_shape():
    from xentlab import train

    from conftest import make_config

    p = train.plan(make_config("task=fashion", "loss=sparse_cce"))
    assert (p.task.kind, p.task.input_shape, p.task.num_classes, p.task.class_names[0]) == (
        "multiclass", (1, 28, 28), 10, "T-shirt/top")
    assert Path(ROOT / "conf" / "experiment" / "fair_grid_fashion.yaml").is_file()
