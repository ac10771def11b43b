"""Stopped members stop costing: members of a stacked model that stop (patience) or diverge
(NaN) leave its tensors, optimizer state and training batches at the end of the epoch
(``Classifier.compact``), and every member still computes what it computes alone."""

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from xentlab import checkpoints, train
from xentlab.module import MemberSettings, Stacked
from xentlab.tasks import examples
from xentlab.tracking.lifecycle import NoTracking

from conftest import configs, runs_in

# digits, a tiny training set: at lr 0.01 validation peaks after a few epochs and patience stops
# the member; at 3e-4 it improves for longer; at 1e10 a linear-output MSE member diverges at once
OVERFIT = ("data.subset=150", "data.batch_size=25", "data.val_size=300", "model.hidden=[64]",
           "trainer.max_epochs=25", "trainer.patience=3", "trainer.log_every_n_steps=6", "trainer.progress_bar=false")
CELLS = [("loss=sparse_cce", "optimizer.lr=0.01", "seed=0"), ("loss=cce", "optimizer.lr=0.01", "seed=1"),
         ("loss=sparse_cce", "optimizer.lr=0.0003", "seed=2"),
         ("loss=mse", "activation=none", "optimizer.lr=1e10", "seed=3")]
STEPS = 6  # an epoch: 150 examples in batches of 25


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("examples")
    examples.write(out)
    return str(out / "digits.npz")


def member_runs(digits, *extra, output_dir=None):
    cfgs = configs(*[("task=file", f"task.path={digits}", *OVERFIT, *extra, *cell) for cell in CELLS])
    return [r for cfg in cfgs for r in train.member_runs(cfg, train.plan(cfg), output_dir)]


@pytest.fixture(scope="module")
def solo(digits) -> dict[int, dict]:
    """Each member's result trained alone (the diverging one has none: alone it fails the fit)."""
    return {r.seed: train.train([r], NoTracking())[0][1]
            for r in member_runs(digits, "logger=none", "trainer.checkpoint=false") if r.seed != 3}


class Held(pl.Callback):
    """After each epoch's first step: the members the model holds, the rows of its stacked tensors,
    of its optimizer's moments and of the training batch."""

    def __init__(self):
        self.epochs: list[tuple[tuple[int, ...], int, int, int]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx == 0:
            moments = sum(len(s["exp_avg"]) for s in trainer.optimizers[0].state.values() if s["exp_avg"].dim() == 3)
            self.epochs.append((tuple(module.nets.members), len(module.nets.weights()[0]), moments, len(batch[0])))


class StopAfter(pl.Callback):
    """Ends the fit after ``epoch`` epochs, its checkpoint written (a kill at that moment)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch + 1 == self.epoch:
            trainer.should_stop = True


def assert_as_alone(results, solo):
    for r, res in results:
        if r.seed == 3:
            assert "at step 2" in res["error"]  # diverged in the first epoch: dropped at its end
            continue
        mine, alone = res["metrics"], solo[r.seed]["metrics"]
        assert mine["best_epoch"] == alone["best_epoch"], r.seed
        for key in ("val/loss", "val/acc", "test/acc", "test/loss", "test/nll", "test/brier"):
            assert mine[key] == pytest.approx(alone[key], rel=1e-4, abs=1e-6), (r.seed, key)


def test_keep_shrinks_every_stacked_tensor_to_the_members_left_and_they_compute_as_before():
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3)) for _ in range(5)]
    stacked = Stacked(nets, [MemberSettings("mse", "softmax", lr=lr) for lr in (1e-3, 1e-3, 1e-2, 1e-2, 1e-1)])
    x = torch.randn(5, 7, 6)
    before = stacked(x, shared=False).detach()
    blocks = stacked.parameter_blocks()
    rows = stacked.keep([0, 3])  # the whole 1e-1 block and one member of each other leave
    assert [len(w) for w in stacked.weights()] == [2, 2, 2, 2] and stacked.members == [0, 3]
    assert stacked.blocks == [(0, 1), (1, 2), (2, 2)] and [r.tolist() for r in rows] == [[0], [1], []]
    assert stacked.parameter_blocks() == blocks  # the optimizer's parameter objects stay, with fewer rows
    assert [len(p) for block in blocks for p in block] == [1] * 4 + [1] * 4 + [0] * 4
    after = stacked(x[[0, 3]], shared=False)
    assert torch.equal(after.detach(), before[[0, 3]])
    after.sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in blocks[1])


@pytest.mark.slow
def test_stopped_members_leave_the_model_and_every_member_is_its_solo_run(digits, solo, store):
    runs = member_runs(digits, f"logger.tracking_uri={store}", "trainer.checkpoint=false")
    held = Held()
    results = train.train(runs, train.tracker_for(runs[0].cfg), callbacks=[held])
    assert_as_alone(results, solo)
    client, stored = runs_in(store)
    history = {int(r.data.tags["seed"]): [m.step for m in client.get_metric_history(r.info.run_id, "val/acc")]
               for r in stored}
    best = {r.seed: int(res["metrics"]["best_epoch"]) for r, res in results if r.seed != 3}
    for seed in (0, 1):  # stopped by patience: their runs end where they stopped, FINISHED
        assert history[seed] == list(range(best[seed] + 3)) and best[seed] + 3 < 25, seed
    assert len(history[2]) > max(best[0], best[1]) + 3 and history[3] == []  # one trains on; one diverged
    assert all(r.info.status == ("FAILED" if r.data.tags["seed"] == "3" else "FINISHED") for r in stored)
    order = [r.seed for r, _ in results]  # the model's member order
    for epoch, (members, weight_rows, moment_rows, batch_rows) in enumerate(held.epochs, 1):
        want = [i for i, seed in enumerate(order) if (epoch == 1 if seed == 3 else epoch <= len(history[seed]))]
        assert list(members) == want, epoch  # the members still training, and no other
        assert weight_rows == batch_rows == len(want) and moment_rows == 2 * len(want), epoch
    assert len({m for m, *_ in held.epochs}) == 4  # 4 members, then 3, 2 and 1


@pytest.mark.slow
def test_a_compacted_model_resumes_from_its_checkpoint_as_if_uninterrupted(digits, solo, tmp_path):
    runs = member_runs(digits, "logger=none", "trainer.checkpoint=true", output_dir=str(tmp_path / "first"))
    train.train(runs, NoTracking(), callbacks=[StopAfter(7)])  # one member diverged, one stopped
    ckpt = tmp_path / "first" / "checkpoints" / checkpoints.LAST
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert len(saved["xentlab_members"]) == 2 and len(saved["xentlab_failed"]) == 1
    again = member_runs(digits, "logger=none", "trainer.checkpoint=true", output_dir=str(tmp_path / "again"))
    held = Held()
    results = train.train(again, NoTracking(), callbacks=[held],
                          resume=checkpoints.Resume(ckpt, (None,) * len(again), 7))
    assert list(held.epochs[0][0]) == saved["xentlab_members"] and held.epochs[0][1] == 2
    assert_as_alone(results, solo)
