"""``hydra/launcher=batched``: a sweep's jobs trained as few batched models (``xentlab.batching``).

Hydra loads launchers only from the ``hydra_plugins`` package; this one prepares each job
as Hydra's own launchers do (its folder, its saved config) and hands them to xentlab.
"""

import copy
import logging
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.config_loader import ConfigLoader
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from xentlab import clock
from xentlab.config import MEMBER_VARY

log = logging.getLogger(__name__)


class Executor(Enum):
    slurm = "slurm"


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.xentlab_batched_launcher.batched_launcher.BatchedLauncher"
    max_members: int = 32  # the most runs one model trains at once: docs/benchmarks.md has the rule
    executor: Optional[Executor] = None  # slurm: each model one SLURM job, with the resources below
    # hydra/launcher=slurm's fields (hydra-submitit-launcher's SlurmQueueConf), e.g. hydra.launcher.slurm.mem_gb=4
    slurm: Dict[str, Any] = field(default_factory=lambda: {k: v for k, v in asdict(SlurmQueueConf()).items()
                                                           if k != "_target_"})


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf, provider="xentlab")


class BatchedLauncher(Launcher):
    def __init__(self, max_members: int = 32, executor: Optional[Executor] = None, slurm: Any = None) -> None:
        self.max_members = max_members
        self.slurm = OmegaConf.to_container(slurm, resolve=True) if executor is not None else None
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.composed = ComposeOnce(hydra_context.config_loader)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from xentlab import batching

        clock.phase("training code imported")
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
        clock.phase("%d job folders written", len(jobs))
        records = batching.launch(jobs, self.max_members, self.slurm)
        for ret, job in zip(returns, jobs):
            ret.return_value = records[job.num]
        return returns


class ComposeOnce:
    """Hydra's sweepers compose every job's config to validate a batch (0.15 s a job here), then
    a launcher composes it again. This launcher runs its jobs in the sweeper's process, so it
    keeps each validated config and takes it instead of composing anew. And a sweep's jobs
    mostly differ in values its members may vary (``xentlab.config.MEMBER_VARY``: seed,
    learning rate …): Hydra composes one config per distinct rest of the overrides, and each
    job's config is a copy with its own values applied as Hydra's loader applies them."""

    def __init__(self, loader: ConfigLoader) -> None:
        self.compose = loader.load_sweep_config
        self.is_group = getattr(loader, "repository").group_exists
        self.parser = OverridesParser.create()
        self.kept: dict[tuple[str, ...], DictConfig] = {}
        self.composed: dict[tuple[str, ...], DictConfig] = {}
        loader.load_sweep_config = self.keep

    def keep(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        cfg = self.kept[tuple(sweep_overrides)] = self.derive(master_config, list(sweep_overrides))
        return cfg

    def take(self, master_config: DictConfig, overrides: list[str]) -> DictConfig:
        cfg = self.kept.pop(tuple(overrides), None)
        return cfg if cfg is not None else self.derive(master_config, overrides)

    def derive(self, master_config: DictConfig, overrides: list[str]) -> DictConfig:
        parsed = self.parser.parse_overrides(overrides)
        if any(o.is_hydra_override() for o in parsed):
            return self.compose(master_config, overrides)
        values = [o for o in parsed if self._member_value(o)]
        rest = tuple(o.input_line for o in parsed if not self._member_value(o))
        if rest not in self.composed:
            self.composed[rest] = self.compose(master_config, list(rest))
        cfg = copy.deepcopy(self.composed[rest])
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        cfg.hydra.overrides.task = [o.input_line for o in parsed]
        dirname = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=parsed, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys)
        return cfg

    def _member_value(self, o: Override) -> bool:
        """A plain value that members of one model may differ in (not a config group's choice)."""
        key = o.key_or_group
        return (o.type == OverrideType.CHANGE and o.package is None and not o.is_sweep_override()
                and any(key == v or key.startswith(f"{v}.") for v in MEMBER_VARY) and not self.is_group(key))
