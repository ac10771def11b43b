"""Fair comparison: tune the learning rate of every loss, then rerun each best with seeds.

    python scripts/tune.py --task mnist
    python scripts/tune.py --task binary --losses bce,mse --trials 8 --seeds 0,1,2 -- data.subset=20000
    python scripts/tune.py --task file -- task.path=data/examples/digits.npz

For each loss: ``run.py -m hparams_search=lr`` (Optuna, on the validation metric; the
trials go to the experiment ``<name>-tuning``), then ``run.py -m optimizer.lr=<best>
seed=...`` (experiment ``<name>``), then the comparison report over those reruns. Each step
is an ordinary xentlab sweep, so everything is in MLflow and can be rerun by hand.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from xentlab import losses, tasks
from xentlab.analysis import rank_by
from xentlab.registration import register
from xentlab.report.compare import compare

ROOT = Path(__file__).resolve().parents[1]  # the repository: its run.py, conf/ and multirun/


def sweep(*overrides: str) -> None:
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", *overrides]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)


def task_kind(overrides: list[str]) -> str:
    """The task's kind as a run with these overrides sees it (``task=file`` reads its file)."""
    from hydra import compose, initialize_config_dir

    register()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="config", overrides=overrides)
    return tasks.resolve(cfg.task, cfg.data).kind


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="mnist")
    ap.add_argument("--losses", default=",".join(losses.LOSSES), help="default: every registered loss")
    ap.add_argument("--trials", type=int, default=8, help="Optuna trials per loss")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--name", help="experiment name (default tuned_<task>)")
    ap.add_argument("--out", type=Path, help="where the sweeps and the report go (default multirun/tune-<time>)")
    ap.add_argument("overrides", nargs="*", help="extra run.py overrides for every run (after --)")
    a = ap.parse_args(argv)
    name = a.name or f"tuned_{a.task}"
    out = a.out or ROOT / "multirun" / time.strftime("tune-%Y-%m-%d_%H-%M-%S")
    common = [f"task={a.task}", *a.overrides]
    metric = f"val/{rank_by(task_kind(common))}"
    best = {}
    for loss in a.losses.split(","):
        tune_dir = out / f"tune_{loss}"
        sweep("hparams_search=lr", f"loss={loss}", f"optimized_metric={metric}", f"hydra.sweeper.n_trials={a.trials}",
              f"logger.experiment={name}-tuning", f"hydra.sweep.dir={tune_dir}", *common)
        result = OmegaConf.load(tune_dir / "optimization_results.yaml")
        best[loss] = float(result.best_params["optimizer.lr"])
        print(f"{loss}: best optimizer.lr={best[loss]:.3g} ({metric} {result.best_value:.4f})", flush=True)
        sweep(f"loss={loss}", f"optimizer.lr={best[loss]}", f"seed={a.seeds}", "trainer.progress_bar=false",
              f"logger.experiment={name}", f"hydra.sweep.dir={out / f'seeds_{loss}'}", *common)
    compare(experiment=name, out=out / "report")
    print("best learning rates: " + ", ".join(f"{k}={v:.3g}" for k, v in best.items()))

