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

from xentlab import interrupts, sweep, train
from xentlab.config import ConfigError

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
    if cfg.resume:
        return ("resume works one run at a time, and hydra/launcher=batched trains many runs as one model: "
                "drop resume= or use the default launcher")
    if cfg.trainer.compile:
        return "trainer.compile=true compiles one network; with hydra/launcher=batched drop it"
    if "ddp" in str(cfg.trainer.strategy):
        return "hydra/launcher=batched trains its members on one device; it does not combine with trainer=ddp"
    return None


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


def groups(parts: Sequence[tuple[Job, train.Part]], max_members: int) -> list[list[tuple[Job, train.Part]]]:
    """The members grouped by :func:`group_key`, split into models of at most ``max_members``.
    Within a group, members with equal optimizer settings come together (else in sweep
    order): a model keeps one parameter block and optimizer param group per run of equal
    settings, and a sweep's lr × seed order would give it one per few seeds."""
    by_key: dict[str, list[tuple[Job, train.Part]]] = {}
    for job, part in parts:
        by_key.setdefault(group_key(part.cfg, part.plan), []).append((job, part))
    ordered = [sorted(g, key=lambda jp: tuple(jp[1].member.settings.values())) for g in by_key.values()]
    return [g[i:i + max_members] for g in ordered for i in range(0, len(g), max_members)]


def launch(jobs: Sequence[Job], max_members: int) -> dict[int, dict[str, Any]]:
    """Plan every job, train the members model by model, write each job's record; returns
    the records by job number. Ctrl-C (or SIGTERM) ends every open run KILLED and stops."""
    if max_members < 1:
        raise ConfigError(f"hydra.launcher.max_members must be >= 1, got {max_members}")
    records: dict[int, dict[str, Any]] = {}
    parts: list[tuple[Job, train.Part]] = []
    for job in jobs:
        try:
            reason = refuse(job.cfg)
            if reason:
                raise ConfigError(reason)
            p = train.plan(job.cfg)
        except ConfigError as exc:
            log.error("skipped: %s", exc)
            records[job.num] = {"job": job.num, "overrides": list(job.overrides), **sweep.outcome(exc)}
            _write(job, records[job.num])
            continue
        parts += [(job, part) for part in train.parts(job.cfg, p, job.output_dir)]
    models = groups(parts, max_members)
    log.info("batched launcher: %d jobs (%d skipped), %d runs as %d model(s) of at most %d members",
             len(jobs), len(records), len(parts), len(models), max_members)
    results: dict[int, list[dict[str, Any]]] = {}
    try:
        with interrupts.sigterm_raises():
            for n, model in enumerate(models, 1):
                _describe(n, len(models), model)
                try:
                    done = train.fit([part for _, part in model], train.tracker_for(model[0][1].cfg))
                    by_part = {id(part): result for part, result in done}
                    for job, part in model:
                        results.setdefault(job.num, []).append(by_part[id(part)])
                except Exception as exc:  # this model's members failed; the next model goes on
                    log.exception("failed: %s", exc)
                    for job, _ in model:
                        records[job.num] = {"job": job.num, "overrides": list(job.overrides), **sweep.outcome(exc)}
                _finish(model, results, records)
    except BaseException as exc:
        if not interrupts.interrupted(exc):
            raise
        log.error("stopped: %s", type(exc).__name__)
        raise SystemExit(interrupts.EXIT_CODE) from None
    return records


def _describe(n: int, of: int, model: list[tuple[Job, train.Part]]) -> None:
    cells = sorted({f"{p.plan.activation}+{p.plan.loss}" for _, p in model})
    lrs = sorted({float(p.cfg.optimizer.lr) for _, p in model})
    log.info("model %d/%d: %d members (%s; lr %s; seeds %s)", n, of, len(model), ", ".join(cells),
             ", ".join(f"{lr:g}" for lr in lrs), ",".join(sorted({str(p.seed) for _, p in model}, key=int)))


def _finish(model: list[tuple[Job, train.Part]], results: dict[int, list[dict[str, Any]]],
            records: dict[int, dict[str, Any]]) -> None:
    """Write the record of each job whose members have all trained (``seeds=[...]`` may
    put a job's members in several models) or whose model failed."""
    for job, part in model:
        if job.num not in records:
            runs = results.get(job.num, [])
            if len(runs) < len(part.plan.seeds):
                continue
            result = {"runs": runs} if part.plan.batched else runs[0]
            records[job.num] = {"job": job.num, "overrides": list(job.overrides),
                                **sweep.trained({**result, "combination_status": part.plan.cell.status.value})}
        _write(job, records[job.num])


def _write(job: Job, record: dict[str, Any]) -> None:
    sweep.write_record(job.output_dir, record)
