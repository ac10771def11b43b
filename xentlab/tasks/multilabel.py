"""``task=multilabel``: tag which digits a 56x56 mosaic of 1-3 MNIST digits shows.

10 tags, several true at once: a genuine multi-label problem built from real digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from xentlab.config import TaskConfig
from xentlab.errors import ConfigError
from xentlab.tasks import mnist
from xentlab.tasks.base import Split, Splits, task

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class MosaicOptions(TaskConfig):
    """Each image shows ``min_digits``..``max_digits`` distinct digits on a 2x2 grid."""

    train_size: int = 30000
    test_size: int = 10000
    min_digits: int = 1
    max_digits: int = 3


def check(t) -> None:
    if not 1 <= t.min_digits <= t.max_digits <= 4:
        raise ConfigError(f"task needs 1 <= min_digits <= max_digits <= 4 (a 2x2 grid), got "
                          f"min_digits={t.min_digits} max_digits={t.max_digits}")
    if min(t.train_size, t.test_size) < 1:
        raise ConfigError("task.train_size and task.test_size must be >= 1")


def mosaics(images: Tensor, labels: Tensor, n: int, *, min_digits: int, max_digits: int,
            grid: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` mosaics of ``min_digits..max_digits`` distinct digits on a ``grid``×``grid`` canvas.

    Returns (uint8 images (n, 28*grid, 28*grid), float multi-hot tags (n, 10)). Each
    mosaic draws how many digits to show, which distinct classes, one random image of
    each class from ``images`` and distinct cells to put them in; all from ``seed``.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    side = images.shape[-1]
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=10)
    starts = torch.cumsum(counts, 0) - counts
    if (counts == 0).any():
        raise ValueError("mosaics need images of all 10 digits")
    k = torch.randint(min_digits, max_digits + 1, (n,), generator=g)
    classes = torch.argsort(torch.rand(n, 10, generator=g), dim=1)[:, :max_digits]
    cells = torch.argsort(torch.rand(n, grid * grid, generator=g), dim=1)[:, :max_digits]
    picks = order[starts[classes] + (torch.rand(n, max_digits, generator=g) * counts[classes]).long()]
    canvas = torch.zeros(n, grid * side, grid * side, dtype=torch.uint8)
    tags = torch.zeros(n, 10)
    rows = torch.arange(n)
    for j in range(max_digits):
        shown = k > j
        tags[rows[shown], classes[shown, j]] = 1.0
        for cell in range(grid * grid):
            sel = shown & (cells[:, j] == cell)
            r, c = divmod(cell, grid)
            canvas[sel, r * side:(r + 1) * side, c * side:(c + 1) * side] = images[picks[sel, j]]
    return canvas, tags


@task("multilabel", kind="multilabel", input_shape=(1, 56, 56), num_classes=10, options=MosaicOptions, check=check)
def build(task_cfg, data_cfg) -> Splits:
    """Train mosaics come from the training images, validation mosaics from the held-out
    validation images, test mosaics only from MNIST's test split."""
    x, y, xv, yv, xt, yt = mnist.raw_splits(task_cfg, data_cfg)
    opts = dict(min_digits=task_cfg.min_digits, max_digits=task_cfg.max_digits, grid=2)
    seed = task_cfg.data_seed
    train = Split(*mosaics(x, y, task_cfg.train_size, seed=seed, **opts))
    val = Split(*mosaics(xv, yv, data_cfg.val_size, seed=seed + 1, **opts))
    test = Split(*mosaics(xt, yt, task_cfg.test_size, seed=seed + 2, **opts))
    return Splits(*(Split(mnist.normalise(s.x, data_cfg.normalize), s.y)
                    for s in (train.subset(data_cfg.subset), val, test)))
