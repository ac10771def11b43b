"""Whole sweeps as batched models: what ``hydra/launcher=batched`` does with a sweep's jobs.

Jobs that can share one training loop (same task and its options, data options, model
architecture, batch size, epochs, optimizer) become the members of one model
(``xentlab.module.Classifier``); they may differ in everything :data:`VARY` names. Binary
members with one output (sigmoid, none) and with two (softmax) go to separate models. Each
member is a normal MLflow run under the sweep's parent, and its job gets the same record
(``xentlab.sweep``) as with any other launcher. Invalid cells are skipped before anything
trains, as they are by ``run.py``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from omegaconf import OmegaConf

from xentlab import cluster, outcome, sweep, train
from xentlab.config import batching_conflict
from xentlab.errors import ConfigError

log = logging.getLogger(__name__)

# What may differ between the members of one model (dotted config keys).
VARY = ("activation", "loss", "seed", "seeds", "optimizer.lr", "optimizer.momentum", "optimizer.weight_decay",
        "model.init_scale", "logger.run_name")


@dataclass(frozen=True)
class Job:
    """A sweep job as the launcher hands it over: its number, overrides, config and folder."""

    num: int
    overrides: Sequence[str]
    cfg: Any
    output_dir: str


def refuse(cfg: Any) -> Optional[str]:
    """Why a job cannot be a member of a batched model (None: it can)."""
    return batching_conflict(cfg, "hydra/launcher=batched")


def group_key(cfg: Any, p: train.Plan) -> str:
    """Members with equal keys can train as one model: everything but :data:`VARY`, plus the
    number of outputs (a binary task's sigmoid and softmax heads differ in shape)."""
    shared = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for dotted in VARY:
        *path, last = dotted.split(".")
        node = shared
        for part in path:
            node = node[part]
        node.pop(last, None)
    return json.dumps({"config": shared, "num_outputs": p.num_outputs}, sort_keys=True, default=str)


def groups(runs: Sequence[tuple[Job, train.MemberRun]], max_members: int) -> list[list[tuple[Job, train.MemberRun]]]:
    """The members grouped by :func:`group_key`, split into models of at most ``max_members``.
    Within a group, members with equal optimizer settings come together (else in sweep
    order): a model keeps one parameter block and optimizer param group per run of equal
    settings, and a sweep's lr × seed order would give it one per few seeds."""
    by_key: dict[str, list[tuple[Job, train.MemberRun]]] = {}
    for job, run in runs:
        by_key.setdefault(group_key(run.cfg, run.plan), []).append((job, run))
    ordered = [sorted(g, key=lambda jr: train.by_optimizer_settings(jr[1])) for g in by_key.values()]
    return [g[i:i + max_members] for g in ordered for i in range(0, len(g), max_members)]


def launch(jobs: Sequence[Job], max_members: int, slurm: Optional[dict[str, Any]] = None) -> dict[int, dict[str, Any]]:
    """Plan every job, train the members model by model, write each job's record; returns
    the records by job number. What becomes of a job or a model is ``xentlab.outcome``'s
    policy, as for ``run.py``: a bad cell is skipped, a model that fails fails its jobs and
    the next model goes on, Ctrl-C (or SIGTERM) ends every open run KILLED and stops. With
    ``slurm`` (a ``SlurmQueueConf``'s fields) each model trains as one SLURM job, all at once
    (``xentlab.cluster.train_models``)."""
    if max_members < 1:
        raise ConfigError(f"hydra.launcher.max_members must be >= 1, got {max_members}")
    records: dict[int, dict[str, Any]] = {}
    runs: list[tuple[Job, train.MemberRun]] = []
    for job in jobs:
        with outcome.job(_record(job), sweeping=True) as record:
            reason = refuse(job.cfg)
            if reason:
                raise ConfigError(reason)
            p = train.plan(job.cfg)
            runs += [(job, run) for run in train.member_runs(job.cfg, p, job.output_dir)]
        if "status" in record:
            records[job.num] = record
            _write(job, record)
    models = groups(runs, max_members)
    log.info("batched launcher: %d jobs (%d skipped), %d runs as %d model(s) of at most %d members",
             len(jobs), len(records), len(runs), len(models), max_members)
    results: dict[int, list[dict[str, Any]]] = {}
    with outcome.stops_on_interrupt():  # also between models
        remote = cluster.train_models([[run for _, run in m] for m in models], slurm) if slurm and models else None
        for n, model in enumerate(models, 1):
            _describe(n, len(models), model)
            with outcome.job({}, sweeping=True) as failed:
                done = (remote[n - 1]() if remote else
                        train.train([run for _, run in model], train.tracker_for(model[0][1].cfg)))
                by_run = {id(run): result for run, result in done}
                for job, run in model:
                    results.setdefault(job.num, []).append(by_run[id(run)])
            for job, _ in model:
                if failed:  # this model's members failed; the next model goes on
                    records[job.num] = {**_record(job), **failed}
            _finish(model, results, records)
    return records


def _record(job: Job) -> dict[str, Any]:
    return {"job": job.num, "overrides": list(job.overrides)}


def _describe(n: int, of: int, model: list[tuple[Job, train.MemberRun]]) -> None:
    cells = sorted({f"{p.plan.activation}+{p.plan.loss}" for _, p in model})
    lrs = sorted({float(p.cfg.optimizer.lr) for _, p in model})
    log.info("model %d/%d: %d members (%s; lr %s; seeds %s)", n, of, len(model), ", ".join(cells),
             ", ".join(f"{lr:g}" for lr in lrs), ",".join(sorted({str(p.seed) for _, p in model}, key=int)))


def _finish(model: list[tuple[Job, train.MemberRun]], results: dict[int, list[dict[str, Any]]],
            records: dict[int, dict[str, Any]]) -> None:
    """Write the record of each job whose members have all trained (``seeds=[...]`` may
    put a job's members in several models) or whose model failed."""
    for job, run in model:
        if job.num not in records:
            runs = results.get(job.num, [])
            if len(runs) < len(run.plan.seeds):
                continue
            result = {"runs": runs} if run.plan.batched else runs[0]
            records[job.num] = {**_record(job),
                                **outcome.trained({**result, "combination_status": run.plan.cell.status.value})}
        _write(job, records[job.num])


def _write(job: Job, record: dict[str, Any]) -> None:
    sweep.write_record(job.output_dir, record)
