"""Compare runs side by side: a table per task (and condition) and learning curves, from MLflow alone.

    python scripts/compare.py --experiment loss_grid_mnist
    python scripts/compare.py --parent <sweep parent run id> --out reports/mine
    python scripts/compare.py --experiment xentlab-mnist --filter "tags.loss = 'bce'"

The code is ``xentlab.report.compare``.
"""

from xentlab.report.compare import main

if __name__ == "__main__":
    main()
