"""Device-resident batches: small data sets move to the training device once, then every
batch is an index into those tensors. No DataLoader, no worker processes, no per-item
Python transforms in the hot loop."""

from __future__ import annotations

from typing import Callable, Iterator, Mapping, Optional, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor

from xentlab.tasks.base import Splits


class TensorBatches:
    """Batches of ``(x, labels, targets)`` drawn from tensors on one device.

    With ``shuffle`` each pass draws a fresh permutation from ``generator`` (or one seeded
    with ``seed``), so the data order depends on the seed alone; without it, batches are
    contiguous views. Under DDP (``world`` > 1) each rank takes every ``world``-th example
    of the same order, the training shards cut to equal length so all ranks step together.
    """

    def __init__(self, tensors: tuple[Tensor, ...], batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 generator: Optional[torch.Generator] = None, rank: int = 0, world: int = 1):
        self.tensors, self.batch_size, self.shuffle = tensors, batch_size, shuffle
        self.rank, self.world = rank, world
        total = len(tensors[0])
        self.n = total // world if shuffle else len(range(rank, total, world))
        self.generator: Optional[torch.Generator] = None
        if shuffle:
            self.generator = generator or torch.Generator(device=tensors[0].device).manual_seed(seed)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        bs = self.batch_size
        if not self.shuffle:
            shard = self.tensors if self.world == 1 else tuple(t[self.rank::self.world] for t in self.tensors)
            for i in range(0, self.n, bs):
                yield tuple(t[i:i + bs] for t in shard)
            return
        order = torch.randperm(len(self.tensors[0]), generator=self.generator, device=self.tensors[0].device)
        if self.world > 1:
            order = order[self.rank::self.world][:self.n]
        for i in range(0, self.n, bs):
            idx = order[i:i + bs]
            yield tuple(t[idx] for t in self.tensors)


class DeviceData(pl.LightningDataModule):
    """Holds a task's splits plus the loss targets; moves them to the trainer's device once.
    Batches are ``(x, labels, *targets)``: ``targets[split]`` holds one tensor per loss
    of the members (``Classifier.target_losses``)."""

    def __init__(self, splits: Splits, targets: Mapping[str, Sequence[Tensor]],
                 *, batch_size: int, eval_batch_size: int, seed: int):
        super().__init__()
        self.splits = splits
        self.targets = {name: tuple(targets[name]) for name in ("train", "val", "test")}
        self.batch_size, self.eval_batch_size, self.seeds = batch_size, eval_batch_size, [seed]
        self._on: dict[str, tuple[Tensor, ...]] = {}
        self._generators: list[torch.Generator] = []
        self._generator_states: Optional[list[Tensor]] = None

    def _shard(self) -> dict[str, int]:
        t = self.trainer
        return {"rank": t.global_rank, "world": t.world_size} if t is not None else {}

    def generators(self) -> list[torch.Generator]:
        """The training order's generators, one per member's seed; their state travels in
        checkpoints, so a resumed run sees the data in the same order as an uninterrupted one."""
        device = self._on["train"][0].device
        if not self._generators or self._generators[0].device != device:
            self._generators = [torch.Generator(device=device).manual_seed(s) for s in self.seeds]
        if self._generator_states is not None:
            for g, state in zip(self._generators, self._generator_states, strict=True):
                g.set_state(state)
            self._generator_states = None
        return self._generators

    def state_dict(self) -> dict:
        return {"generators": [g.get_state() for g in self._generators]} if self._generators else {}

    def load_state_dict(self, state: dict) -> None:
        if "generators" in state or "generator" in state:  # "generator": a checkpoint from before K > 1 resumed
            self._generator_states = state.get("generators") or [state["generator"]]
            if self._generators:  # Lightning may build the batches before it restores
                self.generators()

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        for name in ("train", "val", "test"):
            split = getattr(self.splits, name)
            if name not in self._on or self._on[name][0].device != device:
                self._on[name] = tuple(t.to(device) for t in (split.x, split.y, *self.targets[name]))

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """Batches are slices of tensors already on the device: skip Lightning's generic
        (and per-step costly) walk over the batch."""
        return batch if batch[0].device == device else super().transfer_batch_to_device(batch, device, dataloader_idx)

    def train_dataloader(self) -> TensorBatches:
        return TensorBatches(self._on["train"], self.batch_size, shuffle=True, generator=self.generators()[0],
                             **self._shard())

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(self._on["val"], self.eval_batch_size, **self._shard())

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(self._on["test"], self.eval_batch_size, **self._shard())


class MemberBatches:
    """Training batches for K members at once, each tensor shaped ``(K, B, ...)``: member k
    draws its permutation from its own generator, as a run with its seed alone would.
    ``generators`` gives those of the members still training, asked at the start of every pass."""

    def __init__(self, tensors: tuple[Tensor, ...], batch_size: int,
                 generators: Callable[[], Sequence[torch.Generator]]):
        self.tensors, self.batch_size, self.generators = tensors, batch_size, generators
        self.n = len(tensors[0])

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        device = self.tensors[0].device
        orders = torch.stack([torch.randperm(self.n, generator=g, device=device) for g in self.generators()])
        for i in range(0, self.n, self.batch_size):
            idx = orders[:, i:i + self.batch_size]  # (K, B)
            yield tuple(t[idx] for t in self.tensors)


class MemberData(DeviceData):
    """:class:`DeviceData` for K > 1 members: training batches per member (its seed's
    order), evaluation batches shared."""

    def __init__(self, splits: Splits, targets: Mapping[str, Sequence[Tensor]], *, batch_size: int,
                 eval_batch_size: int, seeds: Sequence[int]):
        super().__init__(splits, targets, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seeds[0])
        self.seeds = list(seeds)
        self.members = list(range(len(self.seeds)))  # who still trains (``Classifier.compact``)

    def keep(self, members: Sequence[int]) -> None:
        """Draw training batches for ``members`` only, from the next pass on; every member's
        generator stays its own, so the ones left see the order they see alone."""
        self.members = list(members)

    def live_generators(self) -> list[torch.Generator]:
        return [self.generators()[i] for i in self.members]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "members": self.members}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.members = state.get("members", self.members)

    def train_dataloader(self) -> MemberBatches:
        return MemberBatches(self._on["train"], self.batch_size, self.live_generators)
