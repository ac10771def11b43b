"""A training run's life in MLflow, and the same path with nothing recorded.

Training sees one interface whatever the logger: ``tracker.open(descriptions)`` yields a
:class:`Session` (the Lightning logger and callbacks, one run id per member).
:class:`MlflowTracking` creates each run with everything :class:`RunDescription` says
and always ends it with a final status: FINISHED, FAILED (with the error as a tag) or
KILLED (``interrupts.interrupted``). A run is never left RUNNING by a crash of ours; what
no handler sees (``kill -9``, the out-of-memory killer, a lost node) is caught afterwards
through the host, process id and heartbeat every run records (``store.stale_runs``).
:class:`NoTracking` is ``logger=none``.
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterator, Mapping, Optional

from xentlab import interrupts
from xentlab.errors import ConfigError
from xentlab.tracking import store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunDescription:
    """Everything recorded about a run when it is created."""

    name: str
    tags: Mapping[str, Any]
    config: Mapping[str, Any]  # logged as params, flattened to dotted keys
    config_yaml: str


@dataclass
class Session:
    """What training needs from the tracker while the runs are open."""

    logger: Any  # a Lightning logger, or False
    run_ids: dict[int, Optional[str]]
    callbacks: list = field(default_factory=list)
    set_tags: Callable[[Mapping[str, Any]], None] = lambda tags: None  # on every run of the session
    fail: Callable[[int, BaseException], None] = lambda member, error: None  # that member's run ends FAILED
    # a member's values of the whole run (its training time, its best epoch), logged at step 0
    log_once: Callable[[int, Mapping[str, float]], None] = lambda member, values: None
    tag: Callable[[int, Mapping[str, Any]], None] = lambda member, tags: None  # on that member's run only


class NoTracking:
    """``logger=none`` (and the extra processes of a DDP run): the same path, nothing recorded."""

    def previous(self, identity: Mapping[str, Any]) -> Optional[store.Previous]:
        return None

    def __init__(self, lookup: Optional[Callable[[str], Optional[str]]] = None):
        self.lookup = lookup  # resume=<run id>: where a DDP run's extra processes find its checkpoint

    def checkpoint_of(self, run_id: str) -> Optional[str]:
        if self.lookup is None:
            raise ConfigError(f"resume={run_id} names an MLflow run, but logger=none; give the checkpoint's path")
        return self.lookup(run_id)

    @contextmanager
    def open(self, descriptions: Mapping[int, RunDescription], *,
             resume_run_ids: Optional[Mapping[int, Optional[str]]] = None) -> Iterator[Session]:
        yield Session(False, {m: None for m in descriptions})


class MlflowTracking:
    """One MLflow run per member, in the sweep's experiment and under its parent when in a sweep."""

    def __init__(self, tracking_uri: Optional[str], experiment: str, stale_after: float):
        self.uri = store.check_store(tracking_uri)  # fail fast, before any data or training time
        self.experiment = os.environ.get(store.ENV_EXPERIMENT, experiment)  # a sweep keeps its runs together
        self.stale_after = stale_after
        self.known: Optional[list] = None

    def previous(self, identity: Mapping[str, Any]) -> Optional[store.Previous]:
        """``resume=auto``: the earlier run of this configuration (``store.previous_run``), among
        the experiment's runs as the first lookup found them (a batched sweep looks up each member)."""
        if self.known is None:
            self.known = store.experiment_runs(self.uri, self.experiment)
        return store.previous_run(self.uri, self.experiment, identity, self.stale_after, self.known)

    def checkpoint_of(self, run_id: str) -> Optional[str]:
        """``resume=<run id>``: the checkpoint that run recorded."""
        return store.checkpoint_of(run_id, self.uri)

    @contextmanager
    def open(self, descriptions: Mapping[int, RunDescription], *,
             resume_run_ids: Optional[Mapping[int, Optional[str]]] = None) -> Iterator[Session]:
        """A run per member (or the member's earlier run, reopened, when resuming); the model logs
        each member's values under its key (``xentlab.metric_keys``)."""
        from xentlab.tracking.lightning import MemberRoutingLogger

        with ExitStack() as stack:
            runs = {m: stack.enter_context(tracked_run(self.uri, self.experiment, d, (resume_run_ids or {}).get(m)))
                    for m, d in descriptions.items()}
            logger = MemberRoutingLogger({m: r.logger for m, r in runs.items()})

            def set_tags(tags: Mapping[str, Any]) -> None:
                for r in runs.values():
                    store.set_tags(r.client, r.run_id, tags)

            def fail(member: int, error: BaseException) -> None:
                runs[member].error = error

            @interrupts.deferred()
            def log_once(member: int, values: Mapping[str, float]) -> None:
                store.log_values(runs[member].client, runs[member].run_id, values, {})

            @interrupts.deferred()
            def tag(member: int, tags: Mapping[str, Any]) -> None:
                store.set_tags(runs[member].client, runs[member].run_id, tags)

            yield Session(logger, {m: r.run_id for m, r in runs.items()}, [r.heartbeat for r in runs.values()],
                          set_tags, fail, log_once, tag)


