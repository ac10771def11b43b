"""Hydra multirun sweeps: skipped and failed cells, parent runs, parallel jobs, Optuna,
and the comparison report, all read back from a real MLflow store."""

import json
import sys

import pytest

from xentlab.report import compare

from conftest import ROOT, ctrl_c_enabled, run_xentlab, runs_in

TINY = ("data.subset=300", "data.val_size=500", "trainer.max_epochs=2", "trainer.log_every_n_steps=1")
TINY_MOSAICS = ("task.train_size=300", "task.test_size=300")


def children_of(runs, parent_id):
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]


@pytest.fixture(scope="module")
def multilabel_grid(mnist_root, tmp_path_factory):
    """The issue's grid: every loss x activation on multilabel, seed 0 (tiny data)."""
    cwd = tmp_path_factory.mktemp("grid")
    store = f"sqlite:///{cwd / 'mlflow.db'}"
    out = run_xentlab("-m", "task=multilabel", "loss=bce,cce,sparse_cce,mse", "activation=sigmoid,softmax,none",
                      "seed=0", *TINY, *TINY_MOSAICS, f"logger.tracking_uri={store}", cwd=cwd)
    return out, store, cwd


def test_grid_skips_invalid_cells_and_groups_runs_under_a_parent(multilabel_grid):
    out, store, _ = multilabel_grid
    assert out.returncode == 0, out.stderr[-3000:]
    assert "xentlab sweep: 7 ran, 5 skipped, 0 failed" in out.stdout
    skipped = out.stdout.split("skipped:\n")[1]
    for cell in ("loss=sparse_cce activation=sigmoid", "loss=sparse_cce activation=softmax",
                 "loss=sparse_cce activation=none", "loss=bce activation=none", "loss=cce activation=none"):
        assert cell in skipped
    assert "several tags cannot be one integer" in skipped and "outputs are not probabilities" in skipped
    client, runs = runs_in(store)
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    kids = children_of(runs, parent.info.run_id)
    assert parent.info.status == "FINISHED" and len(kids) == 7 and len(runs) == 8
    assert {(r.data.tags["activation"], r.data.tags["loss"]) for r in kids} == {
        ("sigmoid", "bce"), ("sigmoid", "cce"), ("sigmoid", "mse"), ("softmax", "bce"), ("softmax", "cce"),
        ("softmax", "mse"), ("none", "mse")}
    assert all(r.info.status == "FINISHED" for r in kids)
    summary = json.loads(open(client.download_artifacts(parent.info.run_id, "sweep_summary.json")).read())
    assert summary["counts"] == {"ran": 7, "skipped": 5, "failed": 0}
    assert parent.data.tags["sweep_skipped"] == "5"


