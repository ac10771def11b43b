"""docs/VERDICTS.md: the grid and the two computed sentences, on runs whose answer is known."""

import pytest

from xentlab import analysis
from xentlab.report import verdicts

from conftest import ROOT


def run(act, loss, seed, lr, acc, val, best_epoch):
    params = {"task.name": "binary", "loss.name": loss, "activation.name": act, "seed": str(seed),
              "optimizer.lr": lr, "selection": "best val/acc", "trainer.max_epochs": "6", "trainer.patience": "None"}
    return analysis.RunInfo(f"{act}{loss}{seed}{lr}", "binary", "binary", act, loss, str(seed), "valid",
                            {"test/acc": acc, "val/acc": val, "best_epoch": best_epoch}, params=params)


@pytest.fixture
def table():
    runs = []
    for seed, noise in enumerate((0.0, 0.002, -0.002)):
        runs += [run("sigmoid", "bce", seed, "0.001", 0.95 + noise, 0.95, 3),
                 run("sigmoid", "bce", seed, "0.01", 0.90 + noise, 0.90, 2),  # worse on validation: not chosen
                 run("softmax", "sparse_cce", seed, "0.001", 0.949 + noise, 0.949, 4),  # ties with the best
                 run("none", "mse", seed, "0.001", 0.80 + noise, 0.80, 6)]  # best at the last epoch: budget-limited
    (table,) = analysis.aggregate(runs, best_lr=True).values()
    return table


def test_the_sentences_name_the_best_its_ties_and_the_cost_of_the_worst(table):
    first, second = verdicts.verdict(table)
    assert first == ("Best test acc: sigmoid + bce (0.9500); 1 of the other 2 runnable cells cannot be told from it "
                     "(softmax + sparse_cce). It is not budget-limited; 1 of the other 2 cells is (none + mse): more "
                     "epochs might change the ranking.")
    assert second.startswith("Choosing wrong costs up to 15.0 points: the worst runnable cell, none + mse, reaches "
                             "0.8000") and "epochs ranged from 3.0 to 6.0" in second


def test_the_grid_marks_ties_invalid_cells_and_the_chosen_lr(table):
    lines = verdicts.grid_markdown(table)
    sigmoid = next(line for line in lines if line.startswith("| sigmoid |"))
    assert "0.9500 ± 0.0050 ★ (lr 0.001, ep 3.0)" in sigmoid  # t(0.975, 2) * 0.002 = 0.0050
    none = next(line for line in lines if line.startswith("| none |"))
    assert "✗" in none and "0.8000 ± 0.0050 † ⚠ (lr 0.001, ep 6.0)" in none and "★" not in none
    assert "†" not in sigmoid


def test_the_verdict_says_whether_the_best_is_budget_limited_and_when_it_is_unknown(table):
    table["grid"]["sigmoid/bce"]["budget_limited"] = True
    table["grid"]["none/mse"]["budget_limited"] = False
    assert verdicts.verdict(table)[0].endswith("(softmax + sparse_cce). It is budget-limited; no other cell is: "
                                               "more epochs might change the ranking.")
    table["grid"]["sigmoid/bce"]["budget_limited"] = None
    table["grid"]["none/mse"]["budget_limited"] = None
    assert verdicts.verdict(table)[0].endswith("Whether it is budget-limited is unknown; no other cell is known to "
                                               "be (1 unknown).")


def test_every_preset_the_verdicts_run_exists():
    for preset in verdicts.PRESETS:
        assert (ROOT / "conf" / "experiment" / f"{preset}.yaml").is_file()
