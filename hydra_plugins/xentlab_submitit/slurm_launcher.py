"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, with a sweep that
survives its jobs (conf/hydra/launcher/slurm.yaml names this class).

The jobs are submitted and waited on by ``xentlab.cluster``: a job that leaves no result
(SIGKILL, out of memory, a lost node) is a failed job with the reason "no result: killed?",
its record written as the job would have; the others are collected, and the sweep ends with
its summary. Jobs that a SIGTERM ended return their own record (``xentlab.outcome``). While
the jobs wait in the queue the sweep's parent run keeps its heartbeat; stopping the
submitting process (SIGTERM, Ctrl-C) cancels the sweep's jobs, the parent run ends KILLED
(``xentlab.sweep``) and the process exits 130.
"""

import logging
import sys
from pathlib import Path
from typing import Any, List, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import open_dict

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher

log = logging.getLogger(__name__)


class SlurmLauncher(SubmititSlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Submit the jobs as submitit's launcher does, then collect them (``cluster.wait``)."""
        from xentlab import cluster, outcome, tracking
        from xentlab.errors import ConfigError

        assert self.config is not None
        log.info(f"Submitit 'slurm' sweep output dir : {self.config.hydra.sweep.dir}")
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        params: List[Any] = []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        with outcome.stops_on_interrupt():
            try:
                jobs = cluster.submit(cluster.executor(self.params), self, *zip(*params))
            except ConfigError as exc:
                print(f"xentlab: error: {exc}", file=sys.stderr, flush=True)
                sys.exit(exc.exit_code)
            got = cluster.wait(jobs, float(self.config.logger.stale_after), tracking.parent_heartbeat())
        return [self.failed(job_overrides[i], initial_job_idx + i, str(r)) if isinstance(r, BaseException) else r
                for i, r in enumerate(got)]

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """In the job: it trains to its time limit unless requeueing was asked for (``max_num_timeout``)."""
        from xentlab import cluster

        if not self.params.get("max_num_timeout"):
            cluster.trains_to_the_limit()
        return super().__call__(*args, **kwargs)

    def failed(self, overrides: Sequence[str], num: int, reason: str) -> JobReturn:
        """The record of a job that did not return one: written into its folder, as the job would have."""
        from xentlab.sweep import write_record

        record = {"job": num, "overrides": list(overrides), "status": "failed", "reason": reason}
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.num = num
        write_record(Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir), record)
        return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=record)
