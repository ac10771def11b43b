"""Conditions that stress the choice of loss, for every task: noisy and imbalanced labels.

Both change the training split only, so validation and test measure the clean problem;
both are drawn from ``task.data_seed`` alone, so every loss and seed of a sweep sees the
same corrupted data. The counts are exact (rounded), not expected values: with
``label_noise=0.2`` exactly 20% of the training labels (multi-label: of the tags) differ
from the clean ones.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from xentlab.errors import ConfigError
from xentlab.tasks.base import Split, Splits

if TYPE_CHECKING:
    from torch import Generator, Tensor

log = logging.getLogger(__name__)


def check(kind: str, task_cfg) -> None:
    if task_cfg.imbalance is not None and kind == "multilabel":
        raise ConfigError(f"task.imbalance={task_cfg.imbalance} needs one label per example (a binary or "
                          f"multiclass task); a multilabel task has no class sizes to skew")


def _generator(seed: int, stream: int) -> Generator:
    import torch

    return torch.Generator().manual_seed(seed * 1_000 + stream)


def label_noise(y: Tensor, fraction: float, num_classes: int, seed: int) -> Tensor:
    """Symmetric noise: ``round(fraction * N)`` labels, each replaced by one of the other
    ``num_classes - 1`` classes at random; for multi-hot ``y`` (N, C), ``round(fraction * (N * C))``
    tags flipped (a fraction of all the tags)."""
    import torch

    g = _generator(seed, 1)
    if y.dim() == 2:
        flat = y.reshape(-1).clone()
        idx = torch.randperm(flat.numel(), generator=g)[:round(fraction * flat.numel())]
        flat[idx] = 1 - flat[idx]
        return flat.reshape(y.shape)
    out = y.clone()
    idx = torch.randperm(len(y), generator=g)[:round(fraction * len(y))]
    out[idx] = (y[idx] + torch.randint(1, num_classes, (len(idx),), generator=g)) % num_classes
    return out


def imbalance_keep(y: Tensor, ratio: float, num_classes: int, seed: int) -> Tensor:
    """Indices (in their original order) of the examples an imbalanced training split keeps.

    Class ``c`` keeps ``round(ratio ** (c / (C - 1)) * n_c)`` of its ``n_c`` examples, a
    geometric decay from all of class 0 to ``ratio`` of the last class; for a binary task,
    all negatives and ``ratio`` of the positives. At least one example of every class stays.
    """
    import torch

    g = _generator(seed, 2)
    keep = []
    for c in range(num_classes):
        members = torch.nonzero(y == c).flatten()
        share = ratio ** (c / (num_classes - 1))
        n = max(1, round(share * len(members))) if len(members) else 0
        keep.append(members[torch.randperm(len(members), generator=g)[:n]])
    return torch.cat(keep).sort().values


def apply(splits, kind: str, num_classes: int, task_cfg):
    """``splits`` with the training split made imbalanced, then noisy, as the options ask."""
    import torch

    train = splits.train
    if task_cfg.imbalance is not None:
        keep = imbalance_keep(train.y, task_cfg.imbalance, num_classes, task_cfg.data_seed)
        train = Split(train.x[keep], train.y[keep])
        sizes = torch.bincount(train.y, minlength=num_classes).tolist()
        log.info("task.imbalance=%g: training split keeps %d of %d examples; class sizes %s (validation and "
                 "test keep their own balance)", task_cfg.imbalance, len(train), len(splits.train), sizes)
    if task_cfg.label_noise > 0:
        noisy = label_noise(train.y, task_cfg.label_noise, num_classes, task_cfg.data_seed)
        changed = int((noisy != train.y).sum())
        log.info("task.label_noise=%g: %d of %d training %s changed (validation and test are clean)",
                 task_cfg.label_noise, changed, train.y.numel(), "tags" if train.y.dim() == 2 else "labels")
        train = Split(train.x, noisy)
    return splits if train is splits.train else Splits(train, splits.val, splits.test)
