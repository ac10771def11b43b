"""Whole sweeps as batched models: what ``hydra/launcher=batched`` does with a sweep's jobs.

Jobs that can share one training loop (same task and its options, data options, model
architecture, batch size, epochs, optimizer) become the members of one model
(``xentlab.module.Classifier``); they may differ in everything :data:`xentlab.config.MEMBER_VARY` names. Binary
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

from xentlab import checkpoints, clock, cluster, outcome, sweep, tracking, train
from xentlab.config import MEMBER_VARY, batching_conflict
from xentlab.errors import ConfigError

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Job:
    """A sweep job as the launcher hands it over: its number, overrides, config and folder."""

    num: int
    overrides: Sequence[str]
    cfg: Any
    output_dir: str


def refuse(cfg: Any) -> Optional[str]:
    """Why a job cannot be a member of a batched model (None: it can)."""
    return batching_conflict(cfg, "hydra/launcher=batched", looks_up_members=True)


def group_key(cfg: Any, p: train.Plan) -> str:
    """Members with equal keys can train as one model: everything but ``MEMBER_VARY``, plus the
    number of outputs (a binary task's sigmoid and softmax heads differ in shape)."""
    shared = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for dotted in MEMBER_VARY:
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
    (``xentlab.cluster.train_models``).

    With ``resume=auto`` a member whose configuration has a FINISHED run is done already. A
    model whose members all have unfinished runs here goes on from its checkpoint in those
    runs; other unfinished members (KILLED, FAILED, stale) train from the start in new models,
    each in its earlier run."""
    if max_members < 1:
        raise ConfigError(f"hydra.launcher.max_members must be >= 1, got {max_members}")
    records: dict[int, dict[str, Any]] = {}
    runs: list[tuple[Job, train.MemberRun]] = []
    results: dict[int, list[dict[str, Any]]] = {}
    unfinished: dict[int, Any] = {}  # id(run) -> its earlier unfinished run
    trackers: dict[str, Any] = {}
    for job in jobs:
        with outcome.job(_record(job), sweeping=True) as record:
            reason = refuse(job.cfg)
            if reason:
                raise ConfigError(reason)
            p = train.plan(job.cfg)
            members = train.member_runs(job.cfg, p, job.output_dir)
            found = {id(run): _earlier(run, trackers) for run in members} if job.cfg.resume == "auto" else {}
            done = {id(run): f for run in members if isinstance(f := found.get(id(run)), checkpoints.Done)}
            results[job.num] = [train.done_result(run, done[id(run)]) for run in members if id(run) in done]
            runs += [(job, run) for run in members if id(run) not in done]
            unfinished.update({i: f for i, f in found.items() if i not in done and f is not None})
            if len(done) == len(members):
                record.update(_trained(p, results[job.num]))
        if "status" in record:
            records[job.num] = record
            _write(job, record)
    resumed, runs = _resumable(runs, unfinished)
    models = resumed + [(model, _restart(model, unfinished)) for model in groups(runs, max_members)]
    already = sum(bool(r.get("already_done")) for r in records.values())
    log.info("batched launcher: %d jobs (%d skipped, %d done earlier), %d runs as %d model(s) of at most %d members",
             len(jobs), len(records) - already, already, sum(len(m) for m, _ in models), len(models), max_members)
    clock.phase("jobs planned%s", " and looked up" if any(job.cfg.resume == "auto" for job in jobs) else "")
    with outcome.stops_on_interrupt():  # also between models
        remote = (cluster.train_models([([run for _, run in m], resume) for m, resume in models], slurm, _on_node,
                                       tracking.parent_heartbeat())
                  if slurm and models else None)
        for n, (model, resume) in enumerate(models, 1):
            _describe(n, len(models), model, resume)
            with outcome.job({}, sweeping=True) as failed:
                trained = (remote[n - 1]() if remote else
                           train.train([run for _, run in model], train.tracker_for(model[0][1].cfg), resume=resume))
                by_run = {id(run): result for run, result in trained}
                for job, run in model:
                    results[job.num].append(by_run[id(run)])
            for job, _ in model:
                if failed:  # this model's members failed; the next model goes on
                    records[job.num] = {**_record(job), **failed}
            _finish(model, results, records)
    return records


def _on_node(runs: list[train.MemberRun], resume: Optional[checkpoints.Resume]
             ) -> tuple[dict[str, Any], list[tuple[int, dict[str, Any]]]]:
    """A model as a SLURM job (``hydra.launcher.executor=slurm``), under the job policy of
    ``xentlab.outcome`` (a SIGTERM there ends its runs KILLED and returns a failed record).
    Results name members by position: the job has copies of them."""
    cluster.trains_to_the_limit()
    where = {id(r): i for i, r in enumerate(runs)}
    done: list[tuple[int, dict[str, Any]]] = []
    with outcome.job({}, sweeping=True) as failed:
        trained = train.train(runs, train.tracker_for(runs[0].cfg), resume=resume)
        done = [(where[id(r)], result) for r, result in trained]
    return failed, done


def _earlier(run: train.MemberRun, trackers: dict[str, Any]) -> Any:
    """``resume=auto``: the member's FINISHED run (``checkpoints.Done``), else its unfinished one
    or None. A sweep's members share a store, so its tracker is made once."""
    logger = json.dumps(OmegaConf.to_container(run.cfg.logger, resolve=True, enum_to_str=True), sort_keys=True)
    tracker = trackers.get(logger) or trackers.setdefault(logger, train.tracker_for(run.cfg))
    return checkpoints.earlier(OmegaConf.to_container(run.cfg, resolve=True, enum_to_str=True), tracker)


def _resumable(runs: list[tuple[Job, train.MemberRun]], unfinished: dict[int, Any]
               ) -> tuple[list[tuple[list[tuple[Job, train.MemberRun]], checkpoints.Resume]],
                          list[tuple[Job, train.MemberRun]]]:
    """(models that go on from their checkpoint, the runs left to group). A model goes on when
    each of the runs its checkpoint names is the unfinished run of a member here; its members
    keep their order, so the checkpoint's weights and optimizer state fit them."""
    by_checkpoint: dict[str, dict[str, tuple[Job, train.MemberRun]]] = {}
    for job, run in runs:
        if id(run) in unfinished and unfinished[id(run)].checkpoint:
            found = unfinished[id(run)]
            by_checkpoint.setdefault(found.checkpoint, {})[found.run_id] = (job, run)
    resumed, taken = [], set()
    for path, members in by_checkpoint.items():
        resume = checkpoints.of_model(path)
        if resume is not None and set(resume.run_ids) == set(members):
            resumed.append(([members[run_id] for run_id in resume.run_ids], resume))
            taken |= set(members)
            log.info("resume=auto: %d run(s) go on from %s (%d epochs done)", len(members), path, resume.epochs_done)
    return resumed, [(job, run) for job, run in runs if id(run) not in unfinished
                     or unfinished[id(run)].run_id not in taken]


def _restart(model: list[tuple[Job, train.MemberRun]], unfinished: dict[int, Any]) -> Optional[checkpoints.Resume]:
    """A new model whose members train from the start, each in its earlier unfinished run if it
    has one (a KILLED run is taken up again, not left beside a new one)."""
    run_ids = tuple(unfinished[id(run)].run_id if id(run) in unfinished else None for _, run in model)
    return checkpoints.Resume(None, run_ids, 0) if any(run_ids) else None


def _trained(p: train.Plan, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A job's record once all its members have a result (trained now, or done earlier)."""
    return outcome.trained(train.job_result(p, runs))


def _record(job: Job) -> dict[str, Any]:
    return {"job": job.num, "overrides": list(job.overrides)}


def _describe(n: int, of: int, model: list[tuple[Job, train.MemberRun]], resume: Optional[checkpoints.Resume]) -> None:
    cells = sorted({f"{p.plan.activation}+{p.plan.loss}" for _, p in model})
    lrs = sorted({float(p.cfg.optimizer.lr) for _, p in model})
    folds = {p.cfg.data.folds for _, p in model} - {1}
    log.info("model %d/%d: %d members (%s; lr %s; seeds %s%s)%s", n, of, len(model), ", ".join(cells),
             ", ".join(f"{lr:g}" for lr in lrs), ",".join(sorted({str(p.seed) for _, p in model}, key=int)),
             f"; fold {model[0][1].fold} of {folds.pop()}" if folds else "",
             "" if resume is None else f", going on after epoch {resume.epochs_done}" if resume.path
             else ", from the start in earlier runs")


def _finish(model: list[tuple[Job, train.MemberRun]], results: dict[int, list[dict[str, Any]]],
            records: dict[int, dict[str, Any]]) -> None:
    """Write the record of each job whose members have all trained (``seeds=[...]`` may put a
    job's members in several models, and its folds always go to models of their own) or whose
    model failed."""
    for job, run in model:
        if job.num not in records:
            if len(results[job.num]) < len(run.plan.members):
                continue
            records[job.num] = {**_record(job), **_trained(run.plan, results[job.num])}
        _write(job, records[job.num])


def _write(job: Job, record: dict[str, Any]) -> None:
    sweep.write_record(job.output_dir, record)
