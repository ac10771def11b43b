"""Cross-validation where data is small: ``data.folds=K`` (issue #32, item 3)."""

import re
import statistics

import numpy as np
import pytest
from sklearn.model_selection import KFold, StratifiedKFold

from xentlab import analysis, tasks, train
from xentlab.analysis import RunInfo
from xentlab.errors import ConfigError

from conftest import make_config, run_xentlab, runs_in


def blobs(n, classes=2, seed=0):
    """Distinct rows (so a validation row is found among the training rows by value), unbalanced classes."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int) if classes == 2 else np.arange(n) % classes
    return rng.normal(size=(n, 5)) + 2 * y[:, None], y


@pytest.fixture
def small(tmp_path):
    x, y = blobs(90)
    xt, yt = blobs(30, seed=1)
    path = tmp_path / "small.npz"
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


def rows_of(split_x, x):
    """Where each row of ``split_x`` lies in ``x`` (features compared by value)."""
    return sorted(int(np.flatnonzero((np.abs(x - row) < 1e-5).all(1))[0]) for row in split_x.numpy())


def fold_splits(path, folds, *extra):
    out = []
    for f in range(folds):
        cfg = make_config("task=file", f"task.path={path}", "loss=bce", f"data.folds={folds}", f"data.fold={f}",
                          "data.normalize=false", *extra)
        out.append(tasks.build(train.plan(cfg).task, cfg.task, cfg.data))
    return out


def test_folds_partition_the_training_rows_as_stratified_kfold_on_the_data_seed(small):
    raw = np.load(small)
    x, y = raw["x_train"], raw["y_train"]
    reference = list(StratifiedKFold(n_splits=3, shuffle=True, random_state=7).split(x, y))
    splits = fold_splits(small, 3, "task.data_seed=7")
    for s, (train_rows, val_rows) in zip(splits, reference):
        assert rows_of(s.val.x, x) == sorted(val_rows) and rows_of(s.train.x, x) == sorted(train_rows)
        assert np.array_equal(s.val.y.numpy(), y[sorted(val_rows)])
        np.testing.assert_allclose(s.test.x.numpy(), raw["x_test"], rtol=1e-6)  # the test split is untouched
    vals = [set(rows_of(s.val.x, x)) for s in splits]
    assert set().union(*vals) == set(range(len(x))) and sum(map(len, vals)) == len(x)  # disjoint, all rows
    # another data seed draws other folds
    assert rows_of(fold_splits(small, 3, "task.data_seed=8")[0].val.x, x) != rows_of(splits[0].val.x, x)


def test_a_files_own_validation_rows_join_the_folds_and_tags_use_plain_kfold(tmp_path):
    x, y = blobs(60)
    path = tmp_path / "with_val.npz"
    np.savez(path, x_train=x[:45], y_train=y[:45], x_val=x[45:], y_val=y[45:], x_test=x[:10], y_test=y[:10])
    (s,) = fold_splits(path, 4)[:1]
    assert rows_of(s.val.x, x) == sorted(list(StratifiedKFold(4, shuffle=True, random_state=0).split(x, y))[0][1])

    tags = np.stack([y, 1 - y, (np.arange(60) % 2)], 1)
    path = tmp_path / "tags.npz"
    np.savez(path, x_train=x, y_train=tags, x_test=x[:10], y_test=tags[:10])
    s = fold_splits(path, 3)[2]
    assert rows_of(s.val.x, x) == sorted(list(KFold(3, shuffle=True, random_state=0).split(x))[2][1])


def test_fold_options_are_typed_and_checked_before_any_data(small):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        make_config("data.flods=3")
    with pytest.raises(ConfigCompositionException):
        make_config("data.folds=three")
    for overrides, message in [(["data.folds=0"], "data.folds must be >= 1, got 0"),
                               (["data.folds=3", "data.fold=3"], "data.fold must be in [0, data.folds=3)"),
                               (["data.folds=3", "resume=0123456789abcdef0123456789abcdef"],
                                "data.folds=3 trains a run per fold"),
                               (["data.folds=3", "trainer=ddp"], "data.folds=3 trains its folds one after another"),
                               (["data.folds=100"], "data.folds=100 needs at least 100 training rows")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            train.plan(make_config("task=file", f"task.path={small}", "loss=bce", *overrides))
    p = train.plan(make_config("task=file", f"task.path={small}", "loss=bce", "data.folds=3", "seeds=[0,1]"))
    assert p.members == ((0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2))
    assert train.plan(make_config("data.folds=3", "data.fold=1")).folds == (1,)


def info(lr, vals, cell="softmax"):
    return [RunInfo(f"{cell}{lr}{i}", "t", "binary", cell, "bce", str(i % 2), "valid", {"val/acc": v, "test/acc": v},
                    params={"optimizer.lr": lr, "data.fold": str(i // 2), "data.folds": "3"})
            for i, v in enumerate(vals)]


def test_the_lr_choice_is_as_stable_as_bootstrap_resampling_says():
    clear = info("0.001", [0.90, 0.92, 0.91, 0.93, 0.92, 0.90]) + info("0.01", [0.70, 0.72, 0.71, 0.73, 0.69, 0.70])
    assert analysis.lr_stability(clear, "acc") == {"0.001": 1.0, "0.01": 0.0}
    near = info("0.001", [0.90, 0.80, 0.85, 0.95, 0.84, 0.86]) + info("0.01", [0.86, 0.87, 0.85, 0.88, 0.84, 0.86])
    shares = analysis.lr_stability(near, "acc")
    assert 0.2 < shares["0.01"] < 0.8 and shares["0.001"] + shares["0.01"] == 1.0
    # by hand: the same 1000 draws of a fixed generator, lr by lr
    rng = np.random.default_rng(0)
    draws = {lr: np.array([r.metrics["val/acc"] for r in near if r.lr == lr]) for lr in ("0.001", "0.01")}
    means = {lr: v[rng.integers(0, 6, (1000, 6))].mean(1) for lr, v in draws.items()}
    won = (means["0.01"] > means["0.001"]).mean()
    assert shares["0.01"] == pytest.approx(won)
    assert analysis.lr_stability(info("0.001", [0.9, 0.8]), "acc") is None  # one lr: no choice to doubt

    # a cell whose choice is a lottery gets no star, though its mean ties with the best
    best = info("0.001", [0.90, 0.91, 0.92, 0.90, 0.91, 0.92], cell="sigmoid")
    grid = analysis.aggregate(best + near)["t"]["grid"]
    assert grid["sigmoid/bce"]["best"] and grid["sigmoid/bce"]["lr_share"] is None
    assert grid["softmax/bce"]["lr"] == "0.001" and grid["softmax/bce"]["lr_share"] == shares["0.001"] < 0.8
    assert not grid["softmax/bce"]["best"]
    # the same values with a stable choice keep their star: Welch cannot separate them
    stable = info("0.001", [0.90, 0.80, 0.85, 0.95, 0.84, 0.86]) + info("0.01", [0.5] * 6)
    assert analysis.aggregate(best + stable)["t"]["grid"]["softmax/bce"]["best"]


@pytest.mark.slow
def test_three_folds_make_three_runs_per_configuration_and_the_report_means_them(small, store, tmp_path):
    from xentlab.report import compare

    out = run_xentlab("-m", "hydra/launcher=batched", "task=file", f"task.path={small}", "loss=bce",
                      "optimizer.lr=0.001,0.03", "seed=0,1", "data.folds=3", "data.batch_size=16",
                      "trainer.max_epochs=3", "trainer.checkpoint=false", f"logger.tracking_uri={store}",
                      "logger.experiment=folds", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "12 runs as 3 model(s)" in out.stderr + out.stdout  # a model per fold: folds do not share data
    client, runs = runs_in(store)
    runs = [r for r in runs if r.data.tags.get("sweep") != "parent"]
    assert len(runs) == 12 and all(r.info.status == "FINISHED" for r in runs)
    by_config = {}
    for r in runs:
        assert r.data.tags["fold"] == r.data.params["data.fold"] and r.data.params["data.folds"] == "3"
        by_config.setdefault((r.data.params["optimizer.lr"], r.data.tags["seed"]), []).append(r.data.tags["fold"])
    assert {k: sorted(v) for k, v in by_config.items()} == {k: ["0", "1", "2"] for k in by_config}

    tables = compare.compare(tracking_uri=store, experiment="folds", out=tmp_path / "report", attach=False,
                             best_lr=True)
    import json

    (table,) = json.loads((tmp_path / "report" / "summary.json").read_text()).values()
    assert table["rows"] == json.loads(json.dumps(tables["file small"]["rows"], default=str))

    def val_at_best(r):  # the validation accuracy of the epoch the run tested, from its MLflow history
        history = {m.step: m.value for m in client.get_metric_history(r.info.run_id, "val/acc")}
        return history[int(r.data.metrics["best_epoch"]) - 1]

    mean_val = {lr: statistics.fmean(val_at_best(r) for r in runs if r.data.params["optimizer.lr"] == lr)
                for lr in ("0.001", "0.03")}
    chosen = max(mean_val, key=mean_val.get)
    (row,) = table["rows"]
    assert row["lr"] == chosen and row["n"] == 6 and row["folds"] == 3 and row["seeds"] == ["0", "1"]
    assert row["val_acc"] == pytest.approx(mean_val[chosen])
    mine = [r for r in runs if r.data.params["optimizer.lr"] == chosen]
    for col in ("acc", "nll"):
        assert row[col]["mean"] == pytest.approx(statistics.fmean(r.data.metrics[f"test/{col}"] for r in mine))
    assert table["grid"]["sigmoid/bce"]["mean"] == pytest.approx(row["acc"]["mean"])
    assert 0.5 <= table["grid"]["sigmoid/bce"]["lr_share"] <= 1.0
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"sigmoid + bce: lr {chosen} chosen in" in report and "2 × 3 folds" in report


@pytest.mark.slow
def test_one_job_trains_its_folds_in_turn_and_resume_auto_finds_each(small, store, tmp_path):
    args = ("task=file", f"task.path={small}", "loss=bce", "data.folds=3", "data.batch_size=16",
            "trainer.max_epochs=2", f"logger.tracking_uri={store}", "logger.experiment=folds_solo")
    out = run_xentlab(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    _, runs = runs_in(store)
    assert sorted(r.data.tags["fold"] for r in runs) == ["0", "1", "2"]
    assert sorted(r.info.run_name for r in runs) == [f"file-sigmoid-bce-s0-f{f}" for f in range(3)]
    assert len({r.data.tags["checkpoint"] for r in runs}) == 3  # each fold its own folder
    again = run_xentlab(*args, "resume=auto", cwd=tmp_path / "again")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("already done") == 3 and len(runs_in(store)[1]) == 3


def test_the_small_data_preset_cross_validates_on_five_folds():
    cfg = make_config("experiment=fair_grid_breast_cancer")
    assert cfg.data.folds == 5 and cfg.data.fold is None
