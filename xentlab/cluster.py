"""SLURM, in one place: whether this process is a cluster job, what the scheduler says about
jobs, submitting jobs through submitit and waiting for them.

Runs record their job (:func:`job_tags`) so that MLflow joins with ``sacct`` and a run
whose job is gone is known to be stale (``tracking.store.stale_reason``); a SIGTERM inside
a job ends that job, not the sweep (``xentlab.outcome``). The submitting process
(``hydra/launcher=slurm``, ``hydra_plugins/xentlab_submitit``; the batched launcher's
models with ``hydra.launcher.executor=slurm``, :func:`train_models`) waits on its jobs with
:func:`wait`: a job that left no result is a failed job, and stopping the process cancels them.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from xentlab.errors import ClusterJobFailed, ConfigError

log = logging.getLogger(__name__)

# squeue/sacct states of a job that is queued or running (any other state: it is over)
LIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
        "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
TIMEOUT = 20  # seconds a scheduler command may take
POLL_S = 2.0  # how often the submitting process looks for results
QUEUE_POLL_S = 10.0  # how often it asks squeue whether a job without a result still lives
GRACE_S = 15.0  # how long a result may take to appear after its job left the queue (a slow shared disk)


def in_job() -> bool:
    """A job that a sweep submitted to SLURM (through submitit): a SIGTERM there is the scheduler
    ending the job (scancel, time limit, preemption), not a user stopping a sweep. A whole sweep
    run inside one ``sbatch`` script is not one: a SIGTERM stops it, as anywhere else."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and bool(os.environ.get("SLURM_JOB_ID"))


def job_id() -> str:
    """This job's id as scancel and squeue take it: ``<array job>_<task>`` for an array task
    (SLURM 22.05's scancel refuses such a task's own job id)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ["SLURM_JOB_ID"]


def job_tags() -> dict[str, str]:
    """The run's SLURM job, array job and array task ids, as MLflow tags (none outside a job)."""
    names = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
             "slurm_array_task_id": "SLURM_ARRAY_TASK_ID", "slurm_cluster": "SLURM_CLUSTER_NAME"}
    return {tag: os.environ[var] for tag, var in names.items() if os.environ.get(var)}


def _run(cmd: list[str]) -> Optional[subprocess.CompletedProcess]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.SubprocessError):  # no SLURM here, or a scheduler that does not answer
        return None


@functools.lru_cache(maxsize=1)
def name() -> Optional[str]:
    """The name of the cluster this machine's SLURM commands talk to (None: none answers): a job id
    means something only there."""
    out = _run(["scontrol", "show", "config"])
    found = [line.split("=", 1)[1].strip() for line in (out.stdout.splitlines() if out and out.returncode == 0 else [])
             if line.split("=", 1)[0].strip() == "ClusterName"]
    return found[0] if found else None


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


def trains_to_the_limit() -> None:
    """In a submitit job: submitit's warning signal before the time limit (``signal_delay_s``) would
    raise in the middle of an epoch and end the run FAILED; ignored, the job trains on, and SLURM's
    SIGTERM at the limit ends it KILLED, as a scancel does (``xentlab.outcome``)."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # submitit's SlurmJobEnvironment.USR_SIG


def executor(params: Mapping[str, Any]):
    """A submitit SLURM executor from hydra-submitit-launcher's ``SlurmQueueConf`` fields (resolved)."""
    import submitit
    from omegaconf import OmegaConf

    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    ex = submitit.AutoExecutor(cluster="slurm", folder=params["submitit_folder"],
                               slurm_max_num_timeout=params.get("max_num_timeout", 0))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    ex.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                            if k not in ("submitit_folder", "max_num_timeout")})
    return ex


def submit(ex, fn: Callable, *args: Sequence[Any]) -> list:
    """``ex.map_array``; sbatch refusing the jobs (resources the cluster lacks) is a ConfigError."""
    from submitit.core.utils import FailedJobError

    try:
        return ex.map_array(fn, *args)
    except FailedJobError as exc:
        raise ConfigError(f"SLURM refused the sweep's jobs: {str(exc).strip().splitlines()[-1]}") from None


