"""Several seeds as one batched model: K independent copies trained in lock-step.

Loss comparisons need many seeds of small models, whose steps are dominated by per-step
overhead, not arithmetic. Here the K models' parameters are stacked
(``torch.func.stack_module_state``) and evaluated with ``vmap`` + ``functional_call``;
one optimizer steps the stacked tensors. Adam and SGD act elementwise, so every copy
follows exactly the trajectory it would follow alone: its own initialisation (from its
seed), its own data order (a generator per seed), its own loss. Each copy is logged to
its own MLflow run (its metric keys come from ``xentlab.members``).
"""

from __future__ import annotations

import copy
from typing import Iterator, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torchmetrics import MeanMetric

from xentlab import losses, members
from xentlab.data import DeviceData
from xentlab.metrics import Yardsticks
from xentlab.module import NonFiniteLoss, SharedHooks
from xentlab.tasks import Splits


class SeedBatches:
    """Train batches for K seeds at once: ``(x, labels, targets)`` each shaped ``(K, B, ...)``;
    seed k draws its permutation from its own generator, as a run with that seed alone would."""

    def __init__(self, tensors: tuple[Tensor, ...], batch_size: int, seeds: Sequence[int]):
        self.tensors, self.batch_size = tensors, batch_size
        self.n = len(tensors[0])
        device = tensors[0].device
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        device = self.tensors[0].device
        orders = torch.stack([torch.randperm(self.n, generator=g, device=device) for g in self.generators])
        for i in range(0, self.n, self.batch_size):
            idx = orders[:, i:i + self.batch_size]  # (K, B)
            yield tuple(t[idx] for t in self.tensors)


class SeedBatchedData(DeviceData):
    """Device-resident splits; training batches per seed, evaluation batches shared."""

    def __init__(self, splits: Splits, targets: dict[str, Tensor], *, batch_size: int, eval_batch_size: int,
                 seeds: Sequence[int]):
        super().__init__(splits, targets["train"], targets["val"], targets["test"], batch_size=batch_size,
                         eval_batch_size=eval_batch_size, seed=seeds[0])
        self.seeds = list(seeds)

    def train_dataloader(self) -> SeedBatches:
        return SeedBatches(self._on["train"], self.batch_size, self.seeds)


class SeedBatchedClassifier(SharedHooks, pl.LightningModule):
    """K copies of ``nets[0]``'s architecture with the given (per-seed) weights, trained as one."""

    def __init__(self, nets: Sequence[nn.Module], *, seeds: Sequence[int], kind: str, num_classes: int, loss: str,
                 activation: str, label_smoothing: float, numerics: str, optimizer, check_every: int,
                 per_class: bool = False):
        super().__init__()
        self.seeds = list(seeds)
        params, buffers = stack_module_state(list(nets))
        self._names = list(params)
        self.stacked = nn.ParameterList([nn.Parameter(params[n].detach().clone()) for n in self._names])
        if buffers:
            raise ValueError("seed-batched training supports models without buffers (mlp, cnn)")
        # the architecture, kept out of the module tree: functional_call supplies every weight
        self._base = [copy.deepcopy(nets[0]).to("meta")]
        self.loss_name, self.activation = loss, activation
        self.label_smoothing, self.numerics = label_smoothing, numerics
        self.optimizer_cfg, self.check_every = optimizer, check_every
        self.automatic_optimization = False
        k = len(self.seeds)
        self.stage_metrics = nn.ModuleDict({s: nn.ModuleList([Yardsticks(kind, activation, num_classes, per_class) for _ in range(k)])
                                            for s in ("val", "test")})
        self.stage_loss = nn.ModuleDict({s: nn.ModuleList([MeanMetric() for _ in range(k)]) for s in ("val", "test")})

    def _one(self, params: tuple[Tensor, ...], x: Tensor) -> Tensor:
        return functional_call(self._base[0], dict(zip(self._names, params)), (x,))

    def forward(self, x: Tensor, per_seed_inputs: bool = True) -> Tensor:
        """Outputs ``(K, B, C)``: ``x`` is ``(K, B, ...)`` (one batch per seed) or shared ``(B, ...)``."""
        return vmap(self._one, in_dims=(0, 0 if per_seed_inputs else None))(tuple(self.stacked), x)

    def _per_seed_loss(self, z: Tensor, targets: Tensor) -> Tensor:
        k, b = z.shape[:2]
        flat = losses.compute(self.loss_name, self.activation, z.reshape(k * b, *z.shape[2:]),
                              targets.reshape(k * b, *targets.shape[2:]), label_smoothing=self.label_smoothing,
                              numerics=self.numerics, reduction="none", check_values=False)
        return flat.reshape(k, b)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, _, targets = batch
        step = self.global_step + 1
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        per_seed = self._per_seed_loss(self(x), targets).mean(1)  # (K,)
        self.manual_backward(per_seed.sum())  # seeds share no parameters: each gets its own gradient
        opt.step()
        detached = per_seed.detach()
        self._accumulate(detached, x.shape[1])
        if detached.device.type == "cpu" or step % self.check_every == 0:
            if not bool(torch.isfinite(self._epoch_sum).all()):
                raise NonFiniteLoss(step, max(0, step - (1 if detached.device.type == "cpu" else self.check_every)))
        if step % self.check_every == 0:
            self.log_dict(self._named(detached, "train/loss_step"), on_step=True, on_epoch=False)
        return per_seed.sum()

    def _named(self, values: Tensor, key: str) -> dict[str, Tensor]:
        return {members.key(s, key): values[i] for i, s in enumerate(self.seeds)}

    def _eval_step(self, stage: str, batch) -> None:
        x, labels, targets = batch
        z = self(x, per_seed_inputs=False)
        k = len(self.seeds)
        per = self._per_seed_loss(z, targets.unsqueeze(0).expand(k, *targets.shape))
        for i in range(k):
            self.stage_loss[stage][i].update(per[i])
            self.stage_metrics[stage][i].update(z[i], labels)

    def _eval_epoch_end(self, stage: str) -> None:
        values = {}
        for i, s in enumerate(self.seeds):
            values[members.key(s, f"{stage}/loss")] = self.stage_loss[stage][i].compute()
            values.update({members.key(s, f"{stage}/{k}"): v for k, v in self.stage_metrics[stage][i].compute().items()})
            self.stage_loss[stage][i].reset()
            self.stage_metrics[stage][i].reset()
        self.log_dict(values)
