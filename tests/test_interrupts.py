"""Ctrl-C and SIGTERM end every run KILLED with exit code 130 wherever they land: never inside
an MLflow write (``interrupts.deferred``), and a stuck MLflow queue does not hold the end."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from xentlab import interrupts, outcome, tracking
from xentlab.tracking import lifecycle
from xentlab.tracking.lightning import Heartbeat

from conftest import ROOT, ctrl_c_enabled, runs_in

DESCRIPTION = lifecycle.RunDescription("r", {"task": "mnist"}, {"seed": 0}, "seed: 0\n")
# Many small steps, each one logged: MLflow's async queue is busy all the time.
STEPS = ("data.subset=600", "data.val_size=200", "data.batch_size=16", "trainer.max_epochs=1000",
         "trainer.log_every_n_steps=1", "trainer.progress_bar=false")
HANG = 20  # seconds from the signal to the exit that count as hung


def send_to_self(sig: int) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.05)  # the handler has run by now


def test_ctrl_c_inside_deferred_is_raised_on_leaving_and_the_handlers_come_back():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            with interrupts.deferred():  # re-entrant: only the outermost block delivers
                send_to_self(signal.SIGINT)
                finished.append("inner")
            finished.append("outer")
    assert finished == ["inner", "outer"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with interrupts.deferred():  # no signal: nothing is raised
        pass
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_second_ctrl_c_is_not_held():
    """A write that never returns can still be interrupted: the second Ctrl-C raises at once."""
    before = signal.getsignal(signal.SIGINT)
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            send_to_self(signal.SIGINT)
            reached.append("after the first")
            send_to_self(signal.SIGINT)
            reached.append("after the second")
    assert reached == ["after the first"] and signal.getsignal(signal.SIGINT) == before


def test_sigterm_inside_deferred_raises_terminated_on_leaving():
    with pytest.raises(interrupts.Terminated), interrupts.sigterm_raises():
        with interrupts.deferred():
            send_to_self(signal.SIGTERM)


def test_sigterm_in_a_slurm_job_fails_that_job_and_the_sweep_goes_on(monkeypatch):
    for var, value in (("SLURM_JOB_ID", "41"), ("SLURM_ARRAY_JOB_ID", "40"), ("SLURM_ARRAY_TASK_ID", "1"),
                       ("SUBMITIT_EXECUTOR", "slurm")):
        monkeypatch.setenv(var, value)
    before = signal.getsignal(signal.SIGTERM)
    with outcome.job({"job": 3}, sweeping=True) as record:
        send_to_self(signal.SIGTERM)
    assert record == {"job": 3, "status": "failed", "run_id": None,
                      "reason": "Terminated: SIGTERM in SLURM job 40_1 (scancel, time limit or preemption)"}
    assert signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(SystemExit) as stop:  # run.py alone in a job: the job is over, exit 130
        with outcome.job({}, sweeping=False):
            send_to_self(signal.SIGTERM)
    assert stop.value.code == 130


@pytest.mark.parametrize("inside", ["no SLURM job", "a sweep inside one sbatch script"])
def test_sigterm_outside_a_submitted_cluster_job_stops_the_sweep(monkeypatch, inside):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    if inside == "no SLURM job":
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    else:
        monkeypatch.setenv("SLURM_JOB_ID", "41")
    with pytest.raises(SystemExit) as stop:
        with outcome.job({}, sweeping=True):
            send_to_self(signal.SIGTERM)
    assert stop.value.code == 130


def test_deferred_changes_nothing_outside_the_main_thread():
    seen = []

    def body():
        with interrupts.deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert seen == [signal.getsignal(signal.SIGINT)]


def test_heartbeats_and_metrics_finish_their_mlflow_writes_before_ctrl_c(store, monkeypatch):
    written = []

    class Client:
        def log_batch(self, run_id, **kwargs):
            if not written:  # one Ctrl-C (a second one is not held: test_a_second_ctrl_c_is_not_held)
                send_to_self(signal.SIGINT)
            written.append(run_id)

    with pytest.raises(KeyboardInterrupt):
        Heartbeat(Client(), ["run", "parent"]).beat()
    assert written == ["run", "parent"]

    with pytest.raises(KeyboardInterrupt):
        with lifecycle.tracked_run(tracking.check_store(store), "writes", DESCRIPTION) as run:
            log_batch = run.logger.experiment.log_batch

            def interrupted_write(*args, **kwargs):
                if len(written) == 2:  # one Ctrl-C, in the first of the two writes
                    send_to_self(signal.SIGINT)
                log_batch(*args, **kwargs)
                written.append(kwargs["metrics"][0].key)

            monkeypatch.setattr(run.logger.experiment, "log_batch", interrupted_write)
            run.logger.log_metrics({"train/loss_step": 1.0, "val/acc_epoch": 0.5, "epoch": 0}, step=3)
    assert written[2:] == ["train/loss_step", "val/acc"]
    assert tracking.client(store).get_run(run.run_id).info.status == "KILLED"


def test_a_stuck_mlflow_queue_does_not_hold_the_end_of_an_interrupted_run_or_sweep(store, monkeypatch):
    monkeypatch.setattr(tracking.store, "FLUSH_TIMEOUT", 0.5)
    monkeypatch.setattr(tracking.store, "_stuck", set())
    uri = tracking.check_store(store)
    monkeypatch.setenv(tracking.ENV_URI, uri)
    client = tracking.client(uri)
    parent = tracking.create_run(client, "stuck", "sweep", {"sweep": "parent"})
    queue = None
    try:
        with pytest.raises(KeyboardInterrupt) as raised:
            with lifecycle.tracked_run(uri, "stuck", DESCRIPTION) as run:
                run.heartbeat.beat()  # MLflow's async queue is running
                # what an interrupt between a lock's acquire and its `with` block leaves behind
                queue = run.client._tracking_client.store._async_logging_queue._queue
                queue.mutex.acquire()
                start = time.monotonic()
                raise KeyboardInterrupt
        tracking.end_sweep_if_running(parent, "KILLED")
        took = time.monotonic() - start
    finally:
        if queue is not None:
            queue.mutex.release()  # MLflow's threads can finish
    assert took < 5
    killed = client.get_run(raised.value.xentlab_run_id)
    assert killed.info.status == "KILLED" and killed.info.end_time and killed.data.tags["error"] == "KeyboardInterrupt"
    assert client.get_run(parent).info.status == "KILLED"


def interrupt(cwd, store, mnist_root, sig, delay, overrides) -> tuple[int, float, str]:
    """``run.py`` with ``overrides``, sent ``sig`` ``delay`` seconds after its first epoch line:
    (exit code, seconds from the signal to the exit, output)."""
    cmd = [sys.executable, str(ROOT / "run.py"), *overrides, *STEPS, f"data.root={mnist_root}",
           f"logger.tracking_uri={store}", f"hydra.run.dir={cwd}/outputs", f"hydra.sweep.dir={cwd}/multirun"]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"},
                            preexec_fn=ctrl_c_enabled)
    watchdog = threading.Timer(300, proc.kill)  # hung before its first epoch: fail, don't hang
    watchdog.start()
    try:
        head = []
        for line in proc.stdout:
            head.append(line)
            if "epoch 1/" in line:
                break
        time.sleep(delay)
        proc.send_signal(sig)
        sent = time.monotonic()
        try:
            rest = proc.communicate(timeout=HANG)[0]
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            rest = proc.communicate()[0]
        return proc.returncode, time.monotonic() - sent, "".join(head) + rest
    finally:
        watchdog.cancel()


@pytest.mark.slow
@pytest.mark.parametrize("sig, delay, overrides", [
    *[pytest.param(signal.SIGINT, delay, (), id=f"ctrl_c_{delay}s") for delay in (0, 0.05, 0.1, 0.2, 0.4, 0.8)],
    pytest.param(signal.SIGTERM, 0, (), id="sigterm"),
    pytest.param(signal.SIGINT, 0, ("-m", "hydra/launcher=batched", "seed=0,1"), id="batched"),
])
def test_an_interrupt_anywhere_in_an_epoch_ends_every_run_killed(mnist_root, store, tmp_path, sig, delay, overrides):
    code, seconds, output = interrupt(tmp_path, store, mnist_root, sig, delay, overrides)
    assert code == interrupts.EXIT_CODE and seconds < HANG, output[-5000:]
    _, runs = runs_in(store)
    assert len(runs) == (3 if overrides else 1)  # batched: both members and the sweep's parent
    assert {r.info.status for r in runs} == {"KILLED"}, output[-3000:]
    error = "Terminated: SIGTERM" if sig == signal.SIGTERM else "KeyboardInterrupt"
    assert {r.data.tags.get("error") for r in runs if r.data.tags.get("sweep") != "parent"} == {error}
