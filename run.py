"""xentlab entry point: ``python run.py task=mnist loss=sparse_cce`` (see README.md)."""

import logging
import sys
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from xentlab.config import ConfigError, register

register()
# Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates; nothing for users to act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
log = logging.getLogger("xentlab")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from xentlab import train
    from xentlab.mnist import MnistUnavailable
    from xentlab.module import NonFiniteLoss

    try:
        return train.run(cfg, output_dir=HydraConfig.get().runtime.output_dir)
    except (ConfigError, MnistUnavailable, NonFiniteLoss) as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error("%s: %s", "skipped" if isinstance(exc, ConfigError) else "failed", exc)
            return None
        print(f"xentlab: error: {exc}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, ConfigError) else 1)


if __name__ == "__main__":
    main()
