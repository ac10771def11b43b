"""``task=mnist``: the real MNIST digits, 10 classes, one label per image."""

from __future__ import annotations

from torch import Tensor

from xentlab.tasks import mnist_files
from xentlab.tasks.base import Split, Splits, task

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def normalise(images: Tensor, standardise: bool = True) -> Tensor:
    """uint8 (N, H, W) images to float (N, 1, H, W): standardised with MNIST's mean and std,
    or raw pixels in [0, 1] (``data.normalize=false``)."""
    x = images.float() / 255.0
    return ((x - MNIST_MEAN) / MNIST_STD if standardise else x).unsqueeze(1)


def raw_splits(data_cfg) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Raw MNIST as (train x, y, val x, y, test x, y); val is the last ``val_size`` train images."""
    x, y = mnist_files.load(data_cfg.root, train=True)
    xt, yt = mnist_files.load(data_cfg.root, train=False)
    if data_cfg.val_size >= len(x):
        raise ValueError(f"data.val_size={data_cfg.val_size} leaves no MNIST training images (60000 in all)")
    n = len(x) - data_cfg.val_size
    return x[:n], y[:n], x[n:], y[n:], xt, yt


@task("mnist", kind="multiclass", input_shape=(1, 28, 28), num_classes=10)
def build(task_cfg, data_cfg) -> Splits:
    """The real MNIST digits; validation is the last ``data.val_size`` training images."""
    x, y, xv, yv, xt, yt = raw_splits(data_cfg)
    n = data_cfg.normalize
    return Splits(Split(normalise(x, n), y).subset(data_cfg.subset), Split(normalise(xv, n), yv),
                  Split(normalise(xt, n), yt))
