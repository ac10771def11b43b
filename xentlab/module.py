"""The LightningModule: a network, an output activation, a loss, the task's yardsticks."""

from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from xentlab import losses
from xentlab.metrics import Yardsticks

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, o: torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay),
    "sgd": lambda params, o: torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay),
}


class NonFiniteLoss(FloatingPointError):
    """Training diverged: the loss became NaN or infinite."""

    def __init__(self, step: int, last_good_step: int):
        self.step, self.last_good_step = step, last_good_step
        where = f"at step {step}" if step == last_good_step + 1 else f"between steps {last_good_step + 1} and {step}"
        super().__init__(f"loss became NaN or infinite {where}: training diverged (try a smaller optimizer.lr)")


class SharedHooks:
    """What the single and the seed-batched module share: the epoch's mean training loss
    (summed on the device), validation/test hooks routed to ``_eval_step(stage, batch)``
    and ``_eval_epoch_end(stage)``, and the optimizer. ``_named(values, key)`` names the
    logged values (one per seed for the batched module)."""

    _epoch_sum: Tensor | None = None
    _epoch_count = 0

    def _accumulate(self, loss: Tensor, n: int) -> None:
        self._epoch_sum = loss * n if self._epoch_sum is None else self._epoch_sum + loss * n
        self._epoch_count += n

    def on_train_epoch_start(self) -> None:
        self._epoch_sum, self._epoch_count = None, 0

    def epoch_loss(self) -> Tensor | None:
        """Mean training loss over the epoch so far (on the device)."""
        return None if self._epoch_sum is None else self._epoch_sum / self._epoch_count

    def on_train_epoch_end(self) -> None:
        if self._epoch_sum is not None:
            self.log_dict(self._named(self.epoch_loss(), "train/loss"), on_step=False, on_epoch=True,
                          sync_dist=self._distributed())

    def _distributed(self) -> bool:
        """Under DDP each rank sees a shard: epoch values are averaged over the ranks."""
        return self._trainer is not None and self.trainer.world_size > 1

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        name = getattr(self.optimizer_cfg.name, "value", self.optimizer_cfg.name)
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}; valid choices are: {', '.join(OPTIMIZERS)}")
        return OPTIMIZERS[name](self.parameters(), self.optimizer_cfg)


class Classifier(SharedHooks, pl.LightningModule):
    """Trains ``net`` with ``losses.compute(loss, activation, ...)``; evaluates yardsticks.

    Logs ``train/loss`` per step (every ``trainer.log_every_n_steps``) and per epoch,
    ``val/loss`` and ``val/<yardstick>`` per epoch, ``test/*`` once. Metrics accumulate
    on the device; the only host syncs are at logging points.
    """

    def __init__(self, net: nn.Module, *, kind: str, num_classes: int, loss: str, activation: str,
                 label_smoothing: float, numerics: str, optimizer, check_every: int, per_class: bool = False):
        super().__init__()
        self.net = net
        self.loss_name, self.activation = loss, activation
        self.label_smoothing, self.numerics = label_smoothing, numerics
        self.optimizer_cfg = optimizer
        self.check_every = check_every
        self.stage_metrics = nn.ModuleDict(
            {s: Yardsticks(kind, activation, num_classes, per_class) for s in ("val", "test")}
        )
        self.stage_loss = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self._nonfinite: Tensor | None = None
        self._last_checked = 0
        # One optimizer, one step per batch: stepping by hand skips Lightning's closure
        # machinery, a measurable share of a small model's step time (scripts/bench.py).
        self.automatic_optimization = False

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _loss(self, z: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        return losses.compute(
            self.loss_name, self.activation, z, targets, label_smoothing=self.label_smoothing,
            numerics=self.numerics, reduction=reduction, check_values=False,
        )

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, _, targets = batch
        step = self.global_step + 1  # this batch's step, 1-based (global_step moves on at opt.step())
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        loss = self._loss(self(x), targets)
        self.manual_backward(loss)
        opt.step()
        detached = loss.detach()
        self._watch(detached, step)
        # Sum on the device; hand Lightning a value only at its logging steps (no per-step
        # logging machinery, no host sync).
        self._accumulate(detached, x.shape[0])
        if step % self.check_every == 0:
            self.log_dict(self._named(detached, "train/loss_step"), on_step=True, on_epoch=False)
        return loss

    def _named(self, value: Tensor, key: str) -> dict[str, Tensor]:
        return {key: value}

    def _watch(self, loss: Tensor, step: int) -> None:
        """Stop on NaN/inf: accumulate a flag on the device, read it every ``check_every`` steps."""
        bad = ~torch.isfinite(loss)
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
        if loss.device.type == "cpu" or step - self._last_checked >= self.check_every:
            if bool(self._nonfinite):
                raise NonFiniteLoss(step, self._last_checked)
            self._last_checked = step

    def _eval_step(self, stage: str, batch) -> None:
        x, labels, targets = batch
        z = self(x)
        self.stage_loss[stage].update(self._loss(z, targets, reduction="none"))
        self.stage_metrics[stage].update(z, labels)

    def _eval_epoch_end(self, stage: str) -> None:
        values = {f"{stage}/loss": self.stage_loss[stage].compute()}
        values.update({f"{stage}/{k}": v for k, v in self.stage_metrics[stage].compute().items()})
        self.log_dict(values, sync_dist=self._distributed())  # torchmetrics already synced; a no-op mean
        self.stage_loss[stage].reset()
        self.stage_metrics[stage].reset()
