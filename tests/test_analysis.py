"""Statistics over runs (xentlab.analysis) against closed forms: Student-t intervals, Welch's
test written out by hand, and the learning rate chosen on validation data."""

import math
import random
import statistics

import pytest
from scipy.stats import t as student_t

from xentlab import analysis
from xentlab.analysis import RunInfo


def test_mean_and_confidence_interval_over_seeds():
    values = [0.9, 0.92, 0.94]
    m, h = analysis.mean_ci(values)
    low, high = student_t.interval(0.95, 2, loc=statistics.fmean(values),
                                   scale=statistics.stdev(values) / math.sqrt(3))
    assert m == pytest.approx(0.92) and h == pytest.approx((high - low) / 2, rel=1e-9)
    assert math.isnan(analysis.mean_ci([0.5])[1])
    assert analysis.epochs_to_target([(0, 0.5), (1, 0.96), (2, 0.99)], 0.95) == 2


def welch_p(a, b):
    """Two-sided p-value of Welch's t-test, from its textbook formulas."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return 2 * student_t.sf(abs(t), df)


def test_ties_are_welchs_test_at_five_percent():
    assert welch_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.02131, abs=1e-5)  # t = -3.674, df = 4
    assert not analysis.indistinguishable([1, 2, 3], [4, 5, 6])
    assert analysis.indistinguishable([1, 2, 3], [2, 3, 4])  # p = 0.288
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.gauss(0, 1) for _ in range(rng.randint(2, 6))]
        b = [rng.gauss(rng.uniform(0, 3), rng.uniform(0.2, 2)) for _ in range(rng.randint(2, 6))]
        assert analysis.indistinguishable(a, b) == (welch_p(a, b) >= 0.05)
    # one seed, or no spread: only equal means tie
    assert analysis.indistinguishable([0.5], [0.5]) and not analysis.indistinguishable([0.5], [0.5, 0.6])
    assert not analysis.indistinguishable([0.9, 0.9], [0.8, 0.8])


def run(act, loss, seed, test_acc, val_acc, lr="0.001"):
    return RunInfo(f"{act}{loss}{seed}{lr}", "mnist", "multiclass", act, loss, str(seed), "valid",
                   {"test/acc": test_acc, "val/acc": val_acc, "train_seconds": 1.0}, params={"optimizer.lr": lr})


def test_best_marks_every_row_that_ties_and_the_grid_picks_lr_on_validation():
    runs = [run("softmax", "cce", s, v, v) for s, v in enumerate([0.90, 0.91, 0.92])]
    runs += [run("softmax", "mse", s, v, v) for s, v in enumerate([0.905, 0.915, 0.925])]  # p = 0.55: a tie
    runs += [run("sigmoid", "bce", s, v, v) for s, v in enumerate([0.80, 0.81, 0.82])]  # clearly worse
    # two learning rates for one cell: the one better on validation wins, though worse on test
    runs += [run("none", "mse", s, 0.95, 0.70, lr="0.1") for s in range(3)]
    runs += [run("none", "mse", s, v, 0.75, lr="0.01") for s, v in enumerate([0.60, 0.61, 0.62])]
    table = analysis.aggregate(runs)["mnist"]
    assert table["learning_rates"] == ["0.001", "0.01", "0.1"]
    rows = {(r["activation"], r["loss"], r["lr"]): i for i, r in enumerate(table["rows"])}
    assert sorted(table["best"]["acc"]) == sorted([rows[("none", "mse", "0.1")]])  # 0.95 with no spread
    grid = table["grid"]
    assert grid["none/mse"]["lr"] == "0.01" and grid["none/mse"]["mean"] == pytest.approx(0.61)
    assert [k for k, g in grid.items() if g["best"]] == ["softmax/cce", "softmax/mse"]
    assert grid["sigmoid/bce"]["mean"] == pytest.approx(0.81) and not grid["sigmoid/bce"]["best"]

    # --best-lr: the table itself keeps each cell at its validation-chosen lr, so the 0.95 row that
    # only looks best on test data is gone and the ties are Welch's test among the chosen rows
    chosen = analysis.aggregate(runs, best_lr=True)["mnist"]
    by_cell = {(r["activation"], r["loss"]): r for r in chosen["rows"]}
    assert {c: r["lr"] for c, r in by_cell.items()} == {("softmax", "cce"): "0.001", ("softmax", "mse"): "0.001",
                                                      ("sigmoid", "bce"): "0.001", ("none", "mse"): "0.01"}
    assert by_cell[("none", "mse")]["acc"]["mean"] == pytest.approx(statistics.fmean([0.60, 0.61, 0.62]))
    best = {(chosen["rows"][i]["activation"], chosen["rows"][i]["loss"]) for i in chosen["best"]["acc"]}
    assert best == {("softmax", "cce"), ("softmax", "mse")}


def test_each_condition_gets_its_own_table_with_a_heading_note_and_per_class_columns():
    def cond(noise, imbalance, seed, acc, extra=()):
        params = {"optimizer.lr": "0.001", "task.label_noise": noise, "task.imbalance": imbalance}
        metrics = {"test/acc": acc, "val/acc": acc, **dict(extra)}
        return RunInfo(f"{noise}{imbalance}{seed}", "binary", "binary", "sigmoid", "bce", str(seed), "recommended",
                       metrics, params=params)

    runs = [cond("0.0", "None", s, 0.98) for s in range(2)] + [cond("0.2", "None", s, 0.9) for s in range(2)]
    runs += [cond("0.0", "0.05", s, 0.7, {"test/balanced_acc": 0.6 + s / 10, "test/recall_0": 1.0,
                                           "test/recall_1": 0.2 + s / 5}) for s in range(2)]
    tables = analysis.aggregate(runs)
    assert sorted(tables) == ["binary", "binary [imbalance=0.05]", "binary [label_noise=0.2]"]
    assert tables["binary"]["conditions_note"] == ""
    assert "20% of the training labels were replaced" in tables["binary [label_noise=0.2]"]["conditions_note"]
    assert "Validation and test data are clean" in tables["binary [label_noise=0.2]"]["conditions_note"]
    skewed = tables["binary [imbalance=0.05]"]
    assert "5% of the training positives were kept" in skewed["conditions_note"]
    assert skewed["columns"][:4] == ["acc", "balanced_acc", "recall_0", "recall_1"]
    (row,) = skewed["rows"]
    assert row["balanced_acc"]["mean"] == pytest.approx(0.65) and row["recall_1"]["mean"] == pytest.approx(0.3)
    assert "balanced_acc" not in tables["binary [label_noise=0.2]"]["columns"]
