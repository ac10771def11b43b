"""One experiment, in order: plan, build, fit, test, record.

:func:`plan` does every check that needs no training, so a bad config or an invalid
activation × loss × task cell fails in well under a second, before any training data is
built or any MLflow run exists (``task=file`` reads and checks the user's file there). :func:`run` then goes one way whatever the logger (the tracker
is MLflow's or the no-op one) and whether one seed or several train as one model.
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

from xentlab import checkpoints, compat, losses, members, models, tasks
from xentlab.config import ConfigError, validate
from xentlab.data import DeviceData, MemberData
from xentlab.metrics import available
from xentlab.module import Classifier, Member
from xentlab.tracking import lifecycle, store

log = logging.getLogger(__name__)
LOGGERS = ("mlflow", "none")


@dataclass(frozen=True)
class Plan:
    task: tasks.TaskSpec
    activation: str
    loss: str
    numerics: str
    cell: compat.Cell
    num_outputs: int
    seeds: tuple[int, ...]  # the members: one run each
    batched: bool  # seeds=[...]: the members train as one model
    run_names: dict[int, str]

    @property
    def run_name(self) -> str:
        return self.run_names[self.seeds[0]]


def _value(choice: Any) -> str:
    return str(getattr(choice, "value", choice))


def plan(cfg: Any) -> Plan:
    """Every check that needs no training; raises ConfigError naming the problem and the choices.
    A task that reads the user's data (``task=file``) reads and checks it here."""
    validate(cfg)
    try:
        spec = tasks.resolve(cfg.task, cfg.data)
        activation = compat.resolve_activation(spec.kind, cfg.activation.name, cfg.loss.name)
        cell = compat.check(spec.name, spec.kind, activation, cfg.loss.name)
        losses.check_options(cfg.loss.name, activation, label_smoothing=cfg.loss.label_smoothing,
                             numerics=_value(cfg.loss.numerics))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    for kind, name, valid in (("model", cfg.model.name, models.MODELS), ("logger", cfg.logger.name, LOGGERS)):
        if name not in valid:
            raise ConfigError(f"unknown {kind} {name!r}; valid choices are: {', '.join(valid)}")
    try:
        models.check_input(cfg.model.name, spec.input_shape, spec.name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    seeds = tuple(cfg.seeds) if cfg.seeds else (cfg.seed,)
    names = {s: cfg.logger.run_name or f"{spec.name}-{activation}-{cfg.loss.name}-s{s}" for s in seeds}
    return Plan(spec, activation, cfg.loss.name, _value(cfg.loss.numerics), cell, spec.num_outputs(activation),
                seeds, bool(cfg.seeds), names)


def describe(cfg: Any, p: Plan, seed: int, checkpoint_dir: Optional[Path], members_: int = 1) -> lifecycle.RunDescription:
    """Every tag and param of a member's MLflow run (the store adds its git commit and process;
    the device follows once Lightning has picked it, an error or resume when they happen).
    ``members_``: how many members its model trains (``batch_members`` tag when more than one)."""
    one = OmegaConf.merge(cfg, {"seed": seed})
    tags = {
        "task": p.task.name, "task_kind": p.task.kind, "activation": p.activation,
        "activation_requested": cfg.activation.name, "loss": p.loss, "num_outputs": p.num_outputs,
        "combination_status": p.cell.status.value, "combination_reason": p.cell.reason,
        "metrics_note": _metrics_note(p), "seed": seed,
    }
    if p.task.class_names:
        tags["class_names"] = ",".join(p.task.class_names)
    if p.batched:
        tags["seed_batch"] = ",".join(map(str, p.seeds))
    if members_ > 1:
        tags["batch_members"] = members_
    if checkpoint_dir is not None:
        tags["checkpoint"] = str(checkpoint_dir / checkpoints.LAST)
    return lifecycle.RunDescription(p.run_names[seed], tags, OmegaConf.to_container(one, resolve=True, enum_to_str=True),
                                    OmegaConf.to_yaml(one, resolve=True))


def _metrics_note(p: Plan) -> str:
    if p.activation != "none":
        return "all yardsticks are computed from the activated outputs"
    missing = sorted(set(p.task.metrics) - set(available(p.task.kind, p.activation)))
    return f"activation=none: outputs are not probabilities, so {', '.join(missing)} are not logged"


def tracker_for(cfg: Any):
    """MLflow's tracker, or the no-op one for ``logger=none`` and the extra processes of a DDP run."""
    if cfg.logger.name == "none" or _rank() != 0:
        return lifecycle.NoTracking()
    return lifecycle.MlflowTracking(cfg.logger.tracking_uri, cfg.logger.experiment, cfg.logger.stale_after)


@dataclass(frozen=True)
class Part:
    """One member of a model: one MLflow run, with its own config (``seed`` set)."""

    cfg: Any
    plan: Plan
    seed: int
    output_dir: Optional[str] = None

    @property
    def member(self) -> Member:
        o = self.cfg.optimizer
        return Member(self.plan.loss, self.plan.activation, float(self.cfg.loss.label_smoothing), self.plan.numerics,
                      float(o.lr), float(o.momentum), float(o.weight_decay))


def parts(cfg: Any, p: Plan, output_dir: Optional[str] = None) -> list[Part]:
    """The members of one job: its seed, or each of ``seeds=[...]``."""
    return [Part(OmegaConf.merge(cfg, {"seed": s}) if p.batched else cfg, p, s, output_dir) for s in p.seeds]


def run(cfg: Any, output_dir: Optional[str] = None, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train and test one configuration; return its run name, MLflow run id and test metrics.

    With ``seeds=[...]`` the seeds train together as one model (members of
    ``xentlab.module.Classifier``) and the result lists one entry per seed under ``runs``.
    With ``resume=auto`` a FINISHED earlier run of the same configuration is returned as it
    is (``already_done``), and a killed or failed one goes on from its checkpoint.
    ``callbacks`` are extra Lightning callbacks (the benchmark times epochs with one)."""
    p = plan(cfg)
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    tracker = tracker_for(cfg)
    resume_from = cfg.resume
    if cfg.resume == "auto":
        found = tracker.previous(checkpoints.identity(container))
        if found is not None and found.status == "FINISHED":
            log.info("already done: MLflow run %s (FINISHED) has this configuration; nothing to train", found.run_id)
            return {"run_name": p.run_name, "run_id": found.run_id, "combination_status": p.cell.status.value,
                    "metrics": found.metrics, "already_done": True}
        resume_from = found.checkpoint if found is not None else None  # it names its MLflow run
        log.info("resume=auto: %s", f"going on with MLflow run {found.run_id} ({found.status})" if found
                 else "no earlier run of this configuration; training from the start")
    resume = checkpoints.load(resume_from, container, _checkpoint_finder(cfg)) if resume_from else None
    if resume:
        log.info("resuming from %s (%d epochs done)%s", resume.path, resume.epochs_done,
                 f", logging into MLflow run {resume.run_id}" if resume.run_id and cfg.logger.name != "none" else "")
    results = fit(parts(cfg, p, output_dir), tracker, resume=resume, callbacks=callbacks)
    if not p.batched:
        return {**results[0][1], "combination_status": p.cell.status.value}
    return {"runs": [r for _, r in results], "combination_status": p.cell.status.value}


def fit(members_: Sequence[Part], tracker, *, resume: Optional[checkpoints.Resume] = None,
        callbacks: Sequence[Callback] = ()) -> list[tuple[Part, dict[str, Any]]]:
    """Train and test members that share task, data, architecture, batch size, epochs and
    optimizer (``xentlab.batching.group_key``) as one model, each logged to its own run.
    Returns (member, result) pairs; a member whose loss diverged has ``error`` and its run
    ended FAILED, while the others finished."""
    ordered = sorted(members_, key=lambda m: tuple(m.member.settings.values()))  # equal settings: one block
    first = ordered[0]
    for m in ordered:
        if m.plan.cell.status is compat.Status.QUESTIONABLE:
            log.warning("questionable combination: activation=%s loss=%s on %s: %s",
                        m.plan.activation, m.plan.loss, m.plan.task.name, m.plan.cell.reason)
    module, data = build(ordered)
    k = len(ordered)
    checkpoint_dir = _checkpoint_dir(first.output_dir)
    descriptions = {i: describe(m.cfg, m.plan, m.seed, checkpoint_dir if first.cfg.trainer.checkpoint else None, k)
                    for i, m in enumerate(ordered)}
    container = OmegaConf.to_container(first.cfg, resolve=True, enum_to_str=True)
    with tracker.open(descriptions, routed=k > 1, resume_run_id=resume.run_id if resume else None) as session:
        record = checkpoints.RunRecord(container, session.run_ids[0] if k == 1 else None)
        metrics = _fit_and_test(first.cfg, k, module, data, first.output_dir, logger=session.logger,
                                on_device=session.set_tags, ckpt_path=str(resume.path) if resume else None,
                                extra_callbacks=[record, *session.callbacks, *callbacks])
        for i, exc in module.failed.items():
            session.fail(i, exc)
    out = []
    for i, m in enumerate(ordered):
        result = {"seed": m.seed, "run_name": m.plan.run_names[m.seed], "run_id": session.run_ids[i],
                  "metrics": metrics if k == 1 else members.of(metrics, i)}
        if i in module.failed:
            result["error"] = f"{type(module.failed[i]).__name__}: {module.failed[i]}"
        out.append((m, result))
    return out


def build(members_: Sequence[Part]):
    """The data on the training device (targets in each member's loss format) and the module."""
    first = members_[0]
    cfg, p = first.cfg, first.plan
    pl.seed_everything(first.seed, workers=False, verbose=False)
    splits = tasks.build(p.task, cfg.task, cfg.data)
    if cfg.data.batch_size > len(splits.train):
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the {len(splits.train)} training examples")
    nets = []
    for m in members_:  # each member's weights exactly as a run with its seed alone draws them
        pl.seed_everything(m.seed, workers=False, verbose=False)
        nets.append(models.build(m.cfg.model, p.task.input_shape, p.num_outputs))
    if cfg.trainer.compile:
        nets = [torch.compile(nets[0])]
    module = Classifier(nets, [m.member for m in members_], kind=p.task.kind, num_classes=p.task.num_classes,
                        optimizer=_value(cfg.optimizer.name), check_every=cfg.trainer.log_every_n_steps,
                        per_class=cfg.task.imbalance is not None)
    targets = {}
    for name in ("train", "val", "test"):
        split = getattr(splits, name)
        targets[name] = tuple(losses.encode_targets(loss, split.y, p.num_outputs) for loss in module.target_losses)
        shape = torch.empty((len(split), p.num_outputs), device="meta")
        for loss, t in zip(module.target_losses, targets[name]):
            losses.validate_targets(loss, shape, t)  # once, so training steps need no host sync
    batch_sizes = dict(batch_size=cfg.data.batch_size, eval_batch_size=cfg.data.eval_batch_size)
    if len(members_) == 1:
        return module, DeviceData(splits, targets, seed=first.seed, **batch_sizes)
    return module, MemberData(splits, targets, seeds=[m.seed for m in members_], **batch_sizes)


class EpochSummary(Callback):
    """One line per epoch, also where progress bars are off (sweeps, CI logs)."""

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            log.info("training started: %d steps per epoch on %s%s%s", trainer.num_training_batches,
                     trainer.strategy.root_device, f" x {trainer.world_size} processes" if trainer.world_size > 1 else "",
                     f", {pl_module.k} members as one model" if pl_module.k > 1 else "")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:  # DDP: one line per epoch, from rank 0
            return
        m = dict(trainer.callback_metrics)
        if pl_module.k > 1:  # the spread of an accuracy-like figure over the members
            acc = sorted(float(v) for k, v in m.items() if (p := members.parse(k)) and p[1] in ("val/acc", "val/subset_acc"))
            shown = f"val accuracy over {len(acc)} members: min {acc[0]:.4f} median {acc[len(acc) // 2]:.4f} " \
                    f"max {acc[-1]:.4f}" if acc else ""
            if pl_module.failed:
                shown += f"; {len(pl_module.failed)} diverged"
        else:
            if pl_module.epoch_loss() is not None and trainer.world_size == 1:
                m["train/loss"] = pl_module.epoch_loss()[0]
            shown = " ".join(f"{k} {float(m[k]):.4f}" for k in sorted(m) if k.startswith(("train/loss", "val/"))
                             and not k.endswith("_step"))
        log.info("epoch %d/%d  %s  (%.1f s)", trainer.current_epoch + 1, trainer.max_epochs, shown,
                 time.perf_counter() - self._t0)


class _InterruptRecorder(Callback):
    """Lightning turns Ctrl-C into ``sys.exit(1)``; remember what really happened."""

    exception: Optional[BaseException] = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.exception = exception


def _rank() -> int:
    """This process's rank: 0 but in the extra processes of a DDP run (they track nothing)."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0)


def _checkpoint_finder(cfg):
    def find(run_id: str) -> Optional[str]:
        if cfg.logger.name == "none":
            raise ConfigError(f"resume={run_id} names an MLflow run, but logger=none; give the checkpoint's path")
        return store.checkpoint_of(run_id, cfg.logger.tracking_uri)
    return find


def _checkpoint_dir(output_dir: Optional[str]) -> Path:
    return (Path(output_dir or ".") / "checkpoints").resolve()


def _fit_and_test(cfg, n_members: int, module, data, output_dir, *, logger, extra_callbacks, on_device,
                  ckpt_path: Optional[str] = None) -> dict[str, float]:
    t = cfg.trainer
    interrupt = _InterruptRecorder()
    callbacks: list[Callback] = [EpochSummary(), interrupt, *extra_callbacks]
    if t.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=t.log_every_n_steps))
    if t.checkpoint:
        callbacks.append(ModelCheckpoint(dirpath=_checkpoint_dir(output_dir), save_last=True))
    trainer = pl.Trainer(
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices, precision=t.precision,
        strategy=t.strategy,
        logger=logger, callbacks=callbacks, enable_progress_bar=t.progress_bar,
        enable_checkpointing=t.checkpoint, log_every_n_steps=t.log_every_n_steps,
        num_sanity_val_steps=0, deterministic=t.deterministic, default_root_dir=output_dir,
    )
    device = trainer.strategy.root_device
    if device.type == "cpu" and torch.cuda.device_count() == 0:
        # Lightning sets this for fork safety on GPU machines; with no GPU at all it only makes
        # every Adam step re-probe NVML (a dlopen, ~0.1 ms a step on CPU).
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    on_device({"device": str(device), "device_name": name})
    try:
        start = time.perf_counter()
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        train_seconds = time.perf_counter() - start
        final_val = {k: float(v) for k, v in trainer.callback_metrics.items() if "val/" in k}
        (results,) = trainer.test(module, datamodule=data, verbose=n_members == 1)  # K > 1: one table per member is noise
    except SystemExit:
        if isinstance(interrupt.exception, KeyboardInterrupt):
            raise interrupt.exception from None
        raise
    timing = ({members.key(i, "train_seconds"): train_seconds for i in range(n_members)} if n_members > 1
              else {"train_seconds": train_seconds})
    if logger:
        logger.log_metrics(timing, step=0)
    return {**final_val, **{k: float(v) for k, v in results.items()}, **timing}
