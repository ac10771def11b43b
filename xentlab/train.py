"""One experiment, top to bottom: :func:`run` = :func:`plan` → :func:`train` (build data and
module → make the trainer → fit → test → results).

:func:`plan` (``xentlab.planning``) does every check that needs no training, so a bad config or
an invalid activation × loss × task cell fails before any training data is built or any MLflow
run exists.
:func:`train` then goes one way whatever the logger (the tracker is MLflow's or the no-op
one) and however many members (K >= 1 runs) train as one model: a single run is K = 1.
"""

from __future__ import annotations

import contextlib
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

from xentlab import analysis, checkpoints, clock, compat, losses, metric_keys, models, tasks, yardsticks
from xentlab.callbacks import EpochSummary, FirstStep, InterruptRecorder
from xentlab.config import LoggerName
from xentlab.data import DeviceData, MemberData
from xentlab.errors import ConfigError
from xentlab.module import Classifier, MemberSettings
from xentlab.planning import Plan, plan, value_of  # noqa: F401  (train.plan: a run's first step)
from xentlab.tracking import lifecycle, store

log = logging.getLogger(__name__)
RUN_VALUES = ("train_seconds", "best_epoch")  # one value per run, logged at step 0


def run(cfg: Any, output_dir: Optional[str] = None, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train and test one configuration; return its run name, MLflow run id and test metrics.

    With ``seeds=[...]`` the seeds train together as one model and the result lists one
    entry per seed under ``runs``. With ``resume=auto`` a FINISHED earlier run of the same
    configuration is returned as it is (``already_done``). ``callbacks`` are extra Lightning
    callbacks (the benchmark times epochs with one)."""
    p = plan(cfg)
    tracker = tracker_for(cfg)
    results = []
    runs = member_runs(cfg, p, output_dir)
    for fold in p.folds:  # a fold's data is its own: its seeds share a model, folds train one after another
        mine = [r for r in runs if r.fold == fold]
        resume = checkpoints.find(mine[0].cfg, tracker)  # resume= has one run per fold (config.validate)
        if isinstance(resume, checkpoints.Done):
            results.append(done_result(mine[0], resume))
            continue
        results += [r for _, r in train(mine, tracker, resume=resume, callbacks=callbacks)]
    return job_result(p, results)


def job_result(p: Plan, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A job's result once each of its runs has one (trained now, or done earlier): the run's own,
    or ``runs`` listing them (``seeds=[...]``, several folds)."""
    result = {"runs": list(runs)} if p.several else dict(runs[0])
    if all(r.get("already_done") for r in runs):
        result["already_done"] = True
    return {**result, "combination_status": p.cell.status.value}


def done_result(r: "MemberRun", done: checkpoints.Done) -> dict[str, Any]:
    """The result of a run that ``resume=auto`` found FINISHED."""
    return {**_names(r), "run_id": done.run_id, "metrics": done.metrics, "already_done": True}


def tracker_for(cfg: Any):
    """MLflow's tracker, or the no-op one for ``logger=none`` and the extra processes of a DDP run."""
    if cfg.logger.name == LoggerName.none:
        return lifecycle.NoTracking()
    if _rank() != 0:  # tracks nothing, but finds a run's checkpoint as rank 0 does
        return lifecycle.NoTracking(lambda run_id: store.checkpoint_of(run_id, cfg.logger.tracking_uri))
    return lifecycle.MlflowTracking(cfg.logger.tracking_uri, cfg.logger.experiment, cfg.logger.stale_after)


@dataclass(frozen=True)
class MemberRun:
    """One member of a model: one MLflow run, with its own config (``seed`` and ``data.fold`` set)."""

    cfg: Any
    plan: Plan
    seed: int
    output_dir: Optional[str] = None
    fold: int = 0

    @property
    def settings(self) -> MemberSettings:
        o = self.cfg.optimizer
        return MemberSettings(self.plan.loss, self.plan.activation, float(self.cfg.loss.label_smoothing),
                              self.plan.numerics, float(o.lr), float(o.momentum), float(o.weight_decay))


def member_runs(cfg: Any, p: Plan, output_dir: Optional[str] = None) -> list[MemberRun]:
    """The runs of one job: its seed, or each of ``seeds=[...]``, in each of its folds (``data.folds``).
    A job of several folds gives each its own folder: their models write checkpoints apart."""
    return [MemberRun(OmegaConf.merge(cfg, {"seed": s, "data": {"fold": f}}), p, s,
                      str(Path(output_dir or ".") / f"fold{f}") if len(p.folds) > 1 else output_dir, f)
            for s, f in p.members]


def by_optimizer_settings(run: MemberRun) -> tuple[float, ...]:
    """Sort key that brings members with equal optimizer settings together: a model keeps one
    parameter block and optimizer param group per run of equal settings."""
    return tuple(run.settings.optimizer.values())


def train(runs: Sequence[MemberRun], tracker, *, resume: Optional[checkpoints.Resume] = None,
          callbacks: Sequence[Callback] = ()) -> list[tuple[MemberRun, dict[str, Any]]]:
    """Train and test runs that share task, data, architecture, batch size, epochs and
    optimizer (``xentlab.batching.group_key``) as one model, each logged to its own run.
    Returns (run, result) pairs; a member whose loss diverged has ``error`` and its run
    ended FAILED, while the others finished."""
    runs = sorted(runs, key=by_optimizer_settings)  # stable: a resumed model's members keep their order
    first = runs[0]
    for r in runs:
        if r.plan.cell.status is compat.Status.QUESTIONABLE:
            log.warning("questionable combination: activation=%s loss=%s on %s: %s",
                        r.plan.activation, r.plan.loss, r.plan.task.name, r.plan.cell.reason)
    module, data = build(runs)
    clock.phase("data and %d member(s) built", len(runs))
    checkpoint_dir = _checkpoint_dir(first.output_dir) if first.cfg.trainer.checkpoint else None
    descriptions = {i: describe(r, checkpoint_dir, len(runs)) for i, r in enumerate(runs)}
    with tracker.open(descriptions, resume_run_ids=dict(enumerate(resume.run_ids)) if resume else None) as session:
        clock.phase("MLflow runs open")
        record = checkpoints.RunRecord(OmegaConf.to_container(first.cfg, resolve=True, enum_to_str=True),
                                       [session.run_ids[i] for i in range(len(runs))])
        trainer, interrupt = make_trainer(first.cfg, first.plan, session.logger,
                                          [record, *session.callbacks, *callbacks], first.output_dir)
        session.set_tags(_device_tags(trainer))
        metrics = fit_and_test(trainer, interrupt, module, data, resume)
        for i in range(len(runs)):
            session.log_once(i, {k: v for k, v in metric_keys.of(metrics, i).items() if k in RUN_VALUES})
        for i, limited in budget_limited(module, trainer.current_epoch, first.cfg.trainer).items():
            session.tag(i, {"budget_limited": str(limited).lower()})
        for i, exc in module.failed.items():
            session.fail(i, exc)
    return [(r, results(r, i, session.run_ids[i], metrics, module.failed)) for i, r in enumerate(runs)]


def build(runs: Sequence[MemberRun]) -> tuple[Classifier, DeviceData]:
    """The data on the training device (targets in each member's loss format) and the module."""
    first = runs[0]
    cfg, p = first.cfg, first.plan
    pl.seed_everything(first.seed, workers=False, verbose=False)
    splits = tasks.build(p.task, cfg.task, cfg.data)
    if cfg.data.batch_size > len(splits.train):
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the "
                          f"{len(splits.train)} training examples")
    nets = []
    for r in runs:  # each member's weights exactly as a run with its seed alone draws them
        pl.seed_everything(r.seed, workers=False, verbose=False)
        nets.append(models.build(r.cfg.model, p.task.input_shape, p.num_outputs))
    if cfg.trainer.compile:
        nets = [torch.compile(nets[0])]
    module = Classifier(nets, [r.settings for r in runs], kind=p.task.kind, num_classes=p.task.num_classes,
                        optimizer=value_of(cfg.optimizer.name), check_every=cfg.trainer.log_every_n_steps,
                        per_class=cfg.task.imbalance is not None, select_on=p.select_on,
                        higher=bool(p.select_on) and yardsticks.higher_is_better(p.select_on),
                        patience=cfg.trainer.patience)
    targets = {}
    for name in ("train", "val", "test"):
        split = getattr(splits, name)
        targets[name] = tuple(losses.encode_targets(loss, split.y, p.num_outputs) for loss in module.target_losses)
        shape = torch.empty((len(split), p.num_outputs), device="meta")
        for loss, t in zip(module.target_losses, targets[name]):
            losses.validate_targets(loss, shape, t)  # once, so training steps need no host sync
    sizes = dict(batch_size=cfg.data.batch_size, eval_batch_size=cfg.data.eval_batch_size)
    if module.nets.per_member_batches:
        return module, MemberData(splits, targets, seeds=[r.seed for r in runs], **sizes)
    return module, DeviceData(splits, targets, seed=first.seed, **sizes)


