"""Device-resident batches: small data sets move to the training device once, then every
batch is an index into those tensors. No DataLoader, no worker processes, no per-item
Python transforms in the hot loop."""

from __future__ import annotations

from typing import Iterator, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor

from xentlab.tasks import Splits


class TensorBatches:
    """Batches of ``(x, labels, targets)`` drawn from tensors on one device.

    With ``shuffle`` each pass draws a fresh permutation from its own generator, so the
    data order depends on the seed alone; without it, batches are contiguous views.
    """

    def __init__(self, tensors: tuple[Tensor, ...], batch_size: int, *, shuffle: bool = False, seed: int = 0):
        self.tensors, self.batch_size, self.shuffle = tensors, batch_size, shuffle
        self.n = len(tensors[0])
        self.generator: Optional[torch.Generator] = None
        if shuffle:
            self.generator = torch.Generator(device=tensors[0].device).manual_seed(seed)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        bs = self.batch_size
        if not self.shuffle:
            for i in range(0, self.n, bs):
                yield tuple(t[i:i + bs] for t in self.tensors)
            return
        order = torch.randperm(self.n, generator=self.generator, device=self.tensors[0].device)
        for i in range(0, self.n, bs):
            idx = order[i:i + bs]
            yield tuple(t[idx] for t in self.tensors)


class DeviceData(pl.LightningDataModule):
    """Holds a task's splits plus the loss targets; moves them to the trainer's device once."""

    def __init__(self, splits: Splits, train_targets: Tensor, val_targets: Tensor, test_targets: Tensor,
                 *, batch_size: int, eval_batch_size: int, seed: int):
        super().__init__()
        self.splits = splits
        self.targets = {"train": train_targets, "val": val_targets, "test": test_targets}
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self._on: dict[str, tuple[Tensor, ...]] = {}

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        for name in ("train", "val", "test"):
            split = getattr(self.splits, name)
            if name not in self._on or self._on[name][0].device != device:
                self._on[name] = tuple(t.to(device) for t in (split.x, split.y, self.targets[name]))

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """Batches are slices of tensors already on the device: skip Lightning's generic
        (and per-step costly) walk over the batch."""
        return batch if batch[0].device == device else super().transfer_batch_to_device(batch, device, dataloader_idx)

    def train_dataloader(self) -> TensorBatches:
        return TensorBatches(self._on["train"], self.batch_size, shuffle=True, seed=self.seed)

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(self._on["val"], self.eval_batch_size)

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(self._on["test"], self.eval_batch_size)
