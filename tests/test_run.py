"""``python run.py`` end to end, read back from a real MLflow store."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA_ROOT, ROOT, ctrl_c_enabled, run_xentlab, runs_in

QUICK = ("data.subset=512", "trainer.max_epochs=2", "trainer.log_every_n_steps=2")


def test_run_lands_in_mlflow_with_config_tags_and_curves(mnist_root, store, tmp_path):
    out = run_xentlab("task=mnist", "loss=bce", *QUICK, f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "questionable combination: activation=sigmoid loss=bce" in out.stdout + out.stderr
    client, runs = runs_in(store)
    (run,) = runs
    assert run.info.status == "FINISHED" and run.info.run_name == "mnist-sigmoid-bce-s0"
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "xentlab-mnist"
    tags = run.data.tags
    assert (tags["task"], tags["activation"], tags["loss"], tags["combination_status"]) == (
        "mnist", "sigmoid", "bce", "questionable")
    assert tags["device"] == "cpu" and "mlflow.source.git.commit" in tags
    params = run.data.params
    assert params["loss.name"] == "bce" and params["data.subset"] == "512" and params["optimizer.lr"] == "0.001"
    assert_test_metrics_match_sklearn_on_the_final_weights(run, tmp_path / "outputs" / "checkpoints" / "last.ckpt")
    assert run.data.metrics["test/acc"] > 0.2  # 512 examples, 2 epochs: well above chance (0.1)
    epochs = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")]
    assert epochs == [0, 1]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss_step")]
    assert len(steps) == 4 and steps == sorted(steps)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 1]
    config = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    assert "name: bce" in open(config).read()


def assert_test_metrics_match_sklearn_on_the_final_weights(run, checkpoint):
    """Rebuild the network from the run's last checkpoint, predict MNIST's test split, and
    score it with scikit-learn: the logged test metrics must be those numbers."""
    from sklearn.metrics import accuracy_score, log_loss
    from torch import nn

    from xentlab.config import DataConfig, TaskConfig
    from xentlab.tasks import mnist as mnist_task

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                        nn.Linear(128, 10))
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    test = mnist_task.build(TaskConfig(name="mnist"), DataConfig(root=str(DATA_ROOT))).test
    with torch.no_grad():
        q = torch.sigmoid(net(test.x).double())
    q = (q / q.sum(1, keepdim=True)).numpy()  # sigmoid outputs on multiclass: the renormalised distribution
    y = test.y.numpy()
    m = run.data.metrics
    assert m["test/acc"] == pytest.approx(accuracy_score(y, q.argmax(1)), abs=1e-6)
    assert m["test/nll"] == pytest.approx(log_loss(y, q, labels=range(10)), rel=1e-4)
    assert m["test/brier"] == pytest.approx(((q - np.eye(10)[y]) ** 2).sum(1).mean(), rel=1e-4)


def test_invalid_cell_exits_before_training_with_the_choices(store, tmp_path):
    start = time.perf_counter()
    out = run_xentlab("task=multilabel", "loss=sparse_cce", f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 2
    assert "xentlab: error: activation=softmax with loss=sparse_cce is invalid for task=multilabel" in out.stderr
    assert "several tags cannot be one integer" in out.stderr and "loss=bce (questionable)" in out.stderr
    assert "Traceback" not in out.stderr and "epoch" not in out.stdout
    assert not (tmp_path / "mlflow.db").exists() or not runs_in(store)[1]
    assert time.perf_counter() - start < 60


def test_linear_outputs_with_bce_refused_with_a_hint(store, tmp_path):
    out = run_xentlab("activation=none", "loss=bce", f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 2 and "use sigmoid" in out.stderr and "loss=mse (valid)" in out.stderr


def test_divergence_ends_the_run_failed_with_the_step(mnist_root, store, tmp_path):
    out = run_xentlab("loss=mse", "activation=none", "optimizer.name=sgd", "optimizer.lr=1e6", *QUICK,
                      f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 1 and "training diverged" in out.stderr and "Traceback" not in out.stderr
    (run,) = runs_in(store)[1]
    assert (run.info.status == "FAILED"
            and "NonFiniteLoss: loss became NaN or infinite at step" in run.data.tags["error"])


@pytest.mark.parametrize("logger", ["mlflow", "none"])
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 130)])
def test_interrupt_marks_the_run_killed(mnist_root, store, tmp_path, sig, code, logger):
    """Exit code 130 whatever the logger; with MLflow the run ends KILLED."""
    cmd = [sys.executable, str(ROOT / "run.py"), f"data.root={DATA_ROOT}", "trainer.progress_bar=false",
           "data.subset=5000", "trainer.max_epochs=50", f"logger={logger}", f"logger.tracking_uri={store}",
           f"hydra.run.dir={tmp_path}/outputs"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={"PYTHONUNBUFFERED": "1", **__import__("os").environ}, preexec_fn=ctrl_c_enabled)
    for line in proc.stdout:  # wait until training is under way
        if "epoch 1/50" in line:
            break
    proc.send_signal(sig)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == code, rest[-2000:]
    if logger == "mlflow":
        (run,) = runs_in(store)[1]
        assert run.info.status == "KILLED"
    else:
        assert not Path(store.removeprefix("sqlite:///")).exists()


@pytest.mark.slow
def test_readme_main_command_reaches_97_percent(mnist_root, store, tmp_path):
    start = time.perf_counter()
    out = run_xentlab("task=mnist", "loss=sparse_cce", f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert time.perf_counter() - start < 300
    (run,) = runs_in(store)[1]
    assert run.data.metrics["test/acc"] >= 0.97


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ("task=binary", "loss=bce"),
    ("task=multilabel", "loss=bce"),
    ("task=mnist", "loss=cce"),
    ("task=binary", "loss=sparse_cce"),
    ("task=multilabel", "loss=mse"),
    ("task=multilabel", "activation=softmax", "loss=bce"),
    ("task=binary", "activation=none", "loss=mse", "model=cnn"),
])
def test_each_task_and_loss_runs_and_reads_back(mnist_root, store, tmp_path, overrides):
    out = run_xentlab(*overrides, "data.subset=5000", "trainer.max_epochs=1", "task.train_size=5000"
                      if "task=multilabel" in overrides else "seed=0", f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = runs_in(store)[1]
    assert run.info.status == "FINISHED"
    kind = run.data.tags["task_kind"]
    key = "test/subset_acc" if kind == "multilabel" else "test/acc"
    chance = {"binary": 0.5, "multiclass": 0.1, "multilabel": 0.0}[kind]
    assert run.data.metrics[key] > chance
    if run.data.tags["activation"] == "none":
        assert "test/nll" not in run.data.metrics and "not probabilities" in run.data.tags["metrics_note"]

