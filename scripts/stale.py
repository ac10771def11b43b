"""List, and on request end, MLflow runs left RUNNING by a process that died unseen.

    python scripts/stale.py                          # dry run: list stale runs in every experiment
    python scripts/stale.py --experiment xentlab-mnist --end
    python scripts/stale.py --tracking-uri http://mlflow-host:5000 --stale-after 1800

The code is ``xentlab.tracking.stale``.
"""

from xentlab.tracking.stale import main

if __name__ == "__main__":
    raise SystemExit(main())
