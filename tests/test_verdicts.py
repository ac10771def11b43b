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
                     "(softmax + sparse_cce). It is not budget-limited; 1 of the other 2 cells is "
                     "(none + mse at lr 0.001): more epochs might change the ranking.")
    assert second.startswith("Choosing wrong costs up to 15.0 points: the worst runnable cell, none + mse, reaches "
                             "0.8000") and "epochs ranged from 3.0 to 6.0" in second


def test_the_grid_marks_ties_invalid_cells_and_the_chosen_lr(table):
    lines = verdicts.grid_markdown(table)
    sigmoid = next(line for line in lines if line.startswith("| sigmoid |"))
    # t(0.975, 2) * 0.002 = 0.0050; validation puts 0.001 above 0.01 for every seed, so every resample chooses it
    assert "0.9500 ± 0.0050 ★ (lr 0.001, chosen 100%, ep 3.0)" in sigmoid
    none = next(line for line in lines if line.startswith("| none |"))
    assert "✗" in none and "0.8000 ± 0.0050 † ⚠ (lr 0.001, ep 6.0)" in none and "★" not in none
    assert "†" not in sigmoid


def test_the_verdict_says_whether_the_best_is_budget_limited_and_when_it_is_unknown(table):
    table["grid"]["sigmoid/bce"]["budget_limited"] = True
    table["grid"]["none/mse"]["budget_limited"] = False
    assert verdicts.verdict(table)[0].endswith("(softmax + sparse_cce). It is budget-limited (at lr 0.001); no other "
                                               "cell is: more epochs might change the ranking.")
    table["grid"]["sigmoid/bce"]["budget_limited"] = None
    table["grid"]["none/mse"]["budget_limited"] = None
    assert verdicts.verdict(table)[0].endswith("Whether it is budget-limited is unknown; no other cell is known to "
                                               "be (1 unknown).")


def test_a_best_cell_whose_learning_rate_resampling_overturns_is_called_a_lottery(table):
    assert "lottery" not in verdicts.verdict(table)[0]  # validation chooses 0.001 in every resample
    table["grid"]["sigmoid/bce"]["lr_share"] = 0.47
    first = verdicts.verdict(table)[0]
    assert "(softmax + sparse_cce). Its learning rate wins only 47% of the resamples of its seeds, so no cell " in first
    table["grid"]["sigmoid/bce"]["folds"] = 5
    assert "of its seeds and folds, so" in verdicts.verdict(table)[0]


def test_a_section_counts_seeds_not_fold_runs(table):
    for g in table["grid"].values():
        g["n"], g["folds"] = 15, 5  # 3 seeds x 5 folds
    section = {"preset": "p", "title": "t", "table": table, "command": "python run.py -m experiment=p",
               "seconds": 90.0, "aside": [], "setup": "MLP", "effort": ""}
    assert "`python run.py -m experiment=p` (1.5 min); learning rates 0.001, 0.01; 3 seeds per cell; MLP." in (
        verdicts.render([section], 90.0))


def test_every_preset_the_verdicts_run_exists():
    for preset in verdicts.PRESETS:
        assert (ROOT / "conf" / "experiment" / f"{preset}.yaml").is_file()


def test_the_effort_line_counts_member_epochs_against_the_budget_and_the_training_share():
    runs = [run("softmax", "mse", seed, "0.001", 0.9, 0.9, epochs - 2) for seed, epochs in ((0, 3), (1, 5))]
    for r, epochs in zip(runs, (3, 5)):
        r.curves["val/acc"] = [(step, 0.9) for step in range(epochs)]
        r.metrics["train_seconds"] = 1.2  # each run's share of its model's training time
    line = verdicts.effort(runs, 12.0)
    assert line.startswith("2 runs trained 8 epochs in all, 4.0 per run on average (67% of the budget)")  # 8 / 12
    assert "took 0.0 of the 0.2 min (300 ms per member-epoch)" in line  # 2.4 s / 8 epochs


def test_mnist_is_held_against_the_published_figures_at_its_best_cross_entropy_cell():
    runs = [run("softmax", loss, seed, "0.001", acc + noise, 0.98, 3)
            for seed, noise in enumerate((0.0, 0.001, -0.001)) for loss, acc in (("sparse_cce", 0.9812), ("mse", 0.99))]
    for r in runs:
        r.task, r.kind, r.params["task.name"] = "mnist", "multiclass", "mnist"
    (table,) = analysis.aggregate(runs, best_lr=True).values()
    text = " ".join(verdicts.published(table))
    assert "98.29 ± 0.07%" in text and "98.40%" in text
    assert text.rstrip().endswith("Here the best of softmax + sparse_cce: softmax + sparse_cce, 98.12% (lr 0.001).")
    table["task"] = "fashion"
    assert verdicts.published(table) == []


def test_rendered_again_a_preset_takes_the_span_of_its_newest_finished_sweep(tmp_path):
    """``--no-sweeps`` reads each preset's wall time back from MLflow: its newest finished sweep
    parent run, start to end (a sweep still running, or another experiment's, does not count)."""
    from mlflow.tracking import MlflowClient

    from xentlab import tracking

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp, other = client.create_experiment("fair_grid_x"), client.create_experiment("fair_grid_y")
    for experiment, start, end in ((exp, 1_000, 61_000), (exp, 100_000, 190_000), (other, 200_000, 900_000)):
        run = client.create_run(experiment, start_time=start, tags={"sweep": "parent"})
        client.set_terminated(run.info.run_id, "FINISHED", end_time=end)
    client.create_run(exp, start_time=300_000, tags={"sweep": "parent"})  # still running
    assert tracking.sweep_seconds(client, "fair_grid_x") == 90.0
    assert tracking.sweep_seconds(client, "fair_grid_y") == 700.0
