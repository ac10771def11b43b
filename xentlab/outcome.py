"""What becomes of a job, in one place for ``run.py`` and the batched launcher alike.

=========================  ======================  =========================================
what happened              alone (``run.py``)      in a sweep (the job's record)
=========================  ======================  =========================================
trained                    exit 0                  ran (failed where a member diverged)
:class:`ConfigError`       one line, exit 2        skipped, with the reason
other ``XentlabError``     one line, exit 1        failed, with the error
any other exception        traceback               failed, with the error; the sweep goes on
Ctrl-C / SIGTERM           exit 130                exit 130: the user stopped the sweep
SIGTERM in a SLURM job     exit 130                failed, with the reason; the sweep goes on
=========================  ======================  =========================================

In a SLURM job a SIGTERM is the scheduler's (scancel, time limit, preemption): the job's
run ends KILLED and the job returns its record, so submitit gets a result and the sweep
counts one failed job (``xentlab.cluster.in_job``).

Each job of a sweep writes its record to ``xentlab_job.json`` in its own folder
(``xentlab.sweep`` reads them back for the summary).
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from xentlab import cluster, interrupts
from xentlab.errors import ConfigError, XentlabError

log = logging.getLogger(__name__)


@contextmanager
def job(record: dict[str, Any], *, sweeping: bool) -> Iterator[dict[str, Any]]:
    """Run the body as one job; an exception it raises becomes ``record``'s status (in a
    sweep) or the process's exit code (alone), as the table above says."""
    with stops_on_interrupt():
        try:
            yield record
        except ConfigError as exc:
            if not sweeping:
                exit_with(exc)
            log.error("skipped: %s", exc)
            record.update(failure(exc))
        except Exception as exc:
            if not sweeping:
                if isinstance(exc, XentlabError):
                    exit_with(exc)
                raise
            log.exception("failed: %s", exc)
            record.update(failure(exc))
        except interrupts.Terminated as exc:
            if not (sweeping and cluster.in_job()):
                raise
            log.error("stopped: %s", exc)
            record.update(failure(exc))


@contextmanager
def stops_on_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C inside, so every run on the way ends KILLED; either then ends
    the process with exit code 130 (a sweep stops too: the user asked it to)."""
    try:
        with interrupts.sigterm_raises():
            yield
    except BaseException as exc:
        if not interrupts.interrupted(exc):
            raise
        log.error("stopped: %s", type(exc).__name__)
        _leave_past_a_stuck_store()
        raise SystemExit(interrupts.EXIT_CODE) from None


def _leave_past_a_stuck_store() -> None:
    """MLflow's exit handlers wait on its async queue; when that queue was found stuck while the
    runs were ended KILLED (``tracking.store.flush``), they would wait forever: end the sweep's
    parent, then leave without them."""
    from xentlab.tracking import store

    if not store.stuck():
        return
    parent = os.environ.get(store.ENV_PARENT)
    if parent:
        store.end_sweep_if_running(parent, "KILLED")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(interrupts.EXIT_CODE)


def exit_with(exc: XentlabError) -> None:
    """Print the error's one line and end the process with its exit code."""
    print(f"xentlab: error: {exc}", file=sys.stderr)
    raise SystemExit(exc.exit_code) from None


def failure(exc: BaseException) -> dict[str, Any]:
    """The record of a job that did not train: a bad config or invalid cell is skipped,
    anything else failed (with the MLflow run it failed in, when one existed)."""
    if isinstance(exc, ConfigError):
        return {"status": "skipped", "reason": str(exc)}
    return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
            "run_id": getattr(exc, "xentlab_run_id", None)}


def trained(result: dict[str, Any]) -> dict[str, Any]:
    """The record of a job that trained (``train.run``'s result): failed where a member of
    a batched model diverged (its run ended FAILED while the others went on)."""
    runs = result.get("runs")
    errors = ([f"seed {r['seed']}" + (f" fold {r['fold']}" if "fold" in r else "") + f": {r['error']}"
               for r in runs if "error" in r] if runs is not None
              else [result["error"]] if "error" in result else [])
    record = {k: v for k, v in result.items() if k != "error"}
    return {**record, "status": "failed", "reason": "; ".join(errors)} if errors else {**record, "status": "ran"}
