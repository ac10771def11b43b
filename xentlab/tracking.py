"""The one module that talks to MLflow (besides the entry point).

:func:`tracked_run` owns a run's life: it creates the run with its tags, params and the
resolved config, hands Lightning a logger bound to it, and always ends it with a final
status: FINISHED, FAILED (with the error as a tag) or KILLED (Ctrl-C, SIGTERM). A run
is never left RUNNING by a crash of ours.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from pytorch_lightning import Callback
from pytorch_lightning.loggers import Logger, MLFlowLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from xentlab.config import ConfigError

log = logging.getLogger(__name__)


class EpochStepMLFlowLogger(MLFlowLogger):
    """MLFlowLogger whose per-epoch metrics use the epoch as their step.

    Lightning logs everything against the global step and names on-epoch aggregates
    ``<key>_epoch``; here ``train/loss_step`` keeps the global step (a curve inside each
    epoch) and every other metric is logged under its plain name with step = epoch, so
    runs with different batch sizes line up in the MLflow UI. The run's final status is
    set by :func:`tracked_run`, not by Lightning.
    """

    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        per_step = {k: v for k, v in metrics.items() if k.endswith("_step")}
        per_epoch = {k.removesuffix("_epoch"): v for k, v in metrics.items() if k not in per_step}
        if per_step:
            super().log_metrics(per_step, step)
        if per_epoch:
            super().log_metrics(per_epoch, int(epoch) if epoch is not None else step)

    def finalize(self, status: str = "success") -> None:
        pass


class SeedRoutingLogger(Logger):
    """One Lightning logger for a seed-batched model: ``seed<k>/<key>`` goes to seed k's run."""

    def __init__(self, loggers: Mapping[int, EpochStepMLFlowLogger]):
        super().__init__()
        self.loggers = dict(loggers)

    @property
    def name(self) -> str:
        return "xentlab-seeds"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # each run got its own config when it was created

    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        per_seed: dict[int, dict[str, float]] = {}
        for key, value in metrics.items():
            head, _, rest = key.partition("/")
            if head.startswith("seed") and head[4:].isdigit():
                per_seed.setdefault(int(head[4:]), {})[rest] = value
        for seed, values in per_seed.items():
            if "epoch" in metrics:
                values["epoch"] = metrics["epoch"]
            self.loggers[seed].log_metrics(values, step)


class Terminated(BaseException):
    """SIGTERM outside Lightning's loops: unwind like Ctrl-C so the run is marked KILLED."""


class _ExceptionRecorder(Callback):
    """Lightning turns Ctrl-C into ``sys.exit(1)``; remember what really happened."""

    def __init__(self) -> None:
        self.exception: Optional[BaseException] = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.exception = exception


class Run:
    def __init__(self, client, run_id: str, logger: EpochStepMLFlowLogger):
        self.client, self.run_id, self.logger = client, run_id, logger
        self.recorder = _ExceptionRecorder()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        set_tags(self.client, self.run_id, tags)


