"""xentlab's own Lightning callbacks: the epoch line, the first step's start-up time, and what really stopped a fit."""

from __future__ import annotations

import logging
import time
from typing import Optional

from pytorch_lightning.callbacks import Callback

from xentlab import clock, metric_keys, yardsticks

log = logging.getLogger(__name__)


class FirstStep(Callback):
    """``first training step after N.N s``: how long a user waits for training to begin (imports,
    data, model, trainer). Once per process: a batched launch fits many models in one."""

    logged = False  # class-wide: the process's first fit only

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 1 and not FirstStep.logged:
            FirstStep.logged = True
            if trainer.is_global_zero:
                clock.phase("first training step")


class EpochSummary(Callback):
    """One line per epoch, also where progress bars are off (sweeps, CI logs): a single run's
    losses and validation yardsticks, or the spread of K members' ranking yardstick."""

    def __init__(self, kind: str):
        self.primary = f"val/{yardsticks.primary(kind)}"

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            log.info("training started: %d steps per epoch on %s%s%s", trainer.num_training_batches,
                     trainer.strategy.root_device,
                     f" x {trainer.world_size} processes" if trainer.world_size > 1 else "",
                     f", {pl_module.k} members as one model" if pl_module.k > 1 else "")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:  # DDP: one line per epoch, from rank 0
            return
        m = dict(trainer.callback_metrics)
        if pl_module.k > 1:
            acc = sorted(float(v) for k, v in m.items() if (p := metric_keys.parse(k)) and p[1] == self.primary
                         and p[0] not in pl_module.stopped and p[0] not in pl_module.failed)
            shown = f"{self.primary} over {len(acc)} members: min {acc[0]:.4f} median {acc[len(acc) // 2]:.4f} " \
                    f"max {acc[-1]:.4f}" if acc else ""
            if pl_module.failed:
                shown += f"; {len(pl_module.failed)} diverged"
            if pl_module.stopped:
                shown += f"; {len(pl_module.stopped)} stopped early"
        else:
            m = metric_keys.of(m, 0)
            if pl_module.epoch_loss() is not None and trainer.world_size == 1:
                m["train/loss"] = pl_module.epoch_loss()[0]
            shown = " ".join(f"{k} {float(m[k]):.4f}" for k in sorted(m) if k.startswith(("train/loss", "val/"))
                             and not k.endswith("_step"))
        log.info("epoch %d/%d  %s  (%.1f s)", trainer.current_epoch + 1, trainer.max_epochs, shown,
                 time.perf_counter() - self._t0)


class InterruptRecorder(Callback):
    """Lightning turns Ctrl-C into ``sys.exit(1)``; remember what really happened."""

    exception: Optional[BaseException] = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.exception = exception
