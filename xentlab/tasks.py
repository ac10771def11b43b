"""Tasks: what the data is, what a label looks like, how many outputs a model needs.

A task is one config file under ``conf/task/`` plus one function registered here with
:func:`task`; the function returns train/val/test tensors with labels in the task's own
format (integer classes, or multi-hot rows for multi-label tagging). Tasks know nothing
of losses' target formats (see ``losses.encode_targets``) or of tracking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from xentlab import mnist

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass
class Split:
    x: Tensor  # float (N, *input_shape)
    y: Tensor  # int (N,) class labels, or float (N, C) multi-hot tags

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # "binary" | "multiclass" | "multilabel"
    input_shape: tuple[int, ...]
    num_classes: int  # classes, or tags for multilabel
    label_format: str
    build: Callable[[Any, Any], Splits]

    def num_outputs(self, activation: str) -> int:
        """Binary tasks use one output (sigmoid/none) or two (softmax); others one per class."""
        if self.kind == "binary":
            return 2 if activation == "softmax" else 1
        return self.num_classes

    @property
    def metrics(self) -> tuple[str, ...]:
        from xentlab.metrics import YARDSTICKS

        return YARDSTICKS[self.kind]


TASKS: dict[str, TaskSpec] = {}


def task(name: str, *, kind: str, input_shape: tuple[int, ...], num_classes: int, label_format: str):
    """Register ``fn(task_cfg, data_cfg) -> Splits`` as the task ``name``."""

    def register(fn: Callable[[Any, Any], Splits]) -> Callable[[Any, Any], Splits]:
        TASKS[name] = TaskSpec(name, kind, input_shape, num_classes, label_format, fn)
        return fn

    return register


def get(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid choices are: {', '.join(TASKS)}")
    return TASKS[name]


def _normalise(images: Tensor) -> Tensor:
    return ((images.float() / 255.0 - MNIST_MEAN) / MNIST_STD).unsqueeze(1)


def _mnist_splits(data_cfg) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Raw MNIST as (train x, y, val x, y, test x, y); val is the last ``val_size`` train images."""
    x, y = mnist.load(data_cfg.root, train=True)
    xt, yt = mnist.load(data_cfg.root, train=False)
    if data_cfg.val_size >= len(x):
        raise ValueError(f"data.val_size={data_cfg.val_size} leaves no MNIST training images (60000 in all)")
    n = len(x) - data_cfg.val_size
    return x[:n], y[:n], x[n:], y[n:], xt, yt


def _subset(split: Split, subset: int | None) -> Split:
    return split if subset is None else Split(split.x[:subset], split.y[:subset])


@task("mnist", kind="multiclass", input_shape=(1, 28, 28), num_classes=10,
      label_format="integer digit 0-9")
def build_mnist(task_cfg, data_cfg) -> Splits:
    """The real MNIST digits; validation is the last ``data.val_size`` training images."""
    x, y, xv, yv, xt, yt = _mnist_splits(data_cfg)
    return Splits(
        _subset(Split(_normalise(x), y), data_cfg.subset),
        Split(_normalise(xv), yv),
        Split(_normalise(xt), yt),
    )


@task("binary", kind="binary", input_shape=(1, 28, 28), num_classes=2,
      label_format="integer 0/1: 1 if the digit is odd")
def build_parity(task_cfg, data_cfg) -> Splits:
    """"Is this handwritten digit odd?": a real yes/no question on real MNIST images.

    Chosen over small tabular sets (breast cancer: 569 rows) because 60,000 examples keep
    seed-to-seed noise well below the differences between losses, and the inputs are the
    same as the multiclass task, so only the output layer and loss differ.
    """
    s = build_mnist(task_cfg, data_cfg)
    return Splits(*(Split(p.x, p.y % 2) for p in (s.train, s.val, s.test)))


def mosaics(images: Tensor, labels: Tensor, n: int, *, min_digits: int, max_digits: int,
            grid: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` mosaics of ``min_digits..max_digits`` distinct digits on a ``grid``×``grid`` canvas.

    Returns (uint8 images (n, 28*grid, 28*grid), float multi-hot tags (n, 10)). Each
    mosaic draws how many digits to show, which distinct classes, one random image of
    each class from ``images`` and distinct cells to put them in; all from ``seed``.
    """
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


@task("multilabel", kind="multilabel", input_shape=(1, 56, 56), num_classes=10,
      label_format="multi-hot over the 10 digits shown in the mosaic")
def build_multilabel(task_cfg, data_cfg) -> Splits:
    """Tag which digits a mosaic of 1-3 MNIST digits shows: a genuine multi-label problem.

    Train mosaics come from the training images, validation mosaics from the held-out
    validation images, test mosaics only from MNIST's test split.
    """
    x, y, xv, yv, xt, yt = _mnist_splits(data_cfg)
    opts = dict(min_digits=task_cfg.min_digits, max_digits=task_cfg.max_digits, grid=2)
    seed = task_cfg.data_seed
    train = Split(*mosaics(x, y, task_cfg.train_size, seed=seed, **opts))
    val = Split(*mosaics(xv, yv, data_cfg.val_size, seed=seed + 1, **opts))
    test = Split(*mosaics(xt, yt, task_cfg.test_size, seed=seed + 2, **opts))
    return Splits(*(Split(_normalise(s.x), s.y) for s in (_subset(train, data_cfg.subset), val, test)))
