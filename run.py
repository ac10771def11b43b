"""xentlab entry point: ``python run.py task=mnist loss=sparse_cce`` (see README.md)."""

import logging
import math
import sys
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from xentlab import interrupts
from xentlab.config import ConfigError, register

register()
# Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates; nothing for users to act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
log = logging.getLogger("xentlab")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    """One run. In a sweep a bad cell is skipped and a failed run recorded; the sweep goes on."""
    from xentlab import train
    from xentlab.mnist import MnistUnavailable
    from xentlab.module import NonFiniteLoss
    from xentlab.sweep import outcome, trained, write_record

    hc = HydraConfig.get()
    sweeping = hc.mode == RunMode.MULTIRUN
    record = {"job": hc.job.num if sweeping else 0, "overrides": list(hc.overrides.task)}
    try:
        with interrupts.sigterm_raises():
            result = train.run(cfg, output_dir=hc.runtime.output_dir)
        record.update(trained(result))
    except ConfigError as exc:
        if not sweeping:
            print(f"xentlab: error: {exc}", file=sys.stderr)
            sys.exit(2)
        log.error("skipped: %s", exc)
        record.update(outcome(exc))
    except Exception as exc:
        if not sweeping:
            if isinstance(exc, (MnistUnavailable, NonFiniteLoss)):
                print(f"xentlab: error: {exc}", file=sys.stderr)
                sys.exit(1)
            raise
        log.exception("failed: %s", exc)
        record.update(outcome(exc))
    except BaseException as exc:
        if not interrupts.interrupted(exc):
            raise
        log.error("stopped: %s", type(exc).__name__)
        sys.exit(interrupts.EXIT_CODE)  # a sweep stops here too: the user asked it to
    if sweeping:
        write_record(hc.runtime.output_dir, record)
    if cfg.get("optimized_metric"):  # the Optuna sweeper minimises/maximises this number
        value = record.get("metrics", {}).get(cfg.optimized_metric)
        return float(value) if value is not None else math.nan
    return record


if __name__ == "__main__":
    main()
