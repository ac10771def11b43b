"""``task=mnist``: the real MNIST digits, 10 classes, one label per image."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xentlab.tasks.base import Split, Splits, task
from xentlab.tasks.folds import validation_rows
from xentlab.tasks.idx_files import MNIST, IdxFiles

if TYPE_CHECKING:
    from torch import Tensor

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def normalise(images: Tensor, standardise: bool = True, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> Tensor:
    """uint8 (N, H, W) images to float (N, 1, H, W): standardised with the data set's mean and
    std (MNIST's by default), or raw pixels in [0, 1] (``data.normalize=false``)."""
    x = images.float() / 255.0
    return ((x - mean) / std if standardise else x).unsqueeze(1)


def raw_splits(task_cfg, data_cfg, files: IdxFiles = MNIST) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Raw images as (train x, y, val x, y, test x, y); val is the last ``val_size`` train images,
    or a fold of them (``data.folds``, ``xentlab.tasks.folds``)."""
    import torch

    x, y = files.load(data_cfg.root, train=True)
    xt, yt = files.load(data_cfg.root, train=False)
    train, val = (torch.as_tensor(rows) for rows in
                  validation_rows(y, data_cfg, task_cfg.data_seed, f"{files.name} training images"))
    return x[train], y[train], x[val], y[val], xt, yt


def image_splits(task_cfg, data_cfg, files: IdxFiles = MNIST, mean: float = MNIST_MEAN,
                 std: float = MNIST_STD) -> Splits:
    """The splits of a 28×28 IDX data set, validation the last ``data.val_size`` training images (or a fold)."""
    x, y, xv, yv, xt, yt = raw_splits(task_cfg, data_cfg, files)
    n = data_cfg.normalize
    return Splits(Split(normalise(x, n, mean, std), y).subset(data_cfg.subset), Split(normalise(xv, n, mean, std), yv),
                  Split(normalise(xt, n, mean, std), yt))


@task("mnist", kind="multiclass", input_shape=(1, 28, 28), num_classes=10)
def build(task_cfg, data_cfg) -> Splits:
    """The real MNIST digits; validation is the last ``data.val_size`` training images."""
    return image_splits(task_cfg, data_cfg)
