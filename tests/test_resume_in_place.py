"""A job stopped at any moment is taken up again in place by ``resume=auto``: one FINISHED run
per cell, in the MLflow run the stopped job had created (whether or not it left a checkpoint),
with the metrics of a sweep that was never stopped.

The moments are hit exactly, not raced: the sweep runs under a small wrapper that sends its own
process the signal from inside xentlab (right after the run is created, at a training step of
epoch 0 or 1, in the test pass)."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA_ROOT, ROOT, runs_in

STOPS_ITSELF = """
import os, runpy, signal, sys
moment, sig, script, *argv = sys.argv[1:]

def stop():
    os.kill(os.getpid(), getattr(signal, sig))

if moment == "created":
    from xentlab.tracking import store
    create = store.create_run
    def create_run(client, experiment, name, tags):
        run_id = create(client, experiment, name, tags)
        if tags.get("sweep") != "parent":  # a job's run, not the sweep's
            stop()
        return run_id
    store.create_run = create_run
else:
    from xentlab.module import Classifier
    hook, epoch = {"epoch0": ("training_step", 0), "epoch1": ("training_step", 1), "test": ("test_step", None)}[moment]
    original = getattr(Classifier, hook)
    def step(self, batch, batch_idx):
        if batch_idx == 2 and epoch in (None, self.current_epoch):
            stop()
        return original(self, batch, batch_idx)
    setattr(Classifier, hook, step)
sys.argv = [script, *argv]
runpy.run_path(script, run_name="__main__")
"""

SWEEP = ("-m", "task=binary", "loss=bce,mse", "seed=0", "data.subset=1000", "data.batch_size=64",
         "trainer.max_epochs=2", f"data.root={DATA_ROOT}", "trainer.progress_bar=false")


def sweep(*extra: str, cwd: Path, store: str, stop: tuple[str, str] | None = None) -> subprocess.CompletedProcess:
    cwd.mkdir()
    wrapper = [sys.executable, "-c", STOPS_ITSELF, *stop] if stop else [sys.executable]
    cmd = [*wrapper, str(ROOT / "run.py"), *SWEEP, *extra, f"logger.tracking_uri={store}",
           f"hydra.sweep.dir={cwd}/multirun"]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, dict[str, float]]:
    """Each cell's metrics from the same sweep, never stopped."""
    where = tmp_path_factory.mktemp("uninterrupted")
    store = f"sqlite:///{where / 'mlflow.db'}"
    out = sweep(cwd=where / "run", store=store)
    assert out.returncode == 0, out.stderr[-3000:]
    return {r.data.tags["loss"]: r.data.metrics for r in runs_in(store)[1] if r.data.tags.get("sweep") != "parent"}


@pytest.mark.slow
@pytest.mark.parametrize("moment, sig", [("created", "SIGKILL"), ("epoch0", "SIGKILL"), ("epoch1", "SIGKILL"),
                                         ("test", "SIGKILL"), ("created", "SIGTERM")])
def test_a_job_stopped_at_any_moment_goes_on_in_its_own_run(uninterrupted, store, tmp_path, moment, sig):
    stopped = sweep(cwd=tmp_path / "first", store=store, stop=(moment, sig))
    assert stopped.returncode != 0
    if sig == "SIGKILL":
        assert stopped.returncode == -signal.SIGKILL, stopped.stderr[-3000:]
    _, runs = runs_in(store)
    before = {r.info.run_id for r in runs}
    assert len(before) == 2  # the sweep's parent and the stopped job's run (loss=bce)

    again = sweep("resume=auto", cwd=tmp_path / "again", store=store)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "xentlab sweep: 2 ran, 0 skipped, 0 failed" in again.stdout
    client, runs = runs_in(store)
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3  # nothing RUNNING or KILLED left
    assert {r.info.run_id for r in runs} >= before  # the same runs went on; one was added, for loss=mse
    cells = {r.data.tags["loss"]: r for r in runs if r.data.tags.get("sweep") != "parent"}
    assert sorted(cells) == ["bce", "mse"]
    taken_up = cells["bce"]
    assert taken_up.info.run_id in before and taken_up.data.tags["resumed_after"] == "KILLED"
    assert taken_up.data.params["loss.name"] == "bce"  # logged even when the stop came before the params
    from xentlab import tracking

    assert [step for step, _ in tracking.curve(client.get_metric_history(taken_up.info.run_id, "val/acc"))] == [0, 1]
    for loss, run in cells.items():
        for key in ("test/acc", "test/loss", "val/loss"):
            assert run.data.metrics[key] == pytest.approx(uninterrupted[loss][key], rel=1e-4, abs=1e-6), (loss, key)