def wait(jobs: Sequence[Any], stale_after: float, heartbeat: Callable[[], None]) -> list[Any]:
    """Each job's result as it comes; in place of a job that returned none, a :class:`ClusterJobFailed`
    (not raised): "no result: killed?" when the job left the queue without one (SIGKILL, out of
    memory, a lost node; also without accounting, where submitit alone would wait for ever).
    Meanwhile ``heartbeat`` (the sweep's parent run's, ``tracking.parent_heartbeat``) is called
    well within ``stale_after`` seconds; stopping this process (SIGTERM under
    ``interrupts.sigterm_raises``, Ctrl-C) cancels every job not yet done."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    results: dict[int, Any] = {}
    gone_since: dict[int, float] = {}
    heartbeat_every = min(60.0, stale_after / 5)
    next_queue = next_beat = time.monotonic()

    def lost(job) -> ClusterJobFailed:
        error = ClusterJobFailed(f"no result: killed? (SLURM job {job.job_id}: {job_state(job.job_id)}; "
                                 f"log {job.paths.stderr})")
        log.error("%s", error)
        return error

    def result(job) -> Any:
        try:
            return job.results()[0]
        except UncompletedJobError:
            return lost(job)
        except FailedJobError as exc:  # raised outside xentlab's own policy (e.g. the job could not start)
            last = [line for line in str(exc).splitlines() if line.strip()][-1:] or ["?"]
            return ClusterJobFailed(f"SLURM job {job.job_id} failed: {last[0]}")

    try:
        while len(results) < len(jobs):
            for i, job in enumerate(jobs):
                if i not in results and job.paths.result_pickle.exists():
                    results[i] = result(job)
            now = time.monotonic()
            if now >= next_queue and len(results) < len(jobs):
                states = queue({job.job_id.split("_")[0] for job in jobs}, array_form=True)
                for i, job in enumerate(jobs):
                    if i in results or states is None or states.get(job.job_id) in LIVE:
                        continue
                    if now - gone_since.setdefault(i, now) >= GRACE_S and not job.paths.result_pickle.exists():
                        results[i] = lost(job)
                next_queue = now + QUEUE_POLL_S
            if now >= next_beat:
                heartbeat()
                next_beat = now + heartbeat_every
            if len(results) < len(jobs):
                time.sleep(POLL_S)
    except BaseException:
        left = [job for i, job in enumerate(jobs) if i not in results]
        log.error("stopped: cancelling %d SLURM job(s)", len(left))
        cancel(job.job_id for job in left)
        raise
    return [results[i] for i in range(len(jobs))]


def train_models(models: Sequence[tuple[Sequence[Any], Any]], params: Mapping[str, Any],
                 train_one: Callable[[list, Any], tuple[dict[str, Any], list[tuple[int, Any]]]],
                 heartbeat: Callable[[], None]) -> list[Callable[[], list]]:
    """The batched launcher's models (lists of ``train.MemberRun``, each with the checkpoint it goes
    on from or None) trained as one SLURM job each, at once, by ``train_one`` (a job's body: its
    failed record and results by member position; :func:`wait` calls ``heartbeat``); returns,
    per model, what ``train.train`` would have returned, or raises the job's error."""
    ex = executor(params)
    jobs = submit(ex, train_one, [list(m) for m, _ in models], [resume for _, resume in models])
    log.info("batched launcher: %d model(s) submitted as SLURM array job %s", len(jobs),
             jobs[0].job_id.split("_")[0] if jobs else "-")
    outcomes = wait(jobs, float(models[0][0][0].cfg.logger.stale_after), heartbeat)

    def getter(model: Sequence[Any], got: Any) -> Callable[[], list]:
        def get() -> list:
            if isinstance(got, BaseException):
                raise got
            failed, done = got
            if failed:
                raise ClusterJobFailed(failed["reason"])
            return [(model[i], result) for i, result in done]
        return get

    return [getter(m, got) for (m, _), got in zip(models, outcomes)]
