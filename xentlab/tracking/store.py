"""The MLflow store, without Lightning: where it is, experiments, runs, sweep parents, stale runs.

Scripts and tests reach MLflow through this module (``xentlab.tracking`` re-exports it);
the Lightning side (``tracking.lightning``) and a training run's life (``tracking.lifecycle``)
build on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Optional

from xentlab import cluster
from xentlab.config import BEFORE
from xentlab.errors import ConfigError, TrackingUnavailable

log = logging.getLogger(__name__)


def set_tags(client, run_id: str, tags: Mapping[str, Any]) -> None:
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def process_tags() -> dict[str, str]:
    """Who runs a run: a RUNNING run whose process (or SLURM job) is gone can then be found and
    ended; the SLURM ids also join a run with ``sacct``."""
    return {"host": socket.gethostname(), "pid": str(os.getpid()), "heartbeat": f"{time.time():.0f}",
            **cluster.job_tags()}


def heartbeat(client, run_ids: list[str], synchronous: bool = True) -> None:
    """Refresh the runs' ``heartbeat`` tag: they are alive (:func:`stale_reason`)."""
    from mlflow.entities import RunTag

    now = RunTag("heartbeat", f"{time.time():.0f}")
    for run_id in run_ids:
        client.log_batch(run_id, tags=[now], synchronous=synchronous)


def parent_heartbeat() -> Callable[[], None]:
    """What refreshes the sweep parent's heartbeat (nothing outside a tracked sweep): a process
    waiting on its queued cluster jobs keeps its sweep from looking stale."""
    parent = os.environ.get(ENV_PARENT)
    if not parent:
        return lambda: None
    store = client()
    return lambda: heartbeat(store, [parent])


def create_run(client, experiment: str, name: str, tags: Mapping[str, Any]) -> str:
    """A new run in ``experiment`` (created if needed), tagged with the code's git commit and its process."""
    all_tags = {"mlflow.source.git.commit": git_commit(), **process_tags(), **tags}
    return client.create_run(experiment_id(client, experiment), run_name=name,
                             tags={k: str(v) for k, v in all_tags.items()}).info.run_id


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def experiment_id(client, name: str) -> str:
    """The id of experiment ``name``, created (or restored) if needed."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        from mlflow.exceptions import MlflowException

        try:  # "custom model development": the MLflow UI then opens the experiment on its runs
            return client.create_experiment(name, tags={"mlflow.experimentKind": "custom_model_development"})
        except MlflowException:  # created meanwhile by a parallel job
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


# A sweep's parent process hands its store, experiment and parent run to the jobs through
# the environment, which every launcher (in-process, joblib workers, submitit) passes on.
ENV_URI, ENV_EXPERIMENT, ENV_PARENT = "XENTLAB_TRACKING_URI", "XENTLAB_EXPERIMENT", "XENTLAB_PARENT_RUN_ID"

# Unbuffered, MLflow's async queue blocks up to 1 s on an empty queue before it sees a flush,
# twice at the end of every run (our flush, then set_terminated's): most of a short sweep
# job's fixed cost (scripts/bench.py --mode sweep). Buffered, it waits on the stop event
# instead and wakes at once (whole seconds only; points are merged into fewer writes).
os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "1")


def resolve_uri(tracking_uri: Optional[str]) -> str:
    """The store a run will use: the config's, else MLflow's default (MLFLOW_TRACKING_URI or
    ``sqlite:///mlflow.db`` in the working directory), made absolute for SQLite."""
    import mlflow

    uri = tracking_uri or os.environ.get(ENV_URI) or mlflow.get_tracking_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def check_store(tracking_uri: Optional[str], timeout: float = 5.0) -> str:
    """Fail fast, naming the URI, when the store is unreachable (a server that does not answer
    within ``timeout`` seconds; MLflow's own client would retry for minutes) or not writable
    (a SQLite file or ``mlruns`` folder on a read-only path). Returns the resolved URI."""
    import tempfile
    import urllib.error
    import urllib.request
    from urllib.parse import urlparse

    uri = resolve_uri(tracking_uri)
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
        except urllib.error.HTTPError:
            pass  # it answered: reachable (a proxy or an older server without /health)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingUnavailable(
                f"cannot reach the MLflow tracking server at {uri}: {reason}. Start it (mlflow server ...) or set "
                f"logger.tracking_uri to a reachable store (or logger=none to track nothing)") from exc
        return uri
    if scheme == "sqlite":
        target = Path(uri[len("sqlite:///"):])
    elif scheme in ("", "file"):
        target = Path(urlparse(uri).path if scheme == "file" else uri)
    else:
        return uri  # databases and other stores: MLflow reports their errors itself
    problem = None
    try:
        if target.is_file():
            with open(target, "r+b"):
                pass
        else:
            folder = target.parent if scheme == "sqlite" else target
            while not folder.exists():
                folder = folder.parent
            with tempfile.TemporaryFile(dir=folder):
                pass
    except OSError as exc:
        problem = exc.strerror or str(exc)
    if problem:
        raise TrackingUnavailable(f"the MLflow tracking store {uri} is not writable: {problem}. Set "
                                  f"logger.tracking_uri (or MLFLOW_TRACKING_URI) to a writable place")
    _open(uri, target if scheme == "sqlite" else None)
    return uri


