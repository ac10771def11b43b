"""MLflow as Lightning sees it: the per-epoch logger, one logger for K members, heartbeats."""

from __future__ import annotations

import time
from typing import Any, Mapping, Optional

from pytorch_lightning import Callback
from pytorch_lightning.loggers import Logger, MLFlowLogger

from xentlab import interrupts, metric_keys
from xentlab.tracking import store


class EpochStepMLFlowLogger(MLFlowLogger):
    """MLFlowLogger whose per-epoch metrics use the epoch as their step.

    Lightning logs everything against the global step and names on-epoch aggregates
    ``<key>_epoch``; here ``train/loss_step`` keeps the global step (a curve inside each
    epoch) and every other metric is logged under its plain name with step = epoch, so
    runs with different batch sizes line up in the MLflow UI. Step points go through
    MLflow's background queue; epoch values are written before the call returns, so a
    process killed outright (``kill -9``) never leaves a checkpoint of an epoch whose
    validation metrics the store lacks. Ctrl-C and SIGTERM wait until a write is
    done (``interrupts.deferred``): one cut short can leave MLflow's locks held. The run's
    final status is set by ``lifecycle.tracked_run``, not by Lightning.
    """

    @interrupts.deferred()
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        per_step = {k: v for k, v in metrics.items() if k.endswith("_step")}
        per_epoch = {k.removesuffix("_epoch"): v for k, v in metrics.items() if k not in per_step}
        if per_step:
            super().log_metrics(per_step, step)
        if per_epoch:  # a few values an epoch, written at once: in the store before the epoch's checkpoint
            queued, self._log_batch_kwargs = self._log_batch_kwargs, {"synchronous": True}
            try:
                super().log_metrics(per_epoch, int(epoch) if epoch is not None else step)
            finally:
                self._log_batch_kwargs = queued

    def finalize(self, status: str = "success") -> None:
        pass


class MemberRoutingLogger(Logger):
    """One Lightning logger for K members trained as one model: member k's keys
    (``xentlab.metric_keys``) go to member k's run."""

    def __init__(self, loggers: Mapping[int, EpochStepMLFlowLogger]):
        super().__init__()
        self.loggers = dict(loggers)

    @property
    def name(self) -> str:
        return "xentlab-members"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # each run got its own config when it was created

    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        per_member: dict[int, dict[str, float]] = {}
        for key, value in metrics.items():
            parsed = metric_keys.parse(key)
            if parsed is not None:
                per_member.setdefault(parsed[0], {})[parsed[1]] = value
        for member, values in per_member.items():
            if "epoch" in metrics:
                values["epoch"] = metrics["epoch"]
            self.loggers[member].log_metrics(values, step)


class Heartbeat(Callback):
    """Refreshes the ``heartbeat`` tag of a run (and of its sweep's parent) at the end of every
    epoch and every ``every`` seconds within a long one, so that a run whose process died on
    another host can be told from a live one (``store.stale_reason``)."""

    def __init__(self, client, run_ids: list[str], every: float = 60.0):
        self.client, self.run_ids, self.every = client, run_ids, every
        self._next = time.monotonic() + every

    @interrupts.deferred()
    def beat(self) -> None:
        store.heartbeat(self.client, self.run_ids, synchronous=False)  # queued like the metrics
        self._next = time.monotonic() + self.every

    def on_train_batch_end(self, *args: Any) -> None:
        if time.monotonic() >= self._next:
            self.beat()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.beat()


