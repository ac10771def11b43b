"""Checkpoints and ``resume=``: an interrupted run goes on where it stopped, in the same
MLflow run, and ends with the same metrics as an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from xentlab import checkpoints
from xentlab.errors import ConfigError

from conftest import DATA_ROOT, ROOT, run_xentlab, runs_in

CONFIG = {"task": {"name": "mnist"}, "activation": {"name": "softmax"}, "loss": {"name": "sparse_cce"},
          "model": {"name": "mlp", "hidden": [256, 128]}, "optimizer": {"name": "adam", "lr": 0.001}, "seed": 0,
          "seeds": None, "data": {"batch_size": 128, "subset": None, "val_size": 5000},
          "trainer": {"compile": False, "precision": "32-true", "max_epochs": 5}}


def fake_checkpoint(path: Path, config=CONFIG, run_id="0" * 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, checkpoints.KEY: {"config": config, "run_id": run_id}}, path)
    return path


def no_run(run_id):
    raise AssertionError("not a run id")


def test_resume_by_file_or_directory(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "out" / "checkpoints" / "last.ckpt")
    longer = {**CONFIG, "trainer": {**CONFIG["trainer"], "max_epochs": 9}}  # more epochs: still the same run
    for where in (ckpt, tmp_path / "out", ckpt.parent):
        r = checkpoints.load(str(where), longer, no_run)
        assert (r.path, r.run_id, r.epochs_done) == (ckpt, "0" * 32, 2)


def test_resume_by_run_id_uses_its_checkpoint_tag(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "last.ckpt")
    run_id = "a" * 32
    assert checkpoints.load(run_id, CONFIG, {run_id: str(ckpt)}.get).path == ckpt
    with pytest.raises(ConfigError, match="has no checkpoint tag"):
        checkpoints.load("b" * 32, CONFIG, {}.get)
    with pytest.raises(ConfigError, match="checkpoint .*gone"):
        checkpoints.load(run_id, CONFIG, {run_id: str(tmp_path / "deleted.ckpt")}.get)


def test_resume_refuses_another_experiment_naming_the_differences(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "last.ckpt")
    other = {**CONFIG, "loss": {"name": "cce"}, "seed": 3}
    with pytest.raises(ConfigError, match=r"different experiment.*loss: checkpoint has \{'name': 'sparse_cce'\}"
                                          r".*this command has \{'name': 'cce'\}; seed: checkpoint has 0"):
        checkpoints.load(str(ckpt), other, no_run)


@pytest.mark.parametrize("bad, message", [
    ("nonsense", "neither a checkpoint file, a run directory nor an MLflow run id"),
    ("EMPTY_DIR", "no last.ckpt"),
    ("NOT_OURS", "not a xentlab checkpoint"),
    ("GARBAGE", "cannot read checkpoint"),
])
def test_bad_resume_values_are_named(tmp_path, bad, message):
    (tmp_path / "empty").mkdir()
    torch.save({"epoch": 0}, tmp_path / "plain.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint")
    value = {"EMPTY_DIR": tmp_path / "empty", "NOT_OURS": tmp_path / "plain.ckpt",
             "GARBAGE": tmp_path / "garbage.ckpt"}.get(bad, bad)
    with pytest.raises(ConfigError, match=message):
        checkpoints.load(str(value), CONFIG, no_run)


@pytest.mark.slow
def test_resume_with_seeds_is_refused_before_training(tmp_path):
    out = run_xentlab("seeds=[0,1]", "resume=" + "a" * 32, "logger=none", cwd=tmp_path)
    assert out.returncode == 2 and "resume works for one run at a time" in out.stderr


RUN = ("task=mnist", "loss=sparse_cce", "data.subset=6000", "data.batch_size=16", "trainer.log_every_n_steps=100")


@pytest.mark.slow
def test_interrupted_run_resumes_into_the_same_mlflow_run_with_the_same_result(mnist_root, store, tmp_path):
    epochs = "trainer.max_epochs=4"
    straight = run_xentlab(*RUN, epochs, f"logger.tracking_uri={store}", "logger.experiment=straight",
                           cwd=tmp_path / "a")
    assert straight.returncode == 0, straight.stderr[-3000:]

    # Same run, stopped by SIGTERM once its first end-of-epoch checkpoint is written.
    out_dir = tmp_path / "b" / "outputs"
    (tmp_path / "b").mkdir()
    cmd = [sys.executable, str(ROOT / "run.py"), *RUN, epochs, f"data.root={DATA_ROOT}", "trainer.progress_bar=false",
           f"logger.tracking_uri={store}", "logger.experiment=interrupted", f"hydra.run.dir={out_dir}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path / "b", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        if "epoch 1/4" in line:  # logged at the end of the first epoch, just before its checkpoint
            break
    last = out_dir / "checkpoints" / "last.ckpt"
    for _ in range(600):  # Lightning writes checkpoints atomically: once it exists, it is whole
        if last.is_file():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, rest[-2000:]
    assert (out_dir / "checkpoints" / "last.ckpt").is_file()  # the last checkpoint is kept
    client, runs = runs_in(store)
    (killed,) = [r for r in runs if r.data.tags["task"] == "mnist" and r.info.status == "KILLED"]
    run_id = killed.info.run_id

    resumed = run_xentlab(*RUN, epochs, f"logger.tracking_uri={store}", "logger.experiment=interrupted",
                          f"resume={run_id}", cwd=tmp_path / "c")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"logging into MLflow run {run_id}" in resumed.stdout + resumed.stderr
    client, runs = runs_in(store)
    assert len(runs) == 2  # the uninterrupted run and the resumed one: no third run
    by_exp = {client.get_experiment(r.info.experiment_id).name: r for r in runs}
    done, ref = by_exp["interrupted"], by_exp["straight"]
    assert done.info.run_id == run_id and done.info.status == "FINISHED"
    assert done.data.tags["resumed"] == "1" and done.data.tags["resumed_after"] == "KILLED"
    assert "error" not in done.data.tags
    assert [m.step for m in client.get_metric_history(run_id, "val/acc")] == [0, 1, 2, 3]
    for key in ("test/acc", "test/loss", "val/loss", "train/loss"):
        assert done.data.metrics[key] == pytest.approx(ref.data.metrics[key], rel=1e-4, abs=1e-5), key


@pytest.mark.slow
def test_finished_run_extended_by_path_equals_a_longer_run(mnist_root, tmp_path):
    quick = (*RUN[:2], "data.subset=2000", "logger=none")
    longer = run_xentlab(*quick, "trainer.max_epochs=3", cwd=tmp_path / "a")
    short = run_xentlab(*quick, "trainer.max_epochs=2", cwd=tmp_path / "b")
    assert longer.returncode == 0 and short.returncode == 0, short.stderr[-3000:]
    extended = run_xentlab(*quick, "trainer.max_epochs=3", f"resume={tmp_path / 'b' / 'outputs'}", cwd=tmp_path / "c")
    assert extended.returncode == 0, extended.stderr[-3000:]

    def test_table(out):
        return [line for line in out.stdout.splitlines() if "test/" in line]
    assert test_table(extended) == test_table(longer) and test_table(extended)
