"""Sweeps on a real SLURM cluster (scripts/ci/slurm-up.sh; .ci/run starts one): the CPU preset,
jobs cancelled mid-run, past their time limit or killed without a word, the submitting process
stopped, held jobs, refused resources, batched models as cluster jobs, stale runs asked of the
scheduler. What the scheduler did is read back from squeue and sacct, what the runs did from
the MLflow store."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import DATA_ROOT, ROOT, run_xentlab, runs_in

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """Asked only when a test here runs: sinfo waits ~10 s for a controller that is not there."""
    try:
        up = shutil.which("sinfo") and subprocess.run(["sinfo"], capture_output=True, timeout=5).returncode == 0
    except subprocess.TimeoutExpired:
        up = False
    if not up:
        pytest.skip("no SLURM cluster answers (scripts/ci/slurm-up.sh starts one)")


# 4 jobs of a few seconds' training each: long enough to be cancelled while they train
SWEEP = ("-m", "hydra/launcher=slurm_cpu", "task=binary", "loss=bce,mse", "seed=0,1", "data.subset=1000",
         "trainer.max_epochs=4")


def children(runs):
    return [r for r in runs if r.data.tags.get("sweep") != "parent"]


def parent_of(runs):
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    return parent


def sacct(array_job: str, settle: float = 60) -> dict[str, str]:
    """sacct's final state of each task of an array job, by its unique job id. A task's result
    reaches submitit before the task has ended, and the accounting records its end later still:
    wait up to ``settle`` seconds for every task to leave PENDING and RUNNING."""
    deadline = time.time() + settle
    while True:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobIDRaw,State", "-j", array_job],
                             capture_output=True, text=True, check=True).stdout
        states = dict(line.split("|") for line in out.splitlines())
        if not {"PENDING", "RUNNING", "COMPLETING"} & set(states.values()) or time.time() > deadline:
            return states
        time.sleep(0.5)


def queued(array_job: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", array_job], capture_output=True, text=True).stdout
    return out.split()


def start(*overrides: str, cwd) -> tuple[subprocess.Popen, list[str]]:
    """The sweep as a background process, its output collected as it comes."""
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *overrides, f"data.root={DATA_ROOT}",
                             "trainer.progress_bar=false", f"hydra.sweep.dir={cwd}/multirun"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines


def training_run(store: str, lines: list[str], timeout: float = 300):
    """The first child run that is RUNNING and has finished an epoch (so it trains now)."""
    from xentlab import tracking

    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(store[len("sqlite:///"):]):
            client = tracking.client(store)
            for exp in tracking.experiment_ids(client):
                for run in tracking.search_all(client, [exp], "attributes.status = 'RUNNING'"):
                    if "slurm_job_id" in run.data.tags and "val/acc" in run.data.metrics:
                        return run
        time.sleep(0.3)
    raise AssertionError("no run started training:\n" + "".join(lines)[-3000:])


def test_four_job_sweep_through_the_cpu_preset(mnist_root, store, tmp_path):
    out = run_xentlab(*SWEEP, f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "xentlab sweep: 4 ran, 0 skipped, 0 failed" in out.stdout
    _, runs = runs_in(store)
    parent, kids = parent_of(runs), children(runs)
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_ran"] == "4"
    assert len(kids) == 4 and all(r.info.status == "FINISHED" for r in kids)
    assert {(r.data.tags["loss"], r.data.tags["seed"]) for r in kids} == {("bce", "0"), ("bce", "1"), ("mse", "0"),
                                                                         ("mse", "1")}
    # each run names its own SLURM job, and sacct knows that job as one task of the sweep's array
    (array_job,) = {r.data.tags["slurm_array_job_id"] for r in kids}
    assert sacct(array_job) == {r.data.tags["slurm_job_id"]: "COMPLETED" for r in kids}
    assert sorted(r.data.tags["slurm_array_task_id"] for r in kids) == ["0", "1", "2", "3"]
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    name = next(line.split("=", 1)[1].strip() for line in config.splitlines() if line.startswith("ClusterName"))
    assert {r.data.tags["slurm_cluster"] for r in kids} == {name}


def test_a_cancelled_job_is_a_failed_job_and_resume_auto_trains_only_it(mnist_root, store, tmp_path):
    proc, lines = start(*SWEEP, f"logger.tracking_uri={store}", cwd=tmp_path / "first")
    victim = training_run(store, lines)
    tags = victim.data.tags
    task = f"{tags['slurm_array_job_id']}_{tags['slurm_array_task_id']}"  # SLURM 22.05's scancel wants this form
    subprocess.run(["scancel", task], check=True)
    assert proc.wait(timeout=600) == 0, "".join(lines)[-3000:]
    text = "".join(lines)
    assert "xentlab sweep: 3 ran, 0 skipped, 1 failed" in text, text[-3000:]
    cell = f"loss={victim.data.tags['loss']} seed={victim.data.tags['seed']}"
    assert f"  {cell}: Terminated: SIGTERM in SLURM job {task} (scancel, time limit or preemption)" in text
    client, runs = runs_in(store)
    parent, kids = parent_of(runs), {r.info.run_id: r for r in children(runs)}
    assert parent.info.status == "FINISHED"
    assert kids.pop(victim.info.run_id).info.status == "KILLED"
    assert len(kids) == 3 and all(r.info.status == "FINISHED" for r in kids.values())
    assert sacct(tags["slurm_array_job_id"])[tags["slurm_job_id"]].startswith("CANCELLED")

    again = run_xentlab(*SWEEP, f"logger.tracking_uri={store}", "resume=auto", cwd=tmp_path / "again")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "xentlab sweep: 4 ran, 0 skipped, 0 failed" in again.stdout
    assert "(3 of those ran earlier" in again.stdout
    client, runs = runs_in(store)
    assert parent_of(runs).info.run_id == parent.info.run_id and len(runs) == 5  # one sweep, one run per cell
    resumed = client.get_run(victim.info.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.tags["resumed_after"] == "KILLED"
    assert [m.step for m in client.get_metric_history(victim.info.run_id, "val/acc")] == [0, 1, 2, 3]
    for run_id, before in kids.items():  # the others were not trained again
        assert client.get_run(run_id).info.end_time == before.info.end_time


def test_stopping_the_submitting_process_cancels_the_sweeps_jobs(mnist_root, store, tmp_path):
    proc, lines = start(*SWEEP, f"logger.tracking_uri={store}", cwd=tmp_path)
    running = training_run(store, lines)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130, "".join(lines)[-3000:]
    array_job = running.data.tags["slurm_array_job_id"]
    for _ in range(120):
        if not queued(array_job):
            break
        time.sleep(0.5)
    assert queued(array_job) == []
    assert set(sacct(array_job).values()) <= {"COMPLETED", "CANCELLED by 0"}  # none left to run on
    client, runs = runs_in(store)
    assert parent_of(runs).info.status == "KILLED"
    assert client.get_run(running.info.run_id).info.status == "KILLED"  # its job's SIGTERM ended it


def test_a_job_past_its_time_limit_ends_killed_and_the_sweep_goes_on(mnist_root, store, tmp_path):
    # submitit's warning signal (signal_delay_s before the limit) must not end the run; SLURM's SIGTERM at it does
    out = run_xentlab(*SWEEP[:4], "seed=0", "trainer.max_epochs=1000", "hydra.launcher.timeout_min=1",
                      "hydra.launcher.signal_delay_s=20", f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "xentlab sweep: 0 ran, 0 skipped, 2 failed" in out.stdout
    client, runs = runs_in(store)
    assert parent_of(runs).info.status == "FINISHED"
    for run in children(runs):
        task = f"{run.data.tags['slurm_array_job_id']}_{run.data.tags['slurm_array_task_id']}"
        assert sacct(run.data.tags["slurm_array_job_id"])[run.data.tags["slurm_job_id"]] == "TIMEOUT"
        assert run.info.status == "KILLED" and run.data.tags["error"] == (
            f"Terminated: SIGTERM in SLURM job {task} (scancel, time limit or preemption)")
        assert run.data.metrics["val/acc"] > 0.5  # it trained until the limit


def test_a_job_killed_without_a_word_is_counted_failed_and_its_run_ended(mnist_root, store, tmp_path):
    proc, lines = start(*SWEEP[:4], "seed=0", *SWEEP[5:], f"logger.tracking_uri={store}", cwd=tmp_path)
    victim = training_run(store, lines)
    tags = victim.data.tags
    task = f"{tags['slurm_array_job_id']}_{tags['slurm_array_task_id']}"
    os.kill(int(tags["pid"]), signal.SIGKILL)  # the job's process, as the out-of-memory killer would (one node)
    assert proc.wait(timeout=600) == 0, "".join(lines)[-3000:]
    text = "".join(lines)
    assert "xentlab sweep: 1 ran, 0 skipped, 1 failed" in text, text[-3000:]
    assert f"  loss={tags['loss']}: no result: killed? (SLURM job {task}: " in text
    client, runs = runs_in(store)
    assert parent_of(runs).info.status == "FINISHED"
    killed = client.get_run(victim.info.run_id)  # nothing in the job could end it: the scheduler says it is gone
    assert killed.info.status == "KILLED"
    assert killed.data.tags["error"].startswith(f"stale: its SLURM job {tags['slurm_job_id']} has ended (")


def test_held_jobs_keep_the_parent_alive_until_the_sweep_is_stopped(store, tmp_path):
    proc, lines = start(*SWEEP[:4], "seed=0", "+hydra.launcher.additional_parameters.hold=true",
                        "logger.stale_after=10", f"logger.tracking_uri={store}", cwd=tmp_path)
    beats, deadline = set(), time.time() + 120
    try:
        while proc.poll() is None and time.time() < deadline:  # the held job waits; the parent's heartbeat moves on
            _, runs = runs_in(store) if os.path.exists(store[len("sqlite:///"):]) else (None, [])
            beats |= {r.data.tags["heartbeat"] for r in runs if r.data.tags.get("sweep") == "parent"}
            if len(beats) >= 3:
                break
            time.sleep(0.5)
        assert len(beats) >= 3, "".join(lines)[-3000:]
        (array_job,) = {p.name for p in (tmp_path / "multirun" / ".submitit").iterdir() if "_" not in p.name}
        assert subprocess.run(["squeue", "-h", "-o", "%T", "-j", array_job], capture_output=True,
                              text=True).stdout.split() == ["PENDING"]
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(timeout=120) == 130, "".join(lines)[-3000:]
    assert queued(array_job) == []  # held jobs never ran: cancelled at once
    _, runs = runs_in(store)
    assert [r.info.status for r in runs] == ["KILLED"]  # the parent, and no run of a job


def test_resources_the_cluster_lacks_are_refused_in_one_line(store, tmp_path):
    cpus = os.cpu_count() + 1
    out = run_xentlab(*SWEEP[:4], "seed=0", f"hydra.launcher.cpus_per_task={cpus}", f"logger.tracking_uri={store}",
                      cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == ("xentlab: error: SLURM refused the sweep's jobs: sbatch: error: "
                                                   "Batch job submission failed: More processors requested than "
                                                   "permitted")
    _, runs = runs_in(store)
    assert [r.info.status for r in runs] == ["KILLED"]  # the parent; no job ran


def test_batched_groups_as_cluster_jobs_match_the_in_process_batched_launcher(mnist_root, tmp_path):
    grid = ("-m", "hydra/launcher=batched", "task=binary", "loss=bce,mse", "seed=0", "trainer.max_epochs=1,2",
            "data.subset=500")  # two models (max_epochs differs), two members each
    cluster_store, here_store = f"sqlite:///{tmp_path / 'cluster.db'}", f"sqlite:///{tmp_path / 'here.db'}"
    out = run_xentlab(*grid, "hydra.launcher.executor=slurm", "hydra.launcher.slurm.cpus_per_task=1",
                      "hydra.launcher.slurm.mem_gb=4", f"logger.tracking_uri={cluster_store}", cwd=tmp_path / "cluster")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "xentlab sweep: 4 ran, 0 skipped, 0 failed" in out.stdout
    here = run_xentlab(*grid, f"logger.tracking_uri={here_store}", cwd=tmp_path / "here")
    assert here.returncode == 0, here.stderr[-3000:]
    _, runs = runs_in(cluster_store)
    parent, kids = parent_of(runs), children(runs)
    assert parent.info.status == "FINISHED" and len(kids) == 4 and all(r.info.status == "FINISHED" for r in kids)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in kids)
    # one cluster job per model: members of a model share their job, sacct saw two jobs complete
    jobs = {r.data.params["trainer.max_epochs"]: r.data.tags["slurm_job_id"] for r in kids}
    assert len(set(jobs.values())) == 2
    assert {r.data.tags["slurm_job_id"] for r in kids if r.data.params["trainer.max_epochs"] == "2"} == {jobs["2"]}
    (array_job,) = {r.data.tags["slurm_array_job_id"] for r in kids}
    assert set(sacct(array_job).items()) == {(job, "COMPLETED") for job in jobs.values()}
    _, reference = runs_in(here_store)

    def cell(r):
        return r.data.tags["loss"], r.data.params["trainer.max_epochs"]

    expected = {cell(r): r.data.metrics for r in children(reference)}
    assert len(expected) == 4 and "slurm_job_id" not in children(reference)[0].data.tags
    for r in kids:
        for key in ("test/acc", "test/loss", "test/nll", "val/loss"):
            assert r.data.metrics[key] == pytest.approx(expected[cell(r)][key], rel=1e-4, abs=1e-6), (cell(r), key)


def test_stale_script_asks_the_scheduler_about_runs_from_cluster_jobs(store, capsys):
    from xentlab import tracking
    from xentlab.tracking import stale as script

    def sbatch(*args: str) -> str:
        return subprocess.run(["sbatch", "--parsable", "--mem=100M", "-o", "/dev/null", *args], capture_output=True,
                              text=True, check=True).stdout.strip()

    ended, running = sbatch("--wait", "--wrap", "true"), sbatch("--wrap", "sleep 300")
    try:
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
        name = next(line.split("=", 1)[1].strip() for line in config.splitlines() if line.startswith("ClusterName"))
        client = tracking.client(store)
        runs = {what: tracking.create_run(client, "s", what, {"slurm_job_id": job, "slurm_cluster": cluster})
                for what, job, cluster in (("ended", ended, name), ("live", running, name),
                                           ("elsewhere", ended, "another"))}
        # each has a fresh heartbeat and this (live) process's pid: only the scheduler can tell the ended one
        assert script.main(["--tracking-uri", store]) == 0
        out = capsys.readouterr().out
        assert f"{runs['ended']}  ended" in out and f"its SLURM job {ended} has ended (COMPLETED)" in out
        assert runs["live"] not in out and runs["elsewhere"] not in out  # a job id of another cluster: no answer here
    finally:
        subprocess.run(["scancel", running])


def test_a_cancelled_batched_cluster_job_fails_its_members_only(mnist_root, store, tmp_path):
    proc, lines = start("-m", "hydra/launcher=batched", "hydra.launcher.executor=slurm",
                        "hydra.launcher.slurm.cpus_per_task=1", "hydra.launcher.slurm.mem_gb=4", "task=binary",
                        "loss=bce,mse", "seed=0", "trainer.max_epochs=6,8", "data.subset=1000",
                        f"logger.tracking_uri={store}", cwd=tmp_path)
    victim = training_run(store, lines)
    tags, epochs = victim.data.tags, victim.data.params["trainer.max_epochs"]
    task = f"{tags['slurm_array_job_id']}_{tags['slurm_array_task_id']}"
    subprocess.run(["scancel", task], check=True)
    assert proc.wait(timeout=600) == 0, "".join(lines)[-3000:]
    text = "".join(lines)
    assert "xentlab sweep: 2 ran, 0 skipped, 2 failed" in text, text[-3000:]
    for loss in ("bce", "mse"):  # both members of the cancelled model
        assert (f"  loss={loss} trainer.max_epochs={epochs}: ClusterJobFailed: Terminated: SIGTERM in SLURM job "
                f"{task} (scancel, time limit or preemption)") in text
    _, runs = runs_in(store)
    assert parent_of(runs).info.status == "FINISHED"
    by_job = {r.data.tags["slurm_job_id"]: [] for r in children(runs)}
    for r in children(runs):
        by_job[r.data.tags["slurm_job_id"]].append(r.info.status)
    assert sorted(by_job.pop(tags["slurm_job_id"])) == ["KILLED", "KILLED"]  # the cancelled model's members
    assert list(by_job.values()) == [["FINISHED", "FINISHED"]]  # the other model trained on
