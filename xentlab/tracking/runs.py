"""Finished runs read back for the reports, and what the reports write to MLflow.

The reports (``xentlab.report``) reach MLflow only through these functions and
``tracking.store``; what they compute from the runs lives in ``xentlab.analysis``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Optional

from xentlab.tracking.store import experiment_ids, search_all

if TYPE_CHECKING:
    from xentlab.analysis import RunInfo


def load_runs(client, *, experiment: Optional[str] = None, parent: Optional[str] = None,
              filter_string: str = "") -> list[RunInfo]:
    """Finished training runs (not sweep parents) of an experiment and/or one sweep, with the
    validation curves of the ranking metric and NLL. An unknown experiment is a ConfigError
    that lists the store's experiments."""
    from xentlab import analysis

    if parent and not experiment:
        exp_ids = [client.get_run(parent).info.experiment_id]
    else:
        exp_ids = experiment_ids(client, experiment)
    clauses = ["attributes.status = 'FINISHED'"]
    if parent:
        clauses.append(f"tags.mlflow.parentRunId = '{parent}'")
    if filter_string:
        clauses.append(filter_string)
    runs = []
    for r in search_all(client, exp_ids, " and ".join(clauses)):
        t = r.data.tags
        if t.get("sweep") == "parent" or "task" not in t:
            continue
        kind = t.get("task_kind", "multiclass")
        info = analysis.RunInfo(r.info.run_id, t["task"], kind, t.get("activation", "?"), t.get("loss", "?"),
                                t.get("seed", "?"), t.get("combination_status", "?"), dict(r.data.metrics),
                                params=dict(r.data.params), started=r.info.start_time or 0,
                                members=int(t.get("batch_members", 1)), experiment=r.info.experiment_id,
                                tags=dict(t))
        for key in (f"val/{analysis.rank_by(kind)}", "val/nll"):
            if key in info.metrics:
                info.curves[key] = curve(client.get_metric_history(r.info.run_id, key))
        runs.append(info)
    return runs


def curve(history: Iterable) -> list[tuple[int, float]]:
    """A metric's (step, value) points, the latest value of a step winning: a resumed run trains
    its interrupted epoch again (a run without a checkpoint, every epoch), logging its steps anew."""
    latest = {m.step: m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))}
    return sorted(latest.items())


def parent_of(client, run_id: str) -> Optional[str]:
    """The run's parent run (its sweep's, for a sweep job), if it has one."""
    return client.get_run(run_id).data.tags.get("mlflow.parentRunId")


def attach(client, run_id: str, files: Iterable[Path], folder: str) -> None:
    """Log ``files`` as artifacts of the run, under ``folder``."""
    for f in files:
        client.log_artifact(run_id, str(f), folder)


def end_run(client, run_id: str, status: str, texts: Mapping[str, str]) -> None:
    """Attach ``texts`` (artifact name -> content) to the run and give it its final status."""
    for name, text in texts.items():
        client.log_text(run_id, text, name)
    client.set_terminated(run_id, status)
