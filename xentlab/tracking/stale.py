"""List, and on request end, MLflow runs left RUNNING by a process that died unseen.

    python scripts/stale.py                          # dry run: list stale runs in every experiment
    python scripts/stale.py --experiment xentlab-mnist --end
    python scripts/stale.py --tracking-uri http://mlflow-host:5000 --stale-after 1800

A RUNNING run is stale when its SLURM job has ended (the scheduler is asked), its process
is gone (a run started on this host) or its heartbeat is older than ``--stale-after``
seconds (other hosts). ``--end`` marks them
KILLED with the reason in their ``error`` tag; ``resume=auto`` can then go on with them.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

from xentlab import tracking
from xentlab.errors import ConfigError


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", help="MLflow store (default: MLflow's default, sqlite:///mlflow.db)")
    ap.add_argument("--experiment", help="only this experiment (default: all)")
    ap.add_argument("--stale-after", type=float, default=600.0, metavar="SECONDS",
                    help="heartbeat age that makes a run on another host stale (default 600)")
    ap.add_argument("--end", action="store_true", help="end the stale runs KILLED (default: only list them)")
    a = ap.parse_args(argv)
    try:
        client = tracking.client(a.tracking_uri)
        experiment_ids = tracking.experiment_ids(client, a.experiment)
    except ConfigError as exc:  # the store cannot be opened, or no such experiment
        print(f"stale: error: {exc}", file=sys.stderr)
        return 2
    found = tracking.stale_runs(client, experiment_ids, a.stale_after)
    now = time.time()
    for run, why in found:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000))
        print(f"{run.info.run_id}  {run.info.run_name or '':<32} started {started} "
              f"({(now - run.info.start_time / 1000) / 3600:.1f} h ago): {why}")
    if not found:
        print("no stale runs")
    elif a.end:
        tracking.end_stale(client, found, by="scripts/stale.py")
        print(f"ended {len(found)} stale run(s) KILLED")
    else:
        print(f"{len(found)} stale run(s); dry run: add --end to end them KILLED")
    return 0