class Run:
    def __init__(self, client, run_id: str, logger):
        from xentlab.tracking.lightning import Heartbeat

        self.client, self.run_id, self.logger = client, run_id, logger
        self.error: Optional[BaseException] = None  # set: the run ends FAILED although training went on
        parent = os.environ.get(store.ENV_PARENT)
        self.heartbeat = Heartbeat(client, [run_id, parent] if parent else [run_id])


@contextmanager
def tracked_run(uri: str, experiment: str, description: RunDescription,
                resume_run_id: Optional[str] = None) -> Iterator[Run]:
    """Create an MLflow run (or reopen ``resume_run_id``) and guarantee it ends with a final status."""
    from mlflow import MlflowClient

    from xentlab.tracking.lightning import EpochStepMLFlowLogger

    client = MlflowClient(uri)
    parent = {"mlflow.parentRunId": os.environ[store.ENV_PARENT]} if os.environ.get(store.ENV_PARENT) else {}
    logged: Collection[str] = ()
    if resume_run_id:
        run_id = resume_run_id
        before = store.reopen(client, run_id, parent=os.environ.get(store.ENV_PARENT))  # a continued sweep adopts it
        experiment = client.get_experiment(before.info.experiment_id).name
        logged = before.data.params  # a run killed while it was being created has not all of them
        if "checkpoint" in description.tags:  # the next resume goes on from this continuation's checkpoints
            store.set_tags(client, run_id, {"checkpoint": description.tags["checkpoint"]})
    else:
        run_id = store.create_run(client, experiment, description.name, {**description.tags, **parent})
    log.info("MLflow run %s (%s) in experiment %r at %s", description.name, run_id, experiment, uri)
    # Step metrics go through MLflow's background queue (synchronous=False) so training steps never
    # wait on the store; the queue is flushed before the run gets its final status.
    run = Run(client, run_id, EpochStepMLFlowLogger(experiment_name=experiment, tracking_uri=uri, run_id=run_id,
                                                    synchronous=False))
    try:
        store.log_params(client, run_id, description.config, present=logged)
        client.log_text(run_id, description.config_yaml, "config.yaml")
        yield run
    except BaseException as exc:
        _end(client, uri, run_id, "KILLED" if interrupts.interrupted(exc) else "FAILED", exc)
        exc.xentlab_run_id = run_id  # type: ignore[attr-defined]  # lets a sweep record which run failed
        raise
    else:
        _end(client, uri, run_id, "FAILED" if run.error else "FINISHED", run.error)


def _end(client, uri: str, run_id: str, status: str, exc: Optional[BaseException]) -> None:
    """Flush the run's queued metrics, then give it its final status (and its error as a tag). After
    Ctrl-C or SIGTERM the flush waits at most ``store.FLUSH_TIMEOUT`` seconds: the process is
    stopping, and a queue left stuck must not hold it forever."""
    timeout = store.FLUSH_TIMEOUT if exc is not None and interrupts.interrupted(exc) else None
    try:
        if not store.flush(uri, timeout):
            log.warning("MLflow run %s: its queued metrics were not written within %g s; ending it %s without "
                        "them", run_id, store.FLUSH_TIMEOUT, status)
        if exc is not None:
            store.set_tags(client, run_id, {"error": (f"{type(exc).__name__}: {exc}" if str(exc)
                                                      else type(exc).__name__)[:5000]})
        store.terminate(client, uri, run_id, status)
        if exc is not None:
            log.error("MLflow run %s ended %s: %s: %s", run_id, status, type(exc).__name__, exc)
    except Exception as inner:
        if exc is None:
            raise
        log.error("could not mark MLflow run %s as %s: %s", run_id, status, inner)  # keep the original error
