"""The fast path (Lightning module on device-resident index batches) computes exactly what
a plain PyTorch loop over the same batches computes."""

import copy

import pytest

import pytorch_lightning as pl
import torch

from xentlab import losses
from xentlab.config import OptimizerConfig
from xentlab.data import DeviceData, TensorBatches
from xentlab.module import Classifier
from xentlab.tasks import Split, Splits


def test_lightning_path_matches_a_bare_loop_step_for_step():
    torch.manual_seed(0)
    x = torch.randn(256, 1, 4, 4)
    labels = torch.randint(0, 3, (256,))
    targets = losses.encode_targets("cce", labels, 3)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    bare = copy.deepcopy(net)
    opt_cfg = OptimizerConfig(lr=0.01)
    module = Classifier(net, kind="multiclass", num_classes=3, loss="cce", activation="softmax",
                        label_smoothing=0.1, numerics="stable", optimizer=opt_cfg, check_every=1)
    split = Split(x, labels)
    data = DeviceData(Splits(split, split, split), targets, targets, targets, batch_size=32, eval_batch_size=64, seed=5)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=data)

    opt = torch.optim.Adam(bare.parameters(), lr=0.01)
    bare_losses = []
    batches = TensorBatches((x, labels, targets), 32, shuffle=True, seed=5)
    for _ in range(2):
        for batch_x, _, batch_t in batches:
            loss = torch.nn.functional.cross_entropy(bare(batch_x), batch_t * 0.9 + 0.1 / 3)
            opt.zero_grad()
            loss.backward()
            opt.step()
            bare_losses.append(loss.detach())
    assert trainer.global_step == 16
    for p, q in zip(module.net.parameters(), bare.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(module.epoch_loss(), torch.stack(bare_losses[8:]).mean(), rtol=1e-5, atol=1e-6)


def test_seed_batched_runs_equal_each_seed_trained_alone(mnist_root, tmp_path):
    """seeds=[0,1,2] trains one batched model; each seed's MLflow run matches seed=k alone."""
    from conftest import run_xentlab, runs_in

    quick = ("task=binary", "loss=bce", "data.subset=1000", "data.val_size=1000", "trainer.max_epochs=2",
             "trainer.log_every_n_steps=4")
    batched_store, alone_store = (f"sqlite:///{tmp_path / n}" for n in ("batched.db", "alone.db"))
    out = run_xentlab(*quick, "seeds=[0,1,2]", f"logger.tracking_uri={batched_store}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    out = run_xentlab("-m", *quick, "seed=1,2", f"logger.tracking_uri={alone_store}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client, batched = runs_in(batched_store)
    alone_client, alone = runs_in(alone_store)
    assert sorted(r.data.tags["seed"] for r in batched) == ["0", "1", "2"]
    assert all(r.data.tags["seed_batch"] == "0,1,2" and r.info.status == "FINISHED" for r in batched)
    for solo in (r for r in alone if r.data.tags.get("sweep") != "parent"):
        (twin,) = [r for r in batched if r.data.tags["seed"] == solo.data.tags["seed"]]
        assert twin.data.params["seed"] == solo.data.params["seed"] and twin.info.run_name == solo.info.run_name
        for key in ("test/acc", "test/nll", "test/brier", "val/loss"):
            assert twin.data.metrics[key] == pytest.approx(solo.data.metrics[key], rel=1e-4, abs=1e-5), key
        mine = [m.value for m in client.get_metric_history(twin.info.run_id, "train/loss_step")]
        theirs = [m.value for m in alone_client.get_metric_history(solo.info.run_id, "train/loss_step")]
        assert len(mine) == len(theirs) == 4 and mine == pytest.approx(theirs, rel=1e-4)


@pytest.mark.slow
def test_benchmark_script_runs_and_writes_its_ratios(mnist_root, tmp_path):
    import json
    import subprocess
    import sys

    from conftest import ROOT

    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--batch-sizes", "1024", "--rounds", "1",
                          "--seeds", "2", "--skip", "dataloader", "startup", "--data-root", str(mnist_root),
                          "--json", str(tmp_path / "b.json")], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "b.json").read_text())
    batch = result["batches"]["1024"]
    ratios = batch["ratios"]
    assert set(ratios) == {"b/a", "mlflow_overhead", "mlflow_write_share", "seed_batched_speedup"}
    # each figure is the best of its measured epochs, and each ratio is made of those figures
    for key, per in (("a_bare", 1), ("b_xentlab", 1), ("d_xentlab_mlflow", 1), ("e_seed_batched_per_model", 2)):
        assert len(batch[key]["all"]) == 1 and batch[key]["s_per_epoch"] == pytest.approx(min(batch[key]["all"]) / per)
    assert ratios["b/a"] == pytest.approx(batch["b_xentlab"]["s_per_epoch"] / batch["a_bare"]["s_per_epoch"])
    assert ratios["mlflow_overhead"] == pytest.approx(
        batch["d_xentlab_mlflow"]["s_per_epoch"] / batch["b_xentlab"]["s_per_epoch"] - 1)
    assert ratios["seed_batched_speedup"] == pytest.approx(
        batch["b_xentlab"]["s_per_epoch"] / batch["e_seed_batched_per_model"]["s_per_epoch"])
    assert 0 < ratios["mlflow_write_share"] < 1  # a share of the training time of the same runs
    assert [row["classes"] for row in result["sparse_vs_one_hot"]] == [10, 1000, 10000]
    assert "b/a" in out.stdout


@pytest.mark.slow
def test_compiled_network_trains_like_the_eager_one(mnist_root, tmp_path):
    from conftest import run_xentlab, runs_in

    quick = ("task=mnist", "data.subset=1000", "data.val_size=1000", "trainer.max_epochs=1")
    for flag in ("false", "true"):
        out = run_xentlab(*quick, f"trainer.compile={flag}", f"logger.tracking_uri=sqlite:///{tmp_path}/{flag}.db",
                          cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
    eager = runs_in(f"sqlite:///{tmp_path}/false.db")[1][0]
    compiled = runs_in(f"sqlite:///{tmp_path}/true.db")[1][0]
    assert compiled.data.params["trainer.compile"] == "True"
    for key in ("test/acc", "test/nll", "val/loss"):
        assert compiled.data.metrics[key] == pytest.approx(eager.data.metrics[key], rel=2e-3, abs=1e-3), key