def _open(uri: str, database: Optional[Path]) -> None:
    """Create or migrate the store once. MLflow's schema migration races when several processes
    open a new SQLite file together (``duplicate column name: step``), so it runs under a lock
    file beside the database; a store MLflow cannot open is named in one line."""
    from filelock import FileLock
    from mlflow import MlflowClient

    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(f"{database}.lock", timeout=300) if database is not None else nullcontext():
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise TrackingUnavailable(f"MLflow cannot open the tracking store {uri}: {first}") from exc


def client(tracking_uri: Optional[str] = None):
    """An MlflowClient on a store checked and created as :func:`check_store` does (for scripts)."""
    from mlflow import MlflowClient

    return MlflowClient(check_store(tracking_uri))


def experiment_ids(client, name: Optional[str] = None) -> list[str]:
    """The named experiment's id (ConfigError listing the others if there is none), or all ids."""
    experiments = client.search_experiments()
    if name is None:
        return [e.experiment_id for e in experiments]
    for e in experiments:
        if e.name == name:
            return [e.experiment_id]
    raise ConfigError(f"no experiment {name!r} in this store; experiments: "
                      f"{', '.join(e.name for e in experiments) or 'none'}")


def checkpoint_of(run_id: str, tracking_uri: Optional[str]) -> Optional[str]:
    """The checkpoint path a run recorded (its ``checkpoint`` tag)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = resolve_uri(tracking_uri)
    try:
        run = MlflowClient(uri).get_run(run_id)
    except MlflowException as exc:
        raise ConfigError(f"resume={run_id}: no such MLflow run in {uri}") from exc
    return run.data.tags.get("checkpoint")


def start_sweep(*, tracking_uri: Optional[str], experiment: str, name: str, tags: Mapping[str, Any],
                resume: bool = False, stale_after: float = 600.0) -> str:
    """Create the store (once, here, before any job), the experiment and the sweep's parent run;
    publish them to the jobs through the environment. Stale runs of the experiment are ended
    KILLED first. With ``resume`` the parent of the earlier sweep with the same overrides (``resume=``
    aside) is reopened, so a continued sweep stays one sweep. Returns the parent run id."""
    from mlflow import MlflowClient

    uri = check_store(tracking_uri)
    client = MlflowClient(uri)
    exp_id = experiment_id(client, experiment)
    end_stale(client, stale_runs(client, [exp_id], stale_after), by="the start of a sweep")
    outer = {"mlflow.parentRunId": os.environ[ENV_PARENT]} if os.environ.get(ENV_PARENT) else {}  # e.g. claims.py
    parent = _earlier_sweep(client, exp_id, str(tags.get("sweep_overrides", ""))) if resume else None
    if parent is None:
        parent = create_run(client, experiment, name, {"sweep": "parent", **tags, **outer})
    else:
        reopen(client, parent)
        log.info("continuing sweep: parent run %s", parent)
    os.environ.update({ENV_URI: uri, ENV_EXPERIMENT: experiment, ENV_PARENT: parent})
    log.info("sweep parent run %s in experiment %r at %s", parent, experiment, uri)
    return parent


def _sweep_key(overrides: str) -> list[str]:
    return sorted(o for o in overrides.split() if not o.startswith("resume="))


def _earlier_sweep(client, exp_id: str, overrides: str) -> Optional[str]:
    """The newest ended parent run of a sweep with the same overrides (``resume=`` aside)."""
    for run in search_all(client, [exp_id], "tags.sweep = 'parent' and attributes.status != 'RUNNING'"):
        if _sweep_key(run.data.tags.get("sweep_overrides", "")) == _sweep_key(overrides):
            return run.info.run_id
    return None


def reopen(client, run_id: str, parent: Optional[str] = None):
    """Mark an ended run RUNNING again, in this process, counting how often that happened;
    returns the run as it was."""
    before = client.get_run(run_id)
    client.update_run(run_id, status="RUNNING")
    if "error" in before.data.tags:
        client.delete_tag(run_id, "error")
    set_tags(client, run_id, {"resumed": int(before.data.tags.get("resumed", 0)) + 1,
                              "resumed_after": before.info.status, **process_tags(),
                              **({"mlflow.parentRunId": parent} if parent else {})})
    return before


def search_all(client, experiment_ids: list[str], filter_string: str = "") -> list:
    """Every run that matches, newest first, across MLflow's result pages."""
    found, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token,
                                  order_by=["attributes.start_time DESC"])
        found += page
        token = page.token
        if not token:
            return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a zombie has died; only its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stale_reason(run, stale_after: float, now: Optional[float] = None) -> Optional[str]:
    """Why a RUNNING run cannot be alive any more, or None. From a SLURM job of the cluster this
    machine talks to, the scheduler answers: its job has ended. On this host: its process is
    gone. On another host (or with no host recorded, or no scheduler to ask): no heartbeat for
    ``stale_after`` seconds (a run from before heartbeats counts from its start)."""
    if run.info.status != "RUNNING":
        return None
    tags = run.data.tags
    here = tags.get("slurm_job_id") and tags.get("slurm_cluster") == cluster.name()
    state = cluster.job_state(tags["slurm_job_id"]) if here else None
    if state is not None:
        return None if state in cluster.LIVE else f"its SLURM job {tags['slurm_job_id']} has ended ({state})"
    if tags.get("host") == socket.gethostname() and tags.get("pid", "").isdigit():
        return None if _alive(int(tags["pid"])) else f"its process {tags['pid']} on {tags['host']} is gone"
    last = float(tags["heartbeat"]) if tags.get("heartbeat") else run.info.start_time / 1000
    silent = (time.time() if now is None else now) - last
    return f"no heartbeat for {silent:.0f} s (stale after {stale_after:g} s)" if silent > stale_after else None