def describe(r: MemberRun, checkpoint_dir: Optional[Path], members: int) -> lifecycle.RunDescription:
    """The tags and params of a member's MLflow run that training knows (the store adds its git
    commit, host and process; the device follows once Lightning has picked it, an error or
    resume when they happen). ``members``: how many its model trains (``batch_members`` when > 1)."""
    p, cfg = r.plan, r.cfg  # a member's config already holds its seed (member_runs)
    params = {**OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "selection": p.selection}
    tags = {
        "task": p.task.name, "task_kind": p.task.kind, "activation": p.activation,
        "activation_requested": cfg.activation.name, "loss": p.loss, "num_outputs": p.num_outputs,
        "combination_status": p.cell.status.value, "combination_reason": p.cell.reason,
        "metrics_note": _metrics_note(p), "seed": r.seed,
    }
    if cfg.data.folds > 1:
        tags["fold"] = r.fold
    if p.task.class_names:
        tags["class_names"] = ",".join(p.task.class_names)
    if p.batched:
        tags["seed_batch"] = ",".join(map(str, p.seeds))
    if members > 1:
        tags["batch_members"] = members
    if checkpoint_dir is not None:
        tags["checkpoint"] = str(checkpoint_dir / checkpoints.LAST)
    tags[store.IDENTITY_TAG] = store.identity_key(checkpoints.identity(params))
    return lifecycle.RunDescription(p.run_names[(r.seed, r.fold)], tags, params, OmegaConf.to_yaml(cfg, resolve=True))


