"""The one way to MLflow.

* ``tracking.store`` (re-exported here; imports no Lightning): where the store is and
  whether it works, experiments, runs and their tags and params, sweep parents, stale runs.
* ``tracking.lightning``: MLflow as Lightning's logger, one logger for K members, heartbeats.
* ``tracking.lifecycle``: a training run's life from creation to final status, and the
  no-op tracker for ``logger=none``.
* ``tracking.runs`` (re-exported here): finished runs read back for the reports
  (``xentlab.report``), and the artifacts and final status the reports write.
* ``tracking.stale``: ``scripts/stale.py``, listing and ending runs a dead process left RUNNING.
"""

from xentlab.tracking.runs import attach, curve, end_run, load_runs, parent_of  # noqa: F401
from xentlab.tracking.store import (  # noqa: F401  (the package's public face)
    ENV_EXPERIMENT,
    ENV_PARENT,
    ENV_URI,
    Previous,
    TrackingUnavailable,
    WriteTimer,
    check_store,
    checkpoint_of,
    client,
    create_run,
    end_stale,
    end_sweep,
    end_sweep_if_running,
    experiment_id,
    experiment_ids,
    flatten,
    flush,
    heartbeat,
    identity_key,
    log_params,
    log_values,
    newest_sweep,
    parent_heartbeat,
    previous_run,
    resolve_uri,
    search_all,
    set_tags,
    stale_reason,
    stale_runs,
    start_sweep,
    sweep_seconds,
)

