"""``hydra/launcher=batched``: a sweep's jobs trained as few batched models (``xentlab.batching``).

Hydra loads launchers only from the ``hydra_plugins`` package; this one prepares each job
as Hydra's own launchers do (its folder, its saved config) and hands them to xentlab.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.config_loader import ConfigLoader
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.xentlab_batched_launcher.batched_launcher.BatchedLauncher"
    max_members: int = 32  # the most runs one model trains at once: docs/benchmarks.md has the rule


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf, provider="xentlab")


class BatchedLauncher(Launcher):
    def __init__(self, max_members: int = 64) -> None:
        self.max_members = max_members
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.composed = ComposeOnce(hydra_context.config_loader)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from xentlab import batching

        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs as batched models")
        jobs, returns = [], []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.composed.take(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = sweep_config.hydra.job.num = idx
            # the job's folder and saved config, as Hydra makes them; its training comes below
            ret = run_job(hydra_context=self.hydra_context, task_function=lambda cfg: None, config=sweep_config,
                          job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir", configure_logging=False)
            jobs.append(batching.Job(idx, list(overrides), ret.cfg, ret.hydra_cfg.hydra.runtime.output_dir))
            returns.append(ret)
        if jobs:  # one log for the whole launch, beside the jobs' folders
            logging_cfg = OmegaConf.to_container(returns[0].hydra_cfg.hydra.job_logging, resolve=True)
            if "file" in (logging_cfg.get("handlers") or {}):
                logging_cfg["handlers"]["file"]["filename"] = str(sweep_dir / "batched.log")
            logging_cfg = OmegaConf.create(logging_cfg)
            configure_log(logging_cfg, self.config.hydra.verbose)
        records = batching.launch(jobs, self.max_members)
        for ret, job in zip(returns, jobs):
            ret.return_value = records[job.num]
        return returns


class ComposeOnce:
    """Hydra's sweepers compose every job's config to validate a batch, then a launcher
    composes it again (0.15 s a job here). This launcher runs its jobs in the sweeper's
    process, so it keeps each validated config and takes it instead of composing anew."""

    def __init__(self, loader: ConfigLoader) -> None:
        self.compose = loader.load_sweep_config
        self.kept: dict[tuple[str, ...], DictConfig] = {}
        loader.load_sweep_config = self.keep

    def keep(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        cfg = self.compose(master_config, sweep_overrides)
        self.kept[tuple(sweep_overrides)] = cfg
        return cfg

    def take(self, master_config: DictConfig, overrides: list[str]) -> DictConfig:
        cfg = self.kept.pop(tuple(overrides), None)
        return cfg if cfg is not None else self.compose(master_config, overrides)