def stale_runs(client, experiment_ids: list[str], stale_after: float) -> list[tuple[Any, str]]:
    """(run, reason) for every RUNNING run of these experiments that cannot be alive."""
    running = search_all(client, experiment_ids, "attributes.status = 'RUNNING'")
    return [(run, why) for run in running if (why := stale_reason(run, stale_after))]


def end_stale(client, found: list[tuple[Any, str]], by: str) -> None:
    """End stale runs KILLED, with the reason in their ``error`` tag."""
    for run, why in found:
        set_tags(client, run.info.run_id, {"error": f"stale: {why}; ended KILLED by {by}"})
        client.set_terminated(run.info.run_id, "KILLED")
        log.warning("ended stale MLflow run %s (%s) KILLED: %s", run.info.run_id, run.info.run_name, why)


@dataclass(frozen=True)
class Previous:
    """An earlier run of the same configuration, as ``resume=auto`` found it."""

    run_id: str
    status: str
    checkpoint: Optional[str]  # its last checkpoint, if the file is still there
    metrics: dict[str, float]


def experiment_runs(tracking_uri: Optional[str], experiment: str) -> list:
    """Every run of ``experiment``, newest first (none if it does not exist yet)."""
    from mlflow import MlflowClient

    client = MlflowClient(resolve_uri(tracking_uri))
    exp = client.get_experiment_by_name(os.environ.get(ENV_EXPERIMENT, experiment))
    return search_all(client, [exp.experiment_id]) if exp is not None else []


