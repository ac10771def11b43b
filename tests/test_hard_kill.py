"""Nothing lost when no handler runs: ``kill -9`` of a sweep, then ``resume=auto``; stale
RUNNING runs found and ended; many processes creating one new store at once."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from xentlab import tracking
from xentlab.errors import ConfigError
from xentlab.tracking.lightning import Heartbeat

from conftest import DATA_ROOT, ROOT, runs_in


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def make_run(client, experiment_id, *, status="RUNNING", tags=None, params=None):
    run = client.create_run(experiment_id, tags=tags or {})
    for k, v in (params or {}).items():
        client.log_param(run.info.run_id, k, v)
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return client.get_run(run.info.run_id)


@pytest.fixture
def client(store):
    return tracking.client(store)


def test_stale_means_process_gone_here_or_heartbeat_old_elsewhere(client):
    exp = client.create_experiment("e")
    here, now = socket.gethostname(), time.time()

    def reason(tags, status="RUNNING"):
        return tracking.stale_reason(make_run(client, exp, status=status, tags=tags), stale_after=600, now=now)

    pid = dead_pid()
    assert reason({"host": here, "pid": str(pid)}) == f"its process {pid} on {here} is gone"
    assert reason({"host": here, "pid": str(os.getpid()), "heartbeat": str(now - 10_000)}) is None  # alive here
    assert reason({"host": "elsewhere", "pid": str(pid), "heartbeat": str(now - 60)}) is None
    assert reason({"host": "elsewhere", "pid": "1", "heartbeat": str(now - 601)}).startswith("no heartbeat for 601 s")
    assert reason({"host": here, "pid": str(pid)}, status="KILLED") is None  # only RUNNING runs can be stale
    # a run from before heartbeats: its start time counts
    assert tracking.stale_reason(make_run(client, exp), stale_after=600, now=now + 601) is not None
    assert tracking.stale_reason(make_run(client, exp), stale_after=600, now=now + 60) is None


def test_a_zombie_process_counts_as_gone(client):
    child = subprocess.Popen(["true"])  # exits at once; not reaped until wait()
    for _ in range(200):
        if Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.01)
    run = make_run(client, client.create_experiment("z"), tags={"host": socket.gethostname(), "pid": str(child.pid)})
    assert tracking.stale_reason(run, stale_after=600) is not None
    child.wait()


IDENTITY = {"task": {"name": "binary"}, "loss": {"name": "bce"}, "seed": 1}
PARAMS = {"task.name": "binary", "loss.name": "bce", "seed": "1"}


def test_previous_run_prefers_finished_then_the_newest_with_a_checkpoint_then_one_without(client, store, tmp_path):
    exp = client.create_experiment("prev")
    assert tracking.previous_run(store, "prev", IDENTITY, 600) is None
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"x")
    here = {"host": socket.gethostname()}
    make_run(client, exp, status="KILLED", params={**PARAMS, "seed": "2"}, tags={"checkpoint": str(ckpt)})  # other seed
    failed = make_run(client, exp, status="FAILED", params=PARAMS)  # no checkpoint: trains again, in this run
    found = tracking.previous_run(store, "prev", IDENTITY, 600)
    assert (found.run_id, found.status, found.checkpoint) == (failed.info.run_id, "FAILED", None)
    unlogged = make_run(client, exp, status="KILLED", tags={"identity": tracking.identity_key(IDENTITY)})  # no params
    found = tracking.previous_run(store, "prev", IDENTITY, 600)
    assert (found.run_id, found.status, found.checkpoint) == (unlogged.info.run_id, "KILLED", None)  # the newest
    stale = make_run(client, exp, params=PARAMS, tags={**here, "pid": str(dead_pid()), "checkpoint": str(ckpt)})
    found = tracking.previous_run(store, "prev", IDENTITY, 600)
    assert (found.run_id, found.status, found.checkpoint) == (stale.info.run_id, "KILLED", str(ckpt))
    ended = client.get_run(stale.info.run_id)
    assert ended.info.status == "KILLED" and ended.data.tags["error"].startswith("stale: its process")

    live = make_run(client, exp, params=PARAMS, tags={**here, "pid": str(os.getpid())})
    with pytest.raises(ConfigError, match=f"run {live.info.run_id} of this configuration is still RUNNING"):
        tracking.previous_run(store, "prev", IDENTITY, 600)
    client.set_terminated(live.info.run_id, "FINISHED")
    client.log_metric(live.info.run_id, "test/acc", 0.75)
    found = tracking.previous_run(store, "prev", IDENTITY, 600)
    assert (found.run_id, found.status, found.metrics) == (live.info.run_id, "FINISHED", {"test/acc": 0.75})


def test_heartbeat_moves_on_and_reaches_the_sweep_parent(client, store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # flushing sets it; put it back afterwards
    exp = client.create_experiment("beat")
    run, parent = make_run(client, exp), make_run(client, exp)
    beat = Heartbeat(client, [run.info.run_id, parent.info.run_id], every=60)
    before = time.time()
    beat.beat()
    tracking.flush(store)
    for r in (run, parent):
        assert before - 1 <= float(client.get_run(r.info.run_id).data.tags["heartbeat"]) <= time.time() + 1


def test_a_store_mlflow_cannot_open_is_named_in_one_line(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(tracking.TrackingUnavailable, match=f"MLflow cannot open the tracking store sqlite:///{db}: "):
        tracking.check_store(f"sqlite:///{db}")


def test_stale_script_lists_by_default_and_ends_on_request(client, store, capsys):
    exp = client.create_experiment("s")
    stale = make_run(client, exp, tags={"host": socket.gethostname(), "pid": str(dead_pid())})
    live = make_run(client, exp, tags={"host": socket.gethostname(), "pid": str(os.getpid())})
    from xentlab.tracking import stale as script
    assert script.main(["--tracking-uri", store]) == 0
    out = capsys.readouterr().out
    assert stale.info.run_id in out and live.info.run_id not in out and "dry run" in out
    assert client.get_run(stale.info.run_id).info.status == "RUNNING"
    assert script.main(["--tracking-uri", store, "--experiment", "s", "--end"]) == 0
    assert client.get_run(stale.info.run_id).info.status == "KILLED"
    assert client.get_run(live.info.run_id).info.status == "RUNNING"
    assert script.main(["--tracking-uri", store, "--experiment", "nope"]) == 2
    assert "no experiment 'nope' in this store; experiments: s, Default" in capsys.readouterr().err


SWEEP = ("-m", "task=binary", "loss=bce,mse", "seed=0,1", "data.subset=2000", "data.batch_size=32",
         "trainer.max_epochs=2", "trainer.log_every_n_steps=100", f"data.root={DATA_ROOT}",
         "trainer.progress_bar=false")


def xentlab_cmd(*overrides, cwd: Path):
    return [sys.executable, str(ROOT / "run.py"), *overrides, f"hydra.sweep.dir={cwd}/multirun",
            f"hydra.run.dir={cwd}/outputs"]


def ran(*overrides, cwd: Path) -> subprocess.CompletedProcess:
    """``python run.py <overrides>`` run to its end in a new folder ``cwd``; it must exit 0."""
    cwd.mkdir()
    out = subprocess.run(xentlab_cmd(*overrides, cwd=cwd), cwd=cwd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def started(*overrides, cwd: Path) -> tuple[subprocess.Popen, list[str]]:
    """``python run.py <overrides>`` started in a new folder ``cwd``, and its output as it comes
    (the pipe kept drained, so the test can kill it at the moment it chooses)."""
    cwd.mkdir()
    proc = subprocess.Popen(xentlab_cmd(*overrides, cwd=cwd), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines


@pytest.mark.slow
def test_sweep_killed_hard_goes_on_with_resume_auto(mnist_root, store, tmp_path):
    first = tmp_path / "first"
    proc, lines = started(*SWEEP, f"logger.tracking_uri={store}", cwd=first)
    ckpt = first / "multirun" / "1" / "checkpoints" / "last.ckpt"
    for _ in range(6000):  # job #1 (loss=bce seed=1): killed the moment its first checkpoint exists
        if ckpt.is_file():
            break
        time.sleep(0.01)
    assert ckpt.is_file(), "".join(lines)[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    client, runs = runs_in(store)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "RUNNING", "RUNNING"]  # job 0, job 1, parent
    (done_before,) = [r for r in runs if r.info.status == "FINISHED"]

    out = ran(*SWEEP, f"logger.tracking_uri={store}", "resume=auto", cwd=tmp_path / "again")
    assert "xentlab sweep: 4 ran, 0 skipped, 0 failed" in out.stdout
    assert "(1 of those ran earlier" in out.stdout
    client, runs = runs_in(store)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    assert parent.info.status == "FINISHED" and parent.data.tags["resumed"] == "1"
    cells = {(r.data.tags["loss"], r.data.tags["seed"]): r for r in runs if r.data.tags.get("sweep") != "parent"}
    assert len(runs) == 5 and len(cells) == 4  # one run per cell, no extra run anywhere
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent.info.run_id
               for r in cells.values())
    first_job = cells[("bce", "0")]
    assert first_job.info.run_id == done_before.info.run_id  # not retrained: same run, one value per epoch
    assert [m.step for m in client.get_metric_history(first_job.info.run_id, "val/acc")] == [0, 1]
    resumed = cells[("bce", "1")]
    assert resumed.data.tags["resumed"] == "1" and resumed.data.tags["resumed_after"] == "KILLED"
    assert [m.step for m in client.get_metric_history(resumed.info.run_id, "val/acc")] == [0, 1]

    solo = subprocess.run(xentlab_cmd(*[o for o in SWEEP if o not in ("-m", "loss=bce,mse", "seed=0,1")],
                                      "loss=bce", "seed=1", f"logger.tracking_uri={store}", "logger.experiment=solo",
                                      cwd=tmp_path / "solo"), capture_output=True, text=True, timeout=600)
    assert solo.returncode == 0, solo.stderr[-3000:]
    client, runs = runs_in(store)
    (reference,) = [r for r in runs if client.get_experiment(r.info.experiment_id).name == "solo"]
    for key in ("test/acc", "test/loss", "test/nll", "val/loss"):
        assert resumed.data.metrics[key] == pytest.approx(reference.data.metrics[key], rel=1e-4, abs=1e-6), key


BATCHED = ("-m", "hydra/launcher=batched", "hydra.launcher.max_members=4", "task=binary", "loss=bce,mse",
           "seed=0,1,2", "optimizer.lr=1e-3,3e-3", "data.subset=2000", "data.batch_size=32", "trainer.max_epochs=2",
           "trainer.checkpoint=false", "trainer.log_every_n_steps=100", f"data.root={DATA_ROOT}",
           "trainer.progress_bar=false")


@pytest.mark.slow
def test_batched_sweep_killed_hard_after_its_first_model_trains_only_the_rest_with_resume_auto(store, tmp_path):
    proc, lines = started(*BATCHED, f"logger.tracking_uri={store}", cwd=tmp_path / "first")
    finished: list = []
    for _ in range(3000):  # killed the moment the first model's four runs are FINISHED
        if (store_file := Path(store.removeprefix("sqlite:///"))).is_file():
            finished = [r for r in runs_in(store)[1] if r.info.status == "FINISHED"]
            if len(finished) >= 4:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert store_file.is_file() and len(finished) >= 4, "".join(lines)[-3000:]
    client, runs = runs_in(store)
    finished = {r.info.run_id for r in runs if r.info.status == "FINISHED"}
    assert len(finished) < 12 and [r for r in runs if r.info.status == "RUNNING"]  # killed mid-sweep
    before = {r.info.run_id for r in runs}

    out = ran(*BATCHED, f"logger.tracking_uri={store}", "resume=auto", cwd=tmp_path / "again")
    assert "xentlab sweep: 12 ran, 0 skipped, 0 failed" in out.stdout
    assert f"({len(finished)} of those ran earlier" in out.stdout
    client, runs = runs_in(store)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    assert parent.info.status == "FINISHED" and parent.data.tags["resumed"] == "1"
    members = [r for r in runs if r is not parent]
    cells = {(r.data.params["loss.name"], r.data.params["seed"], r.data.params["optimizer.lr"]) for r in members}
    assert len(cells) == len(members) == 12  # one run per configuration: the killed model's runs were taken up
    assert all(r.info.status == "FINISHED" for r in members)
    assert before <= {r.info.run_id for r in runs}
    assert finished <= {r.info.run_id for r in members if r.data.tags.get("resumed") is None}  # not trained again
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in members)


@pytest.mark.slow
def test_batched_model_killed_hard_goes_on_from_its_checkpoint_in_its_runs_with_resume_auto(store, tmp_path):
    sweep = ("-m", "hydra/launcher=batched", "task=binary", "loss=bce,mse", "seed=0,1", "data.subset=2000",
             "data.batch_size=32", "trainer.max_epochs=3", "trainer.log_every_n_steps=100", f"data.root={DATA_ROOT}",
             "trainer.progress_bar=false", f"logger.tracking_uri={store}")
    first = tmp_path / "first"
    proc, lines = started(*sweep, cwd=first)
    ckpt = first / "multirun" / "0" / "checkpoints" / "last.ckpt"  # the model's first member keeps it
    for _ in range(6000):
        if ckpt.is_file():
            break
        time.sleep(0.01)
    time.sleep(0.2)  # let the first epoch's checkpoint be written whole
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert ckpt.is_file(), "".join(lines)[-3000:]
    client, runs = runs_in(store)
    killed = {r.info.run_id for r in runs if r.data.tags.get("sweep") != "parent"}
    assert len(killed) == 4 and all(r.info.status == "RUNNING" for r in runs)

    out = ran(*sweep, "resume=auto", cwd=tmp_path / "again")
    assert "xentlab sweep: 4 ran, 0 skipped, 0 failed" in out.stdout and "ran earlier" not in out.stdout
    ran(*sweep, "logger.experiment=uninterrupted", cwd=tmp_path / "ref")
    client, runs = runs_in(store)
    names = {r.info.experiment_id: client.get_experiment(r.info.experiment_id).name for r in runs}
    resumed = {r.info.run_id: r for r in runs if names[r.info.experiment_id] != "uninterrupted"
               and r.data.tags.get("sweep") != "parent"}
    assert set(resumed) == killed  # the same four runs went on: none created, none left RUNNING
    uninterrupted = {(r.data.tags["loss"], r.data.tags["seed"]): r for r in runs
                     if names[r.info.experiment_id] == "uninterrupted" and r.data.tags.get("sweep") != "parent"}
    for run in resumed.values():
        assert run.info.status == "FINISHED" and run.data.tags["resumed_after"] == "KILLED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [0, 1, 2]
        assert Path(run.data.tags["checkpoint"]).is_relative_to(tmp_path / "again")  # where a next resume starts
        twin = uninterrupted[(run.data.tags["loss"], run.data.tags["seed"])]
        for key in ("test/acc", "test/loss", "val/loss"):
            assert run.data.metrics[key] == pytest.approx(twin.data.metrics[key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_four_runs_started_together_on_a_new_folder(mnist_root, tmp_path):
    """No logger.tracking_uri: each process creates MLflow's default ./mlflow.db, all at once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "XENTLAB_"))}
    procs = [subprocess.Popen(xentlab_cmd("task=binary", "loss=bce", f"seed={i}", "data.subset=500",
                                          "trainer.max_epochs=1", f"data.root={DATA_ROOT}",
                                          "trainer.progress_bar=false", cwd=tmp_path / f"job{i}"),
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for i in range(4)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(o[-1500:] for o in outs)
    _, runs = runs_in(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert sorted((r.info.status, r.data.tags["seed"]) for r in runs) == [("FINISHED", str(i)) for i in range(4)]
