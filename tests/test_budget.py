"""Budget-limited runs: a run whose selected epoch came so late that more epochs might have raised
it is tagged ``budget_limited`` in MLflow, and the reports mark its cell and say so in the verdict."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xentlab import analysis
from xentlab.tasks import examples

from conftest import run_xentlab, runs_in


def test_budget_limited_by_hand():
    limited = analysis.budget_limited
    assert limited(5, 5, 5, None) and not limited(4, 5, 5, None)  # no patience: only the last epoch
    assert limited(5, 5, 5, 1) and not limited(4, 5, 5, 1)  # patience 1 is the same window
    assert limited(4, 5, 5, 2) and not limited(3, 5, 5, 2)  # best at 3, no gain at 4, 5: patience would stop
    assert not limited(3, 6, 10, 3)  # stopped by patience after epoch 6 of 10
    assert limited(1, 1, 1, 3)  # one epoch: no history to judge by


def simulate(history: list[float], patience):
    """(best epoch, epochs trained) of a run with this validation history (higher is better), by the
    rule README states: the first best is kept; a run stops once ``patience`` epochs bring no gain."""
    best, best_epoch = -np.inf, 0
    for epoch, value in enumerate(history, 1):
        if value > best:
            best, best_epoch = value, epoch
        if patience and epoch - best_epoch >= patience:
            return best_epoch, epoch
    return best_epoch, len(history)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=12), st.integers(1, 5))
def test_budget_limited_is_whether_one_more_epoch_could_have_changed_the_selection(history, patience):
    """With patience: a run is budget-limited exactly when a better value in one more epoch (a budget
    one larger) would have been selected, i.e. patience had not stopped it yet."""
    best, trained = simulate(history, patience)
    extended, _ = simulate([*history, max(history) + 1], patience)
    assert analysis.budget_limited(best, trained, len(history), patience) == (extended != best)


@given(st.lists(st.integers(0, 5), min_size=1, max_size=12))
def test_without_patience_budget_limited_is_the_best_at_the_last_epoch(history):
    best, trained = simulate(history, None)
    assert analysis.budget_limited(best, trained, len(history), None) == (best == len(history))
    assert analysis.budget_limited(trained, trained, len(history), None)  # select=last: the last epoch is tested


def info(selection="best val/acc", tag=None, best=None, max_epochs="10", patience="None"):
    params = {"selection": selection, "trainer.max_epochs": max_epochs, "trainer.patience": patience}
    return analysis.RunInfo("r", "binary", "binary", "sigmoid", "bce", "0", "valid",
                            {"test/acc": 0.9, **({"best_epoch": float(best)} if best else {})}, params=params,
                            tags={"budget_limited": tag} if tag else {})


def test_runs_from_before_the_tag_derive_it_from_best_epoch_and_params():
    assert info(best=10).budget_limited is True and info(best=9).budget_limited is False
    assert info(best=8, patience="3").budget_limited is True and info(best=7, patience="3").budget_limited is False
    assert info(selection="last").budget_limited is True  # tested at the last epoch
    assert info(best=10, tag="false").budget_limited is False  # the tag, written when it trained, wins
    assert info().budget_limited is None and info(best=3, max_epochs="").budget_limited is None  # unknown
    assert analysis.budget_limited_cell([False, True, None]) is True
    assert analysis.budget_limited_cell([False, False]) is False
    assert analysis.budget_limited_cell([False, None]) is None


@pytest.mark.slow
def test_a_budget_too_short_tags_every_member_and_the_report_marks_the_cell(mnist_root, store, tmp_path):
    """Two epochs at a small learning rate: validation NLL still falls at the last epoch, so every
    member of the batched model is budget-limited, and the report's cells say so."""
    from xentlab.report import compare

    out = run_xentlab("-m", "hydra/launcher=batched", "task=binary", "loss=bce,mse", "seed=0", "data.subset=1000",
                      "data.val_size=500", "trainer.max_epochs=2", "optimizer.lr=0.0003", "trainer.select_on=nll",
                      "logger.experiment=short", f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client, runs = runs_in(store)
    members = [r for r in runs if r.data.tags.get("sweep") != "parent"]
    assert len(members) == 2 and {r.data.tags["batch_members"] for r in members} == {"2"}
    for r in members:
        nll = [m.value for m in sorted(client.get_metric_history(r.info.run_id, "val/nll"), key=lambda m: m.step)]
        assert len(nll) == 2 and nll[1] < nll[0]  # still improving when the budget ended
        assert r.data.tags["budget_limited"] == "true"
    compare.compare(tracking_uri=store, experiment="short", out=tmp_path / "report", attach=False)
    (table,) = json.loads((tmp_path / "report" / "summary.json").read_text()).values()
    assert {(g["budget_limited"], g["budget_limited_runs"]) for g in table["grid"].values()} == {(True, 1)}
    assert all(row["budget_limited"] for row in table["rows"])
    report = (tmp_path / "report" / "report.md").read_text()
    assert "† marks a budget-limited cell" in report
    assert sum(" †" in line for line in report.splitlines() if line.startswith("| sigmoid | bce")) == 1


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("examples")
    examples.write(out)
    return str(out / "digits.npz")


def test_an_overfitting_run_stopped_by_patience_is_not_budget_limited(digits, store, tmp_path):
    """A tiny training set at a high learning rate peaks early; patience stops it, and its selected
    epoch is the argmax of its own logged validation history."""
    out = run_xentlab("task=file", f"task.path={digits}", "loss=sparse_cce", "data.subset=150", "data.batch_size=25",
                      "data.val_size=300", "optimizer.lr=0.01", "model.hidden=[64]", "trainer.max_epochs=25",
                      "trainer.patience=2", f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client, (run,) = runs_in(store)
    acc = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val/acc"), key=lambda m: m.step)]
    best = int(np.argmax(acc)) + 1
    assert run.data.metrics["best_epoch"] == best and len(acc) == best + 2 < 25
    assert run.data.tags["budget_limited"] == "false"
