"""One experiment, in order: check everything, build data and model, train, test, track.

:func:`plan` does every check that needs no data, so a bad config or an invalid
activation × loss × task cell fails in well under a second, before anything is loaded
or any MLflow run exists. :func:`run` then trains and returns the test metrics.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, TQDMProgressBar

from xentlab import compat, losses, models, tasks
from xentlab.config import ConfigError, validate
from xentlab.data import DeviceData
from xentlab.metrics import available
from xentlab.module import Classifier

log = logging.getLogger(__name__)
LOGGERS = ("mlflow", "none")


@dataclass(frozen=True)
class Plan:
    task: tasks.TaskSpec
    activation: str
    loss: str
    cell: compat.Cell
    num_outputs: int
    run_name: str


def plan(cfg: Any) -> Plan:
    """Every check that needs no data; raises ConfigError naming the problem and the choices."""
    validate(cfg)
    try:
        spec = tasks.get(cfg.task.name)
        activation = compat.resolve_activation(spec.kind, cfg.activation.name, cfg.loss.name)
        cell = compat.check(spec.name, spec.kind, activation, cfg.loss.name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    for kind, name, valid in (("model", cfg.model.name, models.MODELS), ("logger", cfg.logger.name, LOGGERS)):
        if name not in valid:
            raise ConfigError(f"unknown {kind} {name!r}; valid choices are: {', '.join(valid)}")
    run_name = cfg.logger.run_name or f"{spec.name}-{activation}-{cfg.loss.name}-s{cfg.seed}"
    return Plan(spec, activation, cfg.loss.name, cell, spec.num_outputs(activation), run_name)


class EpochSummary(Callback):
    """One line per epoch, also where progress bars are off (sweeps, CI logs)."""

    def on_train_start(self, trainer, pl_module) -> None:
        log.info("training started: %d steps per epoch on %s", trainer.num_training_batches,
                 trainer.strategy.root_device)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        m = dict(trainer.callback_metrics)
        if getattr(pl_module, "epoch_loss", None) and pl_module.epoch_loss() is not None:
            m["train/loss"] = pl_module.epoch_loss()
        shown = " ".join(f"{k} {float(m[k]):.4f}" for k in sorted(m) if k.startswith(("train/loss", "val/"))
                         and not k.endswith("_step"))
        log.info("epoch %d/%d  %s  (%.1f s)", trainer.current_epoch + 1, trainer.max_epochs, shown,
                 time.perf_counter() - self._t0)


def _metrics_note(p: Plan) -> str:
    if p.activation != "none":
        return "all yardsticks are computed from the activated outputs"
    missing = sorted(set(p.task.metrics) - set(available(p.task.kind, p.activation)))
    return f"activation=none: outputs are not probabilities, so {', '.join(missing)} are not logged"


def run(cfg: Any, output_dir: Optional[str] = None, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train and test one configuration; return its run name, MLflow run id and test metrics.

    ``callbacks`` are extra Lightning callbacks (the benchmark times epochs with one)."""
    p = plan(cfg)
    if p.cell.status is compat.Status.QUESTIONABLE:
        log.warning("questionable combination: activation=%s loss=%s on %s: %s",
                    p.activation, p.loss, p.task.name, p.cell.reason)
    pl.seed_everything(cfg.seed, workers=False, verbose=False)

    splits = p.task.build(cfg.task, cfg.data)
    if cfg.data.batch_size > len(splits.train):
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the {len(splits.train)} training examples")
    targets = {}
    for name in ("train", "val", "test"):
        split = getattr(splits, name)
        targets[name] = losses.encode_targets(p.loss, split.y, p.num_outputs)
        shape = torch.empty((len(split), p.num_outputs), device="meta")
        losses.validate_targets(p.loss, shape, targets[name])  # once, so training steps need no host sync
    data = DeviceData(splits, targets["train"], targets["val"], targets["test"],
                      batch_size=cfg.data.batch_size, eval_batch_size=cfg.data.eval_batch_size, seed=cfg.seed)
    net = models.build(cfg.model, p.task.input_shape, p.num_outputs)
    module = Classifier(
        net, kind=p.task.kind, num_classes=p.task.num_classes, loss=p.loss, activation=p.activation,
        label_smoothing=cfg.loss.label_smoothing, numerics=str(getattr(cfg.loss.numerics, "value", cfg.loss.numerics)),
        optimizer=cfg.optimizer, check_every=cfg.trainer.log_every_n_steps,
    )
    tags = {
        "task": p.task.name, "task_kind": p.task.kind, "activation": p.activation,
        "activation_requested": cfg.activation.name, "loss": p.loss, "seed": cfg.seed,
        "num_outputs": p.num_outputs, "combination_status": p.cell.status.value,
        "combination_reason": p.cell.reason, "metrics_note": _metrics_note(p),
    }
    result: dict[str, Any] = {"run_name": p.run_name, "run_id": None, "combination_status": p.cell.status.value}
    if cfg.logger.name == "none":
        return {**result, "metrics": _fit_and_test(cfg, module, data, output_dir, logger=False,
                                                   extra_callbacks=list(callbacks))}
    from xentlab import tracking

    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    with tracking.tracked_run(
        tracking_uri=cfg.logger.tracking_uri, experiment=cfg.logger.experiment, run_name=p.run_name,
        tags=tags, config=resolved, config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
    ) as tracked:
        metrics = _fit_and_test(cfg, module, data, output_dir, logger=tracked.logger,
                                extra_callbacks=[tracked.recorder, *callbacks], on_device=tracked.set_tags)
        return {**result, "run_id": tracked.run_id, "metrics": metrics}


def _fit_and_test(cfg, module, data, output_dir, *, logger, extra_callbacks, on_device=None) -> dict[str, float]:
    t = cfg.trainer
    callbacks: list[Callback] = [EpochSummary(), *extra_callbacks]
    if t.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=t.log_every_n_steps))
    if t.checkpoint:
        callbacks.append(ModelCheckpoint(dirpath=Path(output_dir or ".") / "checkpoints", save_last=True))
    trainer = pl.Trainer(
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices, precision=t.precision,
        logger=logger, callbacks=callbacks, enable_progress_bar=t.progress_bar,
        enable_checkpointing=t.checkpoint, log_every_n_steps=t.log_every_n_steps,
        num_sanity_val_steps=0, deterministic=t.deterministic, default_root_dir=output_dir,
    )
    device = trainer.strategy.root_device
    if device.type == "cpu" and torch.cuda.device_count() == 0:
        # Lightning sets this for fork safety on GPU machines; with no GPU at all it only makes
        # every Adam step re-probe NVML (a dlopen, ~0.1 ms a step on CPU).
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    if on_device is not None:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        on_device({"device": str(device), "device_name": name})
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    train_seconds = time.perf_counter() - start
    final_val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    (results,) = trainer.test(module, datamodule=data, verbose=True)
    if logger:
        logger.log_metrics({"train_seconds": train_seconds}, step=0)
    return {**final_val, **{k: float(v) for k, v in results.items()}, "train_seconds": train_seconds}
