"""SLURM, in one place: whether this process is a cluster job, what the scheduler says about
jobs, cancelling them.

Runs record their job (:func:`job_tags`) so that MLflow joins with ``sacct`` and a run
whose job is gone is known to be stale (``tracking.store.stale_reason``); a SIGTERM inside
a job ends that job, not the sweep (``xentlab.outcome``); the submitting process waits on
and cancels its jobs (``hydra/launcher=slurm``, ``hydra_plugins/xentlab_submitit``).
"""

from __future__ import annotations

import os
import subprocess
from typing import Iterable, Optional

# squeue/sacct states of a job that is queued or running (any other state: it is over)
LIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
        "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
TIMEOUT = 20  # seconds a scheduler command may take


def in_job() -> bool:
    """Inside a SLURM job: a SIGTERM there is the scheduler ending the job (scancel, time limit,
    preemption), not a user stopping a sweep."""
    return bool(os.environ.get("SLURM_JOB_ID"))


def job_id() -> str:
    """This job's id as scancel and squeue take it: ``<array job>_<task>`` for an array task
    (SLURM 22.05's scancel refuses such a task's own job id)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ["SLURM_JOB_ID"]


def job_tags() -> dict[str, str]:
    """The run's SLURM job, array job and array task ids, as MLflow tags (none outside a job)."""
    names = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
             "slurm_array_task_id": "SLURM_ARRAY_TASK_ID"}
    return {tag: os.environ[var] for tag, var in names.items() if os.environ.get(var)}


def _run(cmd: list[str]) -> Optional[subprocess.CompletedProcess]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.SubprocessError):  # no SLURM here, or a scheduler that does not answer
        return None


def queue(job_ids: Iterable[str], array_form: bool = False) -> Optional[dict[str, str]]:
    """squeue's state of each job it still knows (array tasks one by one), keyed by the unique
    job id, or by ``<array job>_<task>`` with ``array_form``; None when squeue cannot answer."""
    ids = ",".join(job_ids)
    out = _run(["squeue", "-h", "-r", "-o", f"{'%i' if array_form else '%A'}|%T", "-j", ids])
    if out is None or (out.returncode != 0 and "Invalid job id" not in out.stderr):
        return None
    return dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)


def job_state(job_id: str) -> Optional[str]:
    """The scheduler's state of a job: squeue's while it is queued or running (one of
    :data:`LIVE`), else how it ended (sacct's state, or 'not in squeue' without accounting);
    None when no scheduler answers."""
    states = queue([job_id])
    if states is None:
        return None
    state = states.get(job_id, "")
    if state in LIVE:
        return state
    out = _run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id])
    found = out.stdout.split("\n")[0].strip() if out is not None and out.returncode == 0 else ""
    return found or state or "not in squeue"


def cancel(job_ids: Iterable[str]) -> None:
    """scancel the jobs (queued ones never start; running ones get SIGTERM)."""
    ids = list(job_ids)
    if ids:
        _run(["scancel", *ids])
