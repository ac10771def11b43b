"""Sweeps (Hydra multirun): a parent MLflow run per sweep, a record per job, a summary.

Each job writes what became of it (``xentlab.outcome``: ran, skipped with the reason,
failed with the error) to ``xentlab_job.json`` in its own output folder, so the records
survive any launcher (in-process, joblib workers, submitit). :class:`SweepCallback` creates the store and the
parent run before the jobs start and, at the end, prints the summary and attaches it to
the parent run.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from xentlab import clock

log = logging.getLogger(__name__)
RECORD = "xentlab_job.json"


def write_record(output_dir: str | Path, record: dict[str, Any]) -> None:
    path = Path(output_dir) / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str))


def read_records(sweep_dir: str | Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(Path(sweep_dir).glob(f"**/{RECORD}")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            records.append({"status": "failed", "reason": f"unreadable job record {path}: {exc}", "overrides": []})
    return sorted(records, key=lambda r: r.get("job", 0))


def summarize(records: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """(machine-readable summary, human-readable text) of a sweep's job records."""
    counts = {s: sum(r["status"] == s for r in records) for s in ("ran", "skipped", "failed")}
    lines = [f"xentlab sweep: {counts['ran']} ran, {counts['skipped']} skipped, {counts['failed']} failed"]
    done = sum(bool(r.get("already_done")) for r in records)
    if done:
        lines.append(f"({done} of those ran earlier: resume=auto found them FINISHED and trained nothing)")
    shared = set.intersection(*(set(r.get("overrides", [])) for r in records)) if len(records) > 1 else set()
    for status in ("skipped", "failed"):
        chosen = [r for r in records if r["status"] == status]
        if chosen:
            lines.append(f"{status}:")
            for r in chosen:
                cell = " ".join(o for o in r.get("overrides", []) if o not in shared) or "(defaults)"
                lines.append(f"  {cell}: {r.get('reason', '').split('. Valid choices')[0]}")
    return {"counts": counts, "jobs": records}, "\n".join(lines)


class SweepCallback(Callback):
    """Hydra callback (``hydra.callbacks.sweep`` in conf/config.yaml)."""

    def __init__(self) -> None:
        self.parent: Optional[str] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        n_jobs = config.hydra.launcher.get("n_jobs") if "launcher" in config.hydra else None
        if n_jobs is not None:  # parallel jobs on one machine: one share of the cores each
            share = max(1, (os.cpu_count() or 1) // (n_jobs if n_jobs > 0 else (os.cpu_count() or 1)))
            os.environ.setdefault("OMP_NUM_THREADS", str(share))
        for stale in Path(config.hydra.sweep.dir).glob(f"**/{RECORD}"):
            stale.unlink()
        if config.logger.name != "mlflow":
            return
        from xentlab import tracking

        overrides = " ".join(config.hydra.overrides.task)
        try:
            self.parent = tracking.start_sweep(
                tracking_uri=config.logger.tracking_uri, experiment=config.logger.experiment,
                name=f"sweep {Path(config.hydra.sweep.dir).name}", tags={"sweep_overrides": overrides[:5000]},
                resume=config.get("resume") == "auto", stale_after=config.logger.stale_after,
            )
        except tracking.TrackingUnavailable as exc:  # no job could log anywhere: stop before the first
            print(f"xentlab: error: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)
        atexit.register(tracking.end_sweep_if_running, self.parent, "KILLED")
        clock.phase("store and sweep parent run ready")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summary, text = summarize(read_records(config.hydra.sweep.dir))
        print(text, flush=True)
        if self.parent is not None:
            from xentlab import tracking

            summary["parent_run_id"] = self.parent
            tracking.end_sweep(self.parent, status="FINISHED", summary=summary, report_md=f"```\n{text}\n```\n")
            print(f"parent run {self.parent} (experiment {os.environ.get(tracking.ENV_EXPERIMENT)}, "
                  f"store {os.environ.get(tracking.ENV_URI)})", flush=True)
