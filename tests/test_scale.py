"""Beyond one process: submitit launchers (SLURM config, local executor) and Lightning DDP."""

import pytest
from hydra import compose, initialize_config_dir

from xentlab.registration import register

from conftest import ROOT, run_xentlab, runs_in


def test_slurm_launcher_config_composes_against_submitits_schema():
    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                           "hydra.launcher.account=lab"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.xentlab_submitit.slurm_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.account, launcher.gpus_per_node,
            launcher.tasks_per_node) == ("gpu", "lab", 1, 1)
    assert launcher.timeout_min > 0 and launcher.mem_gb > 0


def test_slurm_cpu_preset_asks_for_no_gpu_and_takes_overrides():
    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm_cpu", "hydra.launcher.mem_gb=8"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.xentlab_submitit.slurm_launcher.SlurmLauncher"
    assert (launcher.gpus_per_node, launcher.cpus_per_task, launcher.mem_gb) == (None, 1, 8)


@pytest.mark.slow
def test_sweep_through_submitits_local_executor(mnist_root, store, tmp_path):
    out = run_xentlab("-m", "hydra/launcher=submitit_local", "task=binary", "loss=bce,mse,sparse_cce",
                      "data.subset=1000", "trainer.max_epochs=1", f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Submitit 'local' sweep" in out.stdout + out.stderr
    assert "xentlab sweep: 3 ran, 0 skipped, 0 failed" in out.stdout
    _, runs = runs_in(store)
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["loss"] for r in jobs) == ["bce", "mse", "sparse_cce"]
    assert parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" and r.data.metrics["test/acc"] > 0.5 for r in jobs)
    assert len(list((tmp_path / "multirun").glob(".submitit/*/*_result.pkl"))) == 3  # submitit really ran them


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_logs_once_from_rank_zero(mnist_root, store, tmp_path):
    out = run_xentlab("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "task=mnist",
                      "data.subset=2000", "trainer.max_epochs=2", f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    # each rank trains on its half: 1000 examples, 8 batches of 128
    assert "training started: 8 steps per epoch on cpu x 2 processes" in text
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in text
    assert text.count("epoch 2/2 ") == 1  # one progress line per epoch, from rank 0
    client, runs = runs_in(store)
    (run,) = runs  # rank 1 created no run of its own
    assert run.info.status == "FINISHED" and run.data.params["trainer.strategy"] == "ddp"
    for key in ("train/loss", "val/acc", "val/loss"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1], key
    assert len(client.get_metric_history(run.info.run_id, "test/acc")) == 1
    assert run.data.metrics["test/acc"] > 0.8