def make_trainer(cfg: Any, p: Plan, logger, extra: Sequence[Callback],
                 output_dir: Optional[str]) -> tuple[pl.Trainer, InterruptRecorder]:
    """Lightning's trainer with xentlab's callbacks, and the recorder of what stopped it."""
    t = cfg.trainer
    interrupt = InterruptRecorder()
    callbacks: list[Callback] = [EpochSummary(p.task.kind), FirstStep(), interrupt, *extra]
    if t.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=t.log_every_n_steps))
    if t.checkpoint:
        callbacks.append(ModelCheckpoint(dirpath=_checkpoint_dir(output_dir), save_last=True))
    trainer = pl.Trainer(
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices, precision=t.precision,
        strategy=t.strategy, logger=logger, callbacks=callbacks, enable_progress_bar=t.progress_bar,
        enable_checkpointing=t.checkpoint, log_every_n_steps=t.log_every_n_steps,
        num_sanity_val_steps=0, deterministic=t.deterministic, default_root_dir=output_dir,
    )
    if trainer.strategy.root_device.type == "cpu" and torch.cuda.device_count() == 0:
        # Lightning sets this for fork safety on GPU machines; with no GPU at all it only makes
        # every Adam step re-probe NVML (a dlopen, ~0.1 ms a step on CPU).
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    return trainer, interrupt


