"""xentlab entry point: ``python run.py task=mnist loss=sparse_cce`` (see README.md)."""

import math
import statistics
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from xentlab.errors import ConfigError
from xentlab.registration import check_choices, register

CONF = Path(__file__).parent / "conf"
register()
# Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates; nothing for users to act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    """One run. In a sweep a bad cell is skipped and a failed run recorded; the sweep goes on
    (``xentlab.outcome`` says what becomes of a job)."""
    from xentlab import outcome, planning
    from xentlab.sweep import write_record

    hc = HydraConfig.get()
    sweeping = hc.mode == RunMode.MULTIRUN
    with outcome.job({"job": hc.job.num if sweeping else 0, "overrides": list(hc.overrides.task)},
                     sweeping=sweeping) as record:
        planning.plan(cfg)  # a bad config is refused before Lightning is imported (train.run plans again)
        from xentlab import train

        record.update(outcome.trained(train.run(cfg, output_dir=hc.runtime.output_dir)))
    if sweeping:
        write_record(hc.runtime.output_dir, record)
    if cfg.get("optimized_metric"):  # the Optuna sweeper minimises/maximises this number (of several runs: the mean)
        values = [r.get("metrics", {}).get(cfg.optimized_metric) for r in record.get("runs") or [record]]
        return statistics.fmean(values) if values and None not in values else math.nan
    return record


if __name__ == "__main__":
    if not any(a.startswith(("-cp", "-cn", "-cd", "--config")) for a in sys.argv[1:]):  # conf/ is the config
        try:
            check_choices([a for a in sys.argv[1:] if "=" in a and not a.startswith("-")], str(CONF))
        except ConfigError as exc:
            from xentlab.outcome import exit_with

            exit_with(exc)
    main()