IDENTITY_TAG = "identity"


def identity_key(identity: Mapping[str, Any]) -> str:
    """A digest of a run's identity (``checkpoints.identity``), tagged when the run is created:
    params are logged after that, so a run killed in between is still found by ``resume=auto``."""
    want = {k: str(v)[:6000] for k, v in flatten(identity).items()}
    return hashlib.sha1(json.dumps(want, sort_keys=True).encode()).hexdigest()


def previous_run(tracking_uri: Optional[str], experiment: str, identity: Mapping[str, Any],
                 stale_after: float, runs: Optional[list] = None) -> Optional[Previous]:
    """``resume=auto``: the run of ``experiment`` whose params equal ``identity`` (nested, as in
    the config), or whose ``identity`` tag is its digest. A FINISHED one wins; else the newest
    KILLED or FAILED one that left a checkpoint, else the newest without one (it trains again
    from the start in that run); a stale RUNNING one is ended KILLED first. A RUNNING one that
    may be alive is refused: another process is training this configuration now. ``runs``: the
    experiment's runs (:func:`experiment_runs`), fetched once by a caller that looks up many
    configurations."""
    from mlflow import MlflowClient

    client = MlflowClient(resolve_uri(tracking_uri))
    want = {k: str(v)[:6000] for k, v in flatten(identity).items()}
    key = identity_key(identity)
    mine = [r for r in (experiment_runs(tracking_uri, experiment) if runs is None else runs)
            if r.data.tags.get(IDENTITY_TAG) == key
            or all(r.data.params.get(k, str(BEFORE[k]) if k in BEFORE else None) == v for k, v in want.items())]
    for run in mine:
        if run.info.status == "FINISHED":
            return Previous(run.info.run_id, "FINISHED", None, dict(run.data.metrics))
    for run in mine:
        if run.info.status == "RUNNING":
            why = stale_reason(run, stale_after)
            if why is None:
                tags = run.data.tags
                raise ConfigError(f"resume=auto: MLflow run {run.info.run_id} of this configuration is still "
                                  f"RUNNING (process {tags.get('pid', '?')} on {tags.get('host', '?')}); let it "
                                  f"finish, or end it with scripts/stale.py --end if it is not running any more")
            end_stale(client, [(run, why)], by="resume=auto")
    ended = [r for r in mine if r.info.status in ("RUNNING", "KILLED", "FAILED")]
    for run in ended:
        ckpt = run.data.tags.get("checkpoint")
        if ckpt and Path(ckpt).is_file():
            return Previous(run.info.run_id, client.get_run(run.info.run_id).info.status, ckpt, {})
    if ended:
        return Previous(ended[0].info.run_id, client.get_run(ended[0].info.run_id).info.status, None, {})
    return None


def end_sweep(parent: str, *, status: str, summary: Mapping[str, Any], report_md: str) -> None:
    """Attach the sweep summary to the parent run and give it its final status. Runs of the sweep
    that a killed job left RUNNING (SIGKILL, out of memory) are ended KILLED first, where they are
    known to be stale (:func:`stale_reason`)."""
    from mlflow import MlflowClient

    client = MlflowClient(os.environ[ENV_URI])
    exp_id = client.get_run(parent).info.experiment_id
    running = search_all(client, [exp_id], f"attributes.status = 'RUNNING' and tags.mlflow.parentRunId = '{parent}'")
    end_stale(client, [(run, why) for run in running if (why := stale_reason(run, float("inf")))],
              by="the end of its sweep")
    set_tags(client, parent, {f"sweep_{k}": v for k, v in summary.get("counts", {}).items()})
    client.log_text(parent, json.dumps(summary, indent=2), "sweep_summary.json")
    client.log_text(parent, report_md, "sweep_summary.md")
    client.set_terminated(parent, status)