@contextlib.contextmanager
def subnormals_flushed():
    """Subnormal floats flushed to zero on the CPU while a model trains and tests. A member whose
    units saturate drives its gradients and Adam moments into subnormals, which take the CPU's slow
    path: its epochs slowed 1.7x alone, and every member stacked with it paid the same (a fair grid's
    last model went from 6 to 22 s an epoch). TensorFlow flushes them by default on CPU too."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def fit_and_test(trainer: pl.Trainer, interrupt: InterruptRecorder, module: Classifier, data: DeviceData,
                 resume: Optional[checkpoints.Resume]) -> dict[str, float]:
    """Fit, then test the selected weights (each member's best validation epoch, or the last);
    every member's values under its key: validation and test of the selected epoch (what a
    hyperparameter search optimises), its best epoch and its share of the training time."""
    try:
        with subnormals_flushed():
            start = time.perf_counter()
            trainer.fit(module, datamodule=data, ckpt_path=str(resume.path) if resume and resume.path else None)
            train_seconds = time.perf_counter() - start
            final_val = {k: float(v) for k, v in trainer.callback_metrics.items() if "val/" in k}
            final_val.update({metric_keys.key(i, k): v for i, vals in module.selected_val.items()  # the tested epoch's
                              for k, v in vals.items()})
            module.use_selected()
            (tested,) = trainer.test(module, datamodule=data, verbose=False)
    except SystemExit:
        if isinstance(interrupt.exception, KeyboardInterrupt):
            raise interrupt.exception from None
        raise
    if module.k == 1 and trainer.is_global_zero:  # K > 1: a table per member is noise; each run has its metrics
        print("\n".join(f"{k:<24}{float(v):.6f}" for k, v in sorted(metric_keys.of(tested, 0).items())), flush=True)
    # a member of a batched model: its share of the model's time (the batch_members tag says so)
    once = {metric_keys.key(i, "train_seconds"): train_seconds / module.k for i in range(module.k)}
    if module.selection is not None:
        once.update({metric_keys.key(i, "best_epoch"): float(e) for i, e in
                     enumerate(module.selection.best_epoch.tolist())})
    return {**final_val, **{k: float(v) for k, v in tested.items()}, **once}


def budget_limited(module: Classifier, epochs: int, t: Any) -> dict[int, bool]:
    """Each member's ``analysis.budget_limited`` after a fit of ``epochs`` epochs under trainer config
    ``t`` (a diverged member has none: its run FAILED)."""
    return {i: analysis.budget_limited(selected, trained, t.max_epochs, t.patience)
            for i, (trained, selected) in enumerate(module.trained_and_selected(epochs)) if i not in module.failed}


def results(r: MemberRun, i: int, run_id: Optional[str], metrics: dict[str, float],
            failed: dict[int, BaseException]) -> dict[str, Any]:
    """Member ``i``'s result: its run and its own metrics under their plain names."""
    out = {**_names(r), "run_id": run_id, "metrics": metric_keys.of(metrics, i)}
    if i in failed:
        out["error"] = f"{type(failed[i]).__name__}: {failed[i]}"
    return out


def _names(r: MemberRun) -> dict[str, Any]:
    """What names a run in its job's result: its seed, its fold (of several) and its run name."""
    return {"seed": r.seed, **({"fold": r.fold} if r.cfg.data.folds > 1 else {}),
            "run_name": r.plan.run_names[(r.seed, r.fold)]}


def _device_tags(trainer: pl.Trainer) -> dict[str, str]:
    device = trainer.strategy.root_device
    return {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
            else device.type}


def _metrics_note(p: Plan) -> str:
    if p.activation != "none":
        return "all yardsticks are computed from the activated outputs"
    missing = sorted(set(p.task.metrics) - set(yardsticks.available(p.task.kind, p.activation)))
    return f"activation=none: outputs are not probabilities, so {', '.join(missing)} are not logged"


def _rank() -> int:
    """This process's rank: 0 but in the extra processes of a DDP run (they track nothing)."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0)


def _checkpoint_dir(output_dir: Optional[str]) -> Path:
    return (Path(output_dir or ".") / "checkpoints").resolve()
