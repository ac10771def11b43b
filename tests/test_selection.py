"""Each run judged at its best validation epoch (``trainer.select=best``), early stopping
(``trainer.patience``), and each configuration and seed counted once in the reports."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from xentlab import analysis, tasks, train
from xentlab.errors import ConfigError
from xentlab.module import Plain, Selection, Stacked
from xentlab.tasks import examples

from conftest import make_config, run_xentlab, runs_in

# a tiny training set of real digits and a high learning rate: validation peaks early, then overfits
OVERFIT = ("data.subset=150", "data.batch_size=25", "data.val_size=300", "optimizer.lr=0.01",
           "model.hidden=[64]", "trainer.max_epochs=25", "trainer.log_every_n_steps=6")


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("examples")
    examples.write(out)
    return str(out / "digits.npz")


def stacked(k: int, seed: int = 0) -> Stacked:
    torch.manual_seed(seed)
    return Stacked([nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)) for _ in range(k)],
                   [type("S", (), {"optimizer": {"lr": lr}})() for lr in (1.0, 1.0, 2.0)][:k])


@pytest.mark.parametrize("higher", [True, False])
def test_each_member_keeps_the_weights_of_its_own_best_epoch(higher):
    """Random weights and values for 6 epochs: the kept weights of each member are its weights
    at the epoch a plain numpy argmax/argmin of its values picks (first on ties)."""
    nets = stacked(3)
    sel = Selection(nets, 3, "acc", higher, None)
    g = torch.Generator().manual_seed(1)
    values = torch.randint(0, 4, (6, 3), generator=g).float()  # ties on purpose
    values[2, 1] = float("nan")  # a member left out of an epoch never improves there
    snapshots = []
    for epoch in range(6):
        with torch.no_grad():
            for w in nets.weights():
                w.copy_(torch.randn(w.shape, generator=g))
        snapshots.append([w.detach().clone() for w in nets.weights()])
        sel.update(values[epoch], epoch + 1, nets)
    v = np.where(np.isnan(values.numpy()), -np.inf if higher else np.inf, values.numpy())
    want = (np.argmax(v, 0) if higher else np.argmin(v, 0))
    assert sel.best_epoch.tolist() == (want + 1).tolist()
    nets.hold(range(3), sel.selected(nets))
    for member in range(3):
        for w, snap in zip(nets.weights(), snapshots[want[member]]):
            assert torch.equal(w[member], snap[member])


def test_patience_names_the_members_that_stopped_improving():
    sel = Selection(Plain(nn.Linear(2, 2)), 1, "nll", False, patience=2)
    net = nn.Linear(2, 2)
    for epoch, value in enumerate([0.9, 0.5, 0.6, 0.55], 1):
        sel.update(torch.tensor([value]), epoch, Plain(net))
        assert sel.stale(epoch) == ([0] if epoch == 4 else [])  # best at 2; 3 and 4 without improvement


def test_the_best_value_stays_float64_in_any_precision_and_no_best_keeps_the_last_weights():
    net = nn.Linear(2, 2)
    sel = Selection(Plain(net), 1, "acc", True, None).to(torch.bfloat16)
    assert sel.best_value.dtype == torch.float64 and sel.weights0.dtype == torch.bfloat16
    sel.update(torch.tensor([0.8765]), 1, Plain(net))
    sel.update(torch.tensor([0.8760]), 2, Plain(net))  # in bf16 both are 0.875
    assert sel.best_epoch.tolist() == [1]
    nets = stacked(3)
    sel = Selection(nets, 3, "acc", True, None)
    sel.update(torch.tensor([0.5, float("nan"), 0.7]), 1, nets)  # member 1 never has a value
    with torch.no_grad():
        for w in nets.weights():
            w.add_(1.0)
    last = [w.detach().clone() for w in nets.weights()]
    nets.hold(range(3), sel.selected(nets))
    assert torch.equal(nets.weights()[0][1], last[0][1])  # member 1: its last weights
    assert torch.allclose(nets.weights()[0][0], last[0][0] - 1.0, atol=1e-6)  # member 0: its best epoch's


def test_kept_weights_of_a_checkpoint_from_before_compaction_load_joined():
    """Before compaction a stacked model kept one tensor per parameter and block (weights{block * n + j})."""
    nets = stacked(3)
    sel = Selection(nets, 3, "acc", True, None)
    blocks = [(0, 2), (2, 3)]
    state = {k: v for k, v in sel.state_dict().items() if not k.startswith("weights")}
    want = [torch.randn(w.shape) for w in sel._kept()]
    state.update({f"weights{b * 4 + j}": w[start:stop] for b, (start, stop) in enumerate(blocks)
                  for j, w in enumerate(want)})
    sel.load_state_dict(state)
    assert all(torch.equal(w, v) for w, v in zip(sel._kept(), want))


def test_runs_and_checkpoints_from_before_the_selection_rule_count_as_select_last(tmp_path):
    from xentlab import checkpoints

    old = info("a", "0", 1)
    new = info("b", "0", 2)
    new.params.update({"trainer.select": "last", "trainer.select_on": "None", "trainer.patience": "None"})
    best = info("c", "0", 3)
    best.params.update({"trainer.select": "best", "trainer.select_on": "None", "trainer.patience": "None"})
    kept, aside = analysis.one_per_seed([old, new, best])
    assert [r.run_id for r in kept] == ["b", "c"] and aside[0].startswith("a (")
    cfg = make_config("trainer.select=last")
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    before = {k: v for k, v in config.items() if k != "trainer"} | {
        "trainer": {k: v for k, v in config["trainer"].items() if k not in ("select", "select_on", "patience")}}
    path = tmp_path / "old.ckpt"
    torch.save({checkpoints.KEY: {"config": before, "run_id": None}, "epoch": 1}, path)
    assert checkpoints.load(str(path), config, lambda run_id: None).epochs_done == 2
    with pytest.raises(ConfigError, match="trainer.select: checkpoint has 'last', this command has 'best'"):
        checkpoints.load(str(path), OmegaConf.to_container(make_config(), resolve=True, enum_to_str=True),
                         lambda run_id: None)


def test_select_on_is_checked_against_the_task_yardsticks():
    with pytest.raises(ConfigError, match="trainer.select_on='map'.*valid choices are: acc, nll, brier, ece"):
        train.plan(make_config("trainer.select_on=map"))
    with pytest.raises(ConfigError, match="valid choices are: acc$"):
        train.plan(make_config("loss=mse", "activation=none", "trainer.select_on=val/nll"))
    with pytest.raises(ConfigError, match="trainer.patience .*needs trainer.select=best"):
        train.plan(make_config("trainer.select=last", "trainer.patience=3"))
    assert train.plan(make_config("trainer.select_on=val/nll")).selection == "best val/nll"
    assert train.plan(make_config("trainer.select=last")).selection == "last"


def rerun_test_metrics(cfg, state: dict) -> dict[str, float]:
    """The test split scored by scikit-learn with the network rebuilt from the checkpoint's
    kept (selected) weights, in float64."""
    from sklearn.metrics import accuracy_score, log_loss

    p = train.plan(cfg)
    test = tasks.build(p.task, cfg.task, cfg.data).test
    kept = [state[f"selection.weights{j}"] for j in range(4)]
    x = test.x.double().flatten(1)
    h = torch.relu(x @ kept[0].double().T + kept[1].double())
    q = torch.softmax(h @ kept[2].double().T + kept[3].double(), -1).numpy()
    y = test.y.numpy()
    return {"acc": accuracy_score(y, q.argmax(1)), "nll": log_loss(y, q, labels=range(q.shape[1]))}


@pytest.mark.slow
def test_the_selected_epoch_is_the_best_of_the_logged_history_and_its_weights_are_tested(digits, store, tmp_path):
    overrides = ("task=file", f"task.path={digits}", "loss=sparse_cce", *OVERFIT)
    out = run_xentlab(*overrides, f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client, (run,) = runs_in(store)
    history = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val/acc"), key=lambda m: m.step)]
    assert len(history) == 25
    best = int(np.argmax(history)) + 1
    assert run.data.metrics["best_epoch"] == best < 25  # built to overfit: the best epoch is not the last
    assert run.data.params["selection"] == "best val/acc"
    state = torch.load(tmp_path / "outputs" / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)["state_dict"]
    want = rerun_test_metrics(make_config(*overrides), state)
    assert run.data.metrics["test/acc"] == pytest.approx(want["acc"], abs=1e-6)
    assert run.data.metrics["test/nll"] == pytest.approx(want["nll"], rel=1e-4)
    # what a hyperparameter search optimises: the validation score of the tested (best) epoch
    result = train.run(make_config(*overrides, "logger=none", "trainer.checkpoint=false"))
    assert result["metrics"]["val/acc"] == pytest.approx(max(history), abs=1e-6)
    assert result["metrics"]["test/acc"] == pytest.approx(want["acc"], abs=1e-6)


@pytest.mark.slow
def test_patience_stops_a_run_early_and_it_finishes(digits, store, tmp_path):
    out = run_xentlab("task=file", f"task.path={digits}", "loss=sparse_cce", *OVERFIT, "trainer.patience=3",
                      f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client, (run,) = runs_in(store)
    history = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val/acc"), key=lambda m: m.step)]
    best = int(np.argmax(history)) + 1
    assert run.info.status == "FINISHED" and run.data.metrics["best_epoch"] == best
    assert len(history) == best + 3 < 25  # three epochs without improvement, then it stopped


@pytest.mark.slow
def test_a_batched_member_selects_the_epoch_and_scores_of_its_solo_run(digits):
    from xentlab.tracking.lifecycle import NoTracking

    from conftest import configs

    cells = [("loss=sparse_cce", "optimizer.lr=0.01", "seed=0"), ("loss=mse", "optimizer.lr=0.003", "seed=1"),
             ("loss=cce", "optimizer.lr=0.01", "seed=2", "trainer.select_on=nll")]
    base = ("task=file", f"task.path={digits}", *OVERFIT, "logger=none", "trainer.progress_bar=false",
            "trainer.checkpoint=false")
    # select_on must be equal within a model: the nll cell trains as its own model
    cfgs = configs(*[(*base, *c) for c in cells])
    runs = [r for cfg in cfgs for r in train.member_runs(cfg, train.plan(cfg))]
    together = {id(r): res for r, res in train.train(runs[:2], NoTracking())}
    for r in runs[:2]:
        ((_, alone),) = train.train([r], NoTracking())
        mine = together[id(r)]["metrics"]
        assert mine["best_epoch"] == alone["metrics"]["best_epoch"]
        for key in ("test/acc", "test/nll", "test/loss"):
            assert mine[key] == pytest.approx(alone["metrics"][key], rel=2e-4, abs=2e-5), key
    assert {together[id(r)]["metrics"]["best_epoch"] for r in runs[:2]} != {25.0}


def info(run_id, seed, started, lr="0.001", loss="bce", acc=0.9):
    params = {"task.name": "binary", "loss.name": loss, "activation.name": "sigmoid", "seed": seed,
              "optimizer.lr": lr, "trainer.max_epochs": "3"}
    return analysis.RunInfo(run_id, "binary", "binary", "sigmoid", loss, seed, "valid", {"test/acc": acc},
                            params=params, started=started)


def test_each_configuration_and_seed_counts_once_the_newest_kept():
    runs = [info("a", "0", 1), info("b", "1", 2), info("c", "0", 5, acc=0.5), info("d", "0", 3, lr="0.01"),
            info("e", "0", 4, loss="mse"), info("f", "1", 1)]
    kept, aside = analysis.one_per_seed(runs)
    assert [r.run_id for r in kept] == ["b", "c", "d", "e"]
    assert len(aside) == 2 and aside[0].startswith("a (") and "of c" in aside[0] and "of b" in aside[1]
    (table,) = analysis.aggregate(kept).values()
    bce = next(r for r in table["rows"] if r["loss"] == "bce" and r["lr"] == "0.001")
    assert bce["seeds"] == ["0", "1"] and bce["n"] == 2


@pytest.mark.slow
def test_a_batched_sweep_run_twice_counts_each_seed_once_in_the_report(mnist_root, store, tmp_path):
    from xentlab.report import compare

    sweep = ("-m", "hydra/launcher=batched", "task=binary", "loss=bce,mse", "seed=0,1", "data.subset=300",
             "data.val_size=500", "trainer.max_epochs=2", "logger.experiment=twice", f"logger.tracking_uri={store}")
    for attempt in range(2):
        out = run_xentlab(*sweep, cwd=tmp_path / str(attempt))
        assert out.returncode == 0, out.stderr[-3000:]
    tables = compare.compare(tracking_uri=store, experiment="twice", out=tmp_path / "report", attach=False)
    (table,) = tables.values()
    assert [(r["loss"], r["seeds"]) for r in sorted(table["rows"], key=lambda r: r["loss"])] == [
        ("bce", ["0", "1"]), ("mse", ["0", "1"])]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "4 FINISHED run(s) set aside" in report and "×4" in report
    assert "best validation epoch on val/acc (trainer.select=best)" in report and "| selected epoch |" in report