def end_sweep_if_running(parent: str, status: str) -> None:
    """For an interrupted sweep (atexit): never leave the parent RUNNING, nor wait on an async
    queue that its jobs (run in this process) left stuck (:func:`terminate`)."""
    from mlflow import MlflowClient

    try:
        uri = os.environ[ENV_URI]
        client = MlflowClient(uri)
        if client.get_run(parent).info.status == "RUNNING":
            terminate(client, uri, parent, status)
    except Exception as exc:  # at exit, report and move on
        log.error("could not end sweep parent run %s: %s", parent, exc)


def log_params(client, run_id: str, params: Mapping[str, Any], present: Collection[str] = ()) -> None:
    """Nested params flattened to dotted keys, in the batches MLflow accepts; those ``present``
    (dotted, already logged: params are immutable) are left out."""
    from mlflow.entities import Param

    flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items() if k not in present]
    for i in range(0, len(flat), 100):
        client.log_batch(run_id, params=flat[i:i + 100])


def log_values(client, run_id: str, metrics: Mapping[str, float], tags: Mapping[str, Any], step: int = 0) -> None:
    """Metrics (at ``step``) and tags, in the batches MLflow accepts."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    ms = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    ts = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
    for i in range(0, max(len(ms), len(ts)), 200):
        client.log_batch(run_id, metrics=ms[i:i + 200], tags=ts[i:i + 200])


def newest_sweep(client, under: str) -> Optional[str]:
    """The newest sweep parent run whose own parent is run ``under`` (e.g. a claims report's)."""
    exp = client.get_run(under).info.experiment_id
    found = search_all(client, [exp], f"tags.sweep = 'parent' and tags.mlflow.parentRunId = '{under}'")
    return found[0].info.run_id if found else None


def sweep_seconds(client, experiment: str) -> Optional[float]:
    """How long the experiment's newest finished sweep took, from its parent run's start to its end
    (the Python start-up before the parent run opens is not in it); None without one."""
    found = search_all(client, experiment_ids(client, experiment),
                       "tags.sweep = 'parent' and attributes.status = 'FINISHED'")
    info = found[0].info if found else None
    return (info.end_time - info.start_time) / 1000 if info and info.end_time else None


FLUSH_TIMEOUT = 5.0  # seconds a stopping process waits for MLflow's async queue
_stuck: set[str] = set()  # stores whose async queue did not drain in time: never waited on again


def flush(uri: str, timeout: Optional[float] = None) -> bool:
    """Wait until MLflow's async queue for this store has written everything. With ``timeout``,
    for at most that long, and False if it did not drain: it may never (a lock left held, a store
    that does not answer), so the wait goes on in a daemon thread and the store is not waited on
    again (:func:`terminate`). Every MlflowClient of a store shares its queue."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    if uri in _stuck:
        return False
    if timeout is None:
        mlflow.flush_async_logging()
        return True
    if uri not in _stuck:
        waiter = threading.Thread(target=mlflow.flush_async_logging, name="xentlab-flush", daemon=True)
        waiter.start()
        waiter.join(timeout)
        if waiter.is_alive():
            _stuck.add(uri)
    return uri not in _stuck


def stuck() -> bool:
    """Whether a store's async queue was found stuck: the process must not wait on it at exit."""
    return bool(_stuck)


def terminate(client, uri: str, run_id: str, status: str) -> None:
    """Give the run its final status. ``set_terminated`` first waits on the store's async queue;
    when :func:`flush` found that queue stuck, the status goes to the store directly."""
    if uri not in _stuck:
        client.set_terminated(run_id, status)
        return
    from mlflow.entities import RunStatus

    client._tracking_client.store.update_run_info(  # MLflow has no public call that skips the queue
        run_id, run_status=RunStatus.from_string(status), end_time=int(time.time() * 1000), run_name=None)


class WriteTimer:
    """Adds up the wall time spent in MLflow's ``log_batch`` (every metric, param and tag write)
    until :meth:`close`; the benchmark reports it as the share of an epoch spent logging."""

    def __init__(self):
        from mlflow import MlflowClient

        self.cls, self.original, self.seconds = MlflowClient, MlflowClient.log_batch, 0.0
        timer = self

        def timed(client, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return timer.original(client, *args, **kwargs)
            finally:
                timer.seconds += time.perf_counter() - t0

        self.cls.log_batch = timed

    def close(self) -> float:
        self.cls.log_batch = self.original
        return self.seconds