def test_compare_report_matches_the_store(multilabel_grid, tmp_path):
    _, store, _ = multilabel_grid
    client, runs = runs_in(store)
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    tables = compare.compare(tracking_uri=store, parent=parent.info.run_id, out=tmp_path / "rep")
    for name in ("report.html", "report.md", "summary.json", "curves_multilabel.png"):
        assert (tmp_path / "rep" / name).stat().st_size > 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "data:image/png;base64," in html and "never on their raw loss values" in html
    table = tables["multilabel"]
    assert len(table["rows"]) == 7 and table["rank_by"] == "subset_acc"
    kids = {(r.data.tags["activation"], r.data.tags["loss"]): r for r in children_of(runs, parent.info.run_id)}
    for row in table["rows"]:
        run = kids[(row["activation"], row["loss"])]
        for col in ("subset_acc", "micro_f1", "map"):
            if row["activation"] == "none" and col == "map":  # mAP ranks by probabilities: not logged there
                assert row[col] is None and f"test/{col}" not in run.data.metrics
            else:
                assert row[col]["mean"] == pytest.approx(run.data.metrics[f"test/{col}"])
        assert row["status"] == run.data.tags["combination_status"]
    ranked = [r["subset_acc"]["mean"] for r in table["rows"]]
    assert ranked == sorted(ranked, reverse=True)
    best_map = max((i for i in range(7) if table["rows"][i]["map"]), key=lambda i: table["rows"][i]["map"]["mean"])
    assert best_map in table["best"]["map"] and "★" in (tmp_path / "rep" / "report.md").read_text()
    # the grid: every activation x loss cell, refused ones marked with their reason on hover
    assert (tmp_path / "rep" / "grid_multilabel.png").stat().st_size > 0 and "multilabel grid" in html
    assert "<td title='sigmoid + sparse_cce: invalid: several tags cannot be one integer'" in html
    for row in table["rows"]:
        cell = table["grid"][f"{row['activation']}/{row['loss']}"]
        assert cell["mean"] == pytest.approx(kids[(row["activation"], row["loss"])].data.metrics["test/subset_acc"])
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert "comparison/report.html" in arts


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(mnist_root, store, tmp_path):
    out = run_xentlab("-m", "task=binary", "loss=mse", "activation=none", "optimizer.name=sgd",
                      "optimizer.lr=1e6,0.01", *TINY, f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "xentlab sweep: 1 ran, 0 skipped, 1 failed" in out.stdout
    assert "optimizer.lr=1000000.0: NonFiniteLoss: loss became NaN or infinite" in out.stdout
    _, runs = runs_in(store)
    statuses = sorted(r.info.status for r in runs if r.data.tags.get("sweep") != "parent")
    assert statuses == ["FAILED", "FINISHED"]


@pytest.mark.slow
def test_parallel_joblib_sweep_on_a_brand_new_store_loses_nothing(mnist_root, tmp_path):
    store = f"sqlite:///{tmp_path / 'brand-new.db'}"
    assert not (tmp_path / "brand-new.db").exists()
    out = run_xentlab("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "task=mnist",
                      "loss=bce,cce,sparse_cce,mse", "data.subset=640", "data.batch_size=64", "data.val_size=500",
                      "trainer.max_epochs=3", "trainer.log_every_n_steps=1", f"logger.tracking_uri={store}",
                      cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "xentlab sweep: 4 ran, 0 skipped, 0 failed" in out.stdout
    client, runs = runs_in(store)
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    kids = children_of(runs, parent.info.run_id)
    assert sorted(r.data.tags["loss"] for r in kids) == ["bce", "cce", "mse", "sparse_cce"]
    for run in kids:
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss_step")]
        assert steps == list(range(30)), run.data.tags["loss"]  # 10 batches x 3 epochs, every step
        for key in ("train/loss", "val/loss", "val/acc", "val/nll"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1, 2], key
        assert "test/acc" in run.data.metrics


@pytest.mark.slow
def test_optuna_lr_search_logs_each_trial_as_a_run(mnist_root, store, tmp_path):
    out = run_xentlab("-m", "hparams_search=lr", "task=binary", "loss=bce", "hydra.sweeper.n_trials=3",
                      *TINY, f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client, runs = runs_in(store)
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    trials = children_of(runs, parent.info.run_id)
    assert len(trials) == 3 and len({r.data.params["optimizer.lr"] for r in trials}) == 3
    (result,) = (tmp_path / "multirun").glob("**/optimization_results.yaml")
    # each trial's objective: val/acc of the epoch its test scores are from (its best, trainer.select=best)
    best = max(m.value for r in trials for m in client.get_metric_history(r.info.run_id, "val/acc"))
    assert f"best_value: {best}" in result.read_text()


@pytest.mark.slow
def test_tune_script_tunes_each_loss_then_reruns_the_best_with_seeds(mnist_root, tmp_path):
    import os
    import subprocess

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "tune.py"), "--task", "binary", "--losses", "bce,mse",
                          "--trials", "2", "--seeds", "0,1", "--out", str(tmp_path / "tune"), "--",
                          *TINY, f"data.root={mnist_root}", "trainer.progress_bar=false"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    client, runs = runs_in(store)
    names = {e.experiment_id: e.name for e in client.search_experiments()}
    trials = [r for r in runs
              if names[r.info.experiment_id] == "tuned_binary-tuning" and r.data.tags.get("sweep") != "parent"]
    reruns = [r for r in runs if names[r.info.experiment_id] == "tuned_binary" and r.data.tags.get("sweep") != "parent"]
    assert len(trials) == 4 and len(reruns) == 4
    for loss in ("bce", "mse"):
        tuned = [r for r in trials if r.data.tags["loss"] == loss]
        best = max(tuned, key=lambda r: r.data.metrics["val/acc"]).data.params["optimizer.lr"]
        mine = [r for r in reruns if r.data.tags["loss"] == loss]
        assert ({r.data.params["optimizer.lr"] for r in mine} == {best}
                and {r.data.tags["seed"] for r in mine} == {"0", "1"})
    assert (tmp_path / "tune" / "report" / "report.html").exists()


@pytest.mark.parametrize("launcher", [(), pytest.param(("hydra/launcher=batched",), marks=pytest.mark.slow)],
                         ids=["default", "batched"])
def test_ctrl_c_during_a_sweep_leaves_nothing_running(mnist_root, store, tmp_path, launcher):
    import os
    import signal
    import subprocess

    cmd = [sys.executable, str(ROOT / "run.py"), "-m", *launcher, "task=mnist", "loss=bce,cce", "trainer.max_epochs=50",
           "trainer.progress_bar=false", f"data.root={mnist_root}", f"logger.tracking_uri={store}",
           f"hydra.sweep.dir={tmp_path}/multirun"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=ctrl_c_enabled)
    for line in proc.stdout:
        if "epoch 1/50" in line:
            break
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    _, runs = runs_in(store)
    # the parent and the interrupted job (the second never started); batched: both jobs were members
    assert len(runs) == (3 if launcher else 2)
    assert {r.info.status for r in runs} == {"KILLED"}