def set_tags(client, run_id: str, tags: Mapping[str, Any]) -> None:
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def _create_run(client, experiment: str, name: str, tags: Mapping[str, Any]) -> str:
    """A new run in ``experiment`` (created if needed), tagged with the code's git commit."""
    all_tags = {"mlflow.source.git.commit": git_commit(), **tags}
    return client.create_run(_experiment_id(client, experiment), run_name=name,
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


def _status_of(exc: BaseException, recorded: Optional[BaseException]) -> str:
    cause = recorded if isinstance(exc, SystemExit) and recorded is not None else exc
    return "KILLED" if isinstance(cause, (KeyboardInterrupt, SIGTERMException, Terminated)) else "FAILED"


def _experiment_id(client, name: str) -> str:
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


def resolve_uri(tracking_uri: Optional[str]) -> str:
    """The store a run will use: the config's, else MLflow's default (MLFLOW_TRACKING_URI or
    ``sqlite:///mlflow.db`` in the working directory), made absolute for SQLite."""
    import mlflow

    uri = tracking_uri or os.environ.get(ENV_URI) or mlflow.get_tracking_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


class TrackingUnavailable(ConfigError):
    """The tracking store cannot be reached or written: say so before any training time is spent."""


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
    return uri


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


def start_sweep(*, tracking_uri: Optional[str], experiment: str, name: str, tags: Mapping[str, Any]) -> str:
    """Create the store (once, here: MLflow's schema migration races when parallel jobs
    create a new SQLite file together), the experiment and the sweep's parent run; publish
    them to the jobs through the environment. Returns the parent run id."""
    from mlflow import MlflowClient

    uri = check_store(tracking_uri)
    outer = {"mlflow.parentRunId": os.environ[ENV_PARENT]} if os.environ.get(ENV_PARENT) else {}  # e.g. claims.py
    parent = _create_run(MlflowClient(uri), experiment, name, {"sweep": "parent", **tags, **outer})
    os.environ.update({ENV_URI: uri, ENV_EXPERIMENT: experiment, ENV_PARENT: parent})
    log.info("sweep parent run %s in experiment %r at %s", parent, experiment, uri)
    return parent


def end_sweep(parent: str, *, status: str, summary: Mapping[str, Any], report_md: str) -> None:
    """Attach the sweep summary to the parent run and give it its final status."""
    from mlflow import MlflowClient

    client = MlflowClient(os.environ[ENV_URI])
    set_tags(client, parent, {f"sweep_{k}": v for k, v in summary.get("counts", {}).items()})
    client.log_text(parent, json.dumps(summary, indent=2), "sweep_summary.json")
    client.log_text(parent, report_md, "sweep_summary.md")
    client.set_terminated(parent, status)


def end_sweep_if_running(parent: str, status: str) -> None:
    """For an interrupted sweep (atexit): never leave the parent RUNNING."""
    from mlflow import MlflowClient

    try:
        client = MlflowClient(os.environ[ENV_URI])
        if client.get_run(parent).info.status == "RUNNING":
            client.set_terminated(parent, status)
    except Exception as exc:  # at exit, report and move on
        log.error("could not end sweep parent run %s: %s", parent, exc)


def _flush(uri: str) -> None:
    """Wait until MLflow's async queue for this store has written everything."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.flush_async_logging()


@contextmanager
def tracked_run(*, tracking_uri: Optional[str], experiment: str, run_name: str, tags: Mapping[str, Any],
                config: Mapping[str, Any], config_yaml: str, resume_run_id: Optional[str] = None) -> Iterator[Run]:
    """Create an MLflow run (or reopen ``resume_run_id``) and guarantee it ends with a final status."""
    from mlflow import MlflowClient
    from mlflow.entities import Param

    uri = resolve_uri(tracking_uri)
    experiment = os.environ.get(ENV_EXPERIMENT, experiment)  # a sweep keeps its runs together
    client = MlflowClient(uri)
    parent = {"mlflow.parentRunId": os.environ[ENV_PARENT]} if os.environ.get(ENV_PARENT) else {}
    if resume_run_id:
        run_id = resume_run_id
        before = client.get_run(run_id)
        experiment = client.get_experiment(before.info.experiment_id).name
        client.update_run(run_id, status="RUNNING")
        if "error" in before.data.tags:
            client.delete_tag(run_id, "error")
        set_tags(client, run_id, {"resumed": int(before.data.tags.get("resumed", 0)) + 1,
                                  "resumed_after": before.info.status})
    else:
        run_id = _create_run(client, experiment, run_name, {**tags, **parent})
    log.info("MLflow run %s (%s) in experiment %r at %s", run_name, run_id, experiment, uri)

    # Metrics are written by MLflow's background queue (synchronous=False) so training never
    # waits on the store; the queue is flushed before the run gets its final status.
    run = Run(client, run_id, EpochStepMLFlowLogger(experiment_name=experiment, tracking_uri=uri, run_id=run_id,
                                                    synchronous=False))
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        raise Terminated("SIGTERM")

    in_main_thread = True
    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        in_main_thread = False
    try:
        if not resume_run_id:  # params are immutable: a resumed run keeps its own
            params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
            for i in range(0, len(params), 100):
                client.log_batch(run_id, params=params[i:i + 100])
        client.log_text(run_id, config_yaml, "config.yaml")
        yield run
    except BaseException as exc:
        status = _status_of(exc, run.recorder.exception)
        cause = run.recorder.exception if isinstance(exc, SystemExit) and run.recorder.exception else exc
        try:
            _flush(uri)
            run.set_tags({"error": (f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__)[:5000]})
            client.set_terminated(run_id, status)
            log.error("MLflow run %s ended %s: %s: %s", run_id, status, type(cause).__name__, cause)
        except Exception as inner:  # the store itself may be the problem; keep the original error
            log.error("could not mark MLflow run %s as %s: %s", run_id, status, inner)
        exc.xentlab_run_id = run_id  # type: ignore[attr-defined]  # lets a sweep record which run failed
        if status == "KILLED":
            raise SystemExit(130) from exc  # the shell's code for "stopped by a signal"
        raise
    else:
        _flush(uri)
        client.set_terminated(run_id, "FINISHED")
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
