"""The fast path (Lightning module on device-resident index batches) computes exactly what
a plain PyTorch loop over the same batches computes."""

import copy

import pytest
import pytorch_lightning as pl
import torch

from xentlab import losses
from xentlab.config import OptimizerConfig
from xentlab.data import DeviceData, TensorBatches
from xentlab.module import Classifier, MemberSettings
from xentlab.tasks import Split, Splits


def test_lightning_path_matches_a_bare_loop_step_for_step():
    torch.manual_seed(0)
    x = torch.randn(256, 1, 4, 4)
    labels = torch.randint(0, 3, (256,))
    targets = losses.encode_targets("cce", labels, 3)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    bare = copy.deepcopy(net)
    opt_cfg = OptimizerConfig(lr=0.01)
    module = Classifier([net], [MemberSettings("cce", "softmax", label_smoothing=0.1, lr=opt_cfg.lr)],
                        kind="multiclass", num_classes=3, optimizer="adam", check_every=1)
    split = Split(x, labels)
    data = DeviceData(Splits(split, split, split), {s: (targets,) for s in ('train', 'val', 'test')}, batch_size=32,
                      eval_batch_size=64, seed=5)
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
    torch.testing.assert_close(module.epoch_loss()[0], torch.stack(bare_losses[8:]).mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
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
    import statistics
    import subprocess
    import sys

    from conftest import ROOT

    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--batch-sizes", "1024", "--rounds", "2",
                          "--seeds", "2", "--skip", "dataloader", "startup", "--data-root", str(mnist_root),
                          "--json", str(tmp_path / "b.json")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "b.json").read_text())
    batch = result["batches"]["1024"]
    ratios = batch["ratios"]
    assert set(ratios) == {"b/a", "b-a ms/step", "d/b-1", "mlflow_write_share", "b/e"}

    def rounds(key):
        return batch[key]["per_round"]

    # every column and ratio is the median, min and max of its own rounds, and each round's
    # ratio is made of that round's figures
    for entry in [*(batch[k] for k in ("a_bare", "b_xentlab", "d_xentlab_mlflow", "e_seed_batched_per_model")),
                  *ratios.values()]:
        assert len(entry["per_round"]) == 2
        assert (entry["median"], entry["min"], entry["max"]) == pytest.approx(
            (statistics.median(entry["per_round"]), min(entry["per_round"]), max(entry["per_round"])))
    a, b, d, e = (rounds(k) for k in ("a_bare", "b_xentlab", "d_xentlab_mlflow", "e_seed_batched_per_model"))
    assert ratios["b/a"]["per_round"] == pytest.approx([q / p for p, q in zip(a, b)])
    assert ratios["b-a ms/step"]["per_round"] == pytest.approx([1000 * (q - p) / 54  # 55000/1024
                                                                for p, q in zip(a, b)])
    assert ratios["d/b-1"]["per_round"] == pytest.approx([q / p - 1 for p, q in zip(b, d)])
    assert ratios["b/e"]["per_round"] == pytest.approx([p / q for p, q in zip(b, e)])
    assert all(0 < s < 1 for s in ratios["mlflow_write_share"]["per_round"])  # a share of the same run's training
    sparse = result["sparse_vs_one_hot"]
    assert [row["classes"] for row in sparse] == [10, 1000, 10000]
    # target sizes: one-hot float32 rows vs int64 labels, 512 examples
    assert [row["cce_target_mib"] for row in sparse] == pytest.approx([512 * c * 4 / 2**20 for c in (10, 1000, 10000)])
    assert all(row["sparse_cce_target_mib"] == pytest.approx(512 * 8 / 2**20) for row in sparse)
    for row in sparse:
        dense, sp = row["cce_ms_per_step"]["per_round"], row["sparse_cce_ms_per_step"]["per_round"]
        assert row["cce/sparse"]["per_round"] == pytest.approx([p / q for p, q in zip(dense, sp)])
    assert "b/a" in out.stdout and "| 1024 | " in out.stdout  # the markdown tables of docs/benchmarks.md


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
