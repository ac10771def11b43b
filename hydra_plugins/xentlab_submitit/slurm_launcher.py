"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, with a sweep that
survives its jobs (conf/hydra/launcher/slurm.yaml names this class).

* A job that leaves no result (SIGKILL, out of memory, a lost node; submitit's
  ``UncompletedJobError``, or a job that squeue no longer lists) is a failed job with the
  reason "no result: killed?", its record written as the job would have; the other jobs
  are collected, and the sweep ends with its summary. Jobs that a SIGTERM ended return
  their own record (``xentlab.outcome``).
* While the jobs wait in the queue the sweep's parent run keeps its heartbeat.
* Stopping the submitting process (SIGTERM, Ctrl-C) cancels the sweep's queued and running
  jobs; the parent run then ends KILLED (``xentlab.sweep``) and the process exits 130.
"""

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, List, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf, open_dict

from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher

log = logging.getLogger(__name__)
POLL_S = 2.0  # how often the submitting process looks for results
QUEUE_POLL_S = 10.0  # how often it asks squeue whether a job without a result still lives
HEARTBEAT_S = 60.0  # how often it refreshes the parent run's heartbeat (more often with a short logger.stale_after)
GRACE_S = 15.0  # how long a result may take to appear after its job left the queue (a slow shared disk)


class SlurmLauncher(SubmititSlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Submit the jobs as submitit's launcher does, then collect them one by one."""
        import submitit

        from xentlab import outcome
        from xentlab.errors import ConfigError

        assert self.config is not None
        executor = submitit.AutoExecutor(cluster="slurm", folder=self.params["submitit_folder"],
                                         slurm_max_num_timeout=self.params["max_num_timeout"])
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in self.params.items()
                                      if k not in ("submitit_folder", "max_num_timeout")})
        log.info(f"Submitit 'slurm' sweep output dir : {self.config.hydra.sweep.dir}")
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        params: List[Any] = []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        with outcome.stops_on_interrupt():
            try:
                jobs = executor.map_array(self, *zip(*params))
            except submitit.core.utils.FailedJobError as exc:  # sbatch said no: resources the cluster lacks
                print(f"xentlab: error: SLURM refused the sweep's jobs: {str(exc).strip().splitlines()[-1]}",
                      file=sys.stderr, flush=True)
                sys.exit(ConfigError.exit_code)
            try:
                return self.collect(jobs, job_overrides, initial_job_idx)
            except BaseException:
                from xentlab import cluster

                log.error("stopped: cancelling %d SLURM job(s) of this sweep", len(jobs))
                cluster.cancel({job.job_id.split("_")[0] for job in jobs})
                raise

    def collect(self, jobs: list, job_overrides: Sequence[Sequence[str]], first: int) -> list[JobReturn]:
        """Each job's result as it comes; a job gone from the queue without one is failed."""
        from xentlab import cluster, tracking

        results: dict[int, JobReturn] = {}
        gone_since: dict[int, float] = {}
        parent = os.environ.get(tracking.ENV_PARENT)
        store = tracking.client() if parent else None
        every = min(HEARTBEAT_S, float(self.config.logger.get("stale_after", HEARTBEAT_S)) / 5)
        next_queue = next_beat = time.monotonic()
        while len(results) < len(jobs):
            for i, job in enumerate(jobs):
                if i not in results and job.paths.result_pickle.exists():
                    results[i] = self.result(job, job_overrides[i], first + i)
            now = time.monotonic()
            if now >= next_queue and len(results) < len(jobs):
                states = cluster.queue({job.job_id.split("_")[0] for job in jobs}, array_form=True)
                for i, job in enumerate(jobs):
                    if i in results or states is None or states.get(job.job_id) in cluster.LIVE:
                        continue
                    if now - gone_since.setdefault(i, now) >= GRACE_S and not job.paths.result_pickle.exists():
                        results[i] = self.no_result(job, job_overrides[i], first + i)
                next_queue = now + QUEUE_POLL_S
            if store is not None and now >= next_beat:
                tracking.heartbeat(store, [parent])
                next_beat = now + every
            if len(results) < len(jobs):
                time.sleep(POLL_S)
        return [results[i] for i in range(len(jobs))]

    def result(self, job, overrides: Sequence[str], num: int) -> JobReturn:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        try:
            return job.results()[0]
        except UncompletedJobError:
            return self.no_result(job, overrides, num)
        except FailedJobError as exc:  # raised outside xentlab's own policy (e.g. the job could not start)
            last = [line for line in str(exc).splitlines() if line.strip()][-1:] or ["?"]
            return self.failed(overrides, num, f"SLURM job {job.job_id} failed: {last[0]}")

    def no_result(self, job, overrides: Sequence[str], num: int) -> JobReturn:
        from xentlab import cluster

        return self.failed(overrides, num, f"no result: killed? (SLURM job {job.job_id}: "
                                           f"{cluster.job_state(job.job_id)}; log {job.paths.stderr})")

    def failed(self, overrides: Sequence[str], num: int, reason: str) -> JobReturn:
        """The record of a job that did not return one: written into its folder, as the job would have."""
        from xentlab.sweep import write_record

        log.error("job #%d: %s", num, reason)
        record = {"job": num, "overrides": list(overrides), "status": "failed", "reason": reason}
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.num = num
        write_record(Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir), record)
        return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=record)
