"""Whole sweeps as one batched model (``hydra/launcher=batched``): each member computes what
it computes when trained alone, and is a normal MLflow run."""

import pytest

from xentlab import batching, train
from xentlab.tracking.lifecycle import NoTracking

from conftest import configs, preset_jobs, run_xentlab, runs_in

SMALL = ("task=mnist", "data.subset=512", "data.val_size=500", "data.batch_size=64", "data.eval_batch_size=250",
         "trainer.max_epochs=2", "model.hidden=[32]", "logger=none", "trainer.progress_bar=false",
         "trainer.checkpoint=false", "trainer.log_every_n_steps=4")

MIXED = {  # two losses or more, two activations, two learning rates, two seeds, per optimizer
    "adam": [
        ("activation=softmax", "loss=sparse_cce", "optimizer.lr=1e-3", "seed=0"),
        ("activation=softmax", "loss=mse", "optimizer.lr=3e-3", "seed=1"),
        ("activation=sigmoid", "loss=bce", "optimizer.lr=1e-3", "seed=1"),
        ("activation=sigmoid", "loss=mse", "optimizer.lr=3e-3", "seed=0", "model.init_scale=2"),
        ("activation=softmax", "loss=cce", "loss.label_smoothing=0.1", "optimizer.lr=1e-2", "seed=2",
         "optimizer.weight_decay=1e-3"),
        ("activation=sigmoid", "loss=cce", "loss.numerics=keras", "optimizer.lr=1e-3", "seed=0"),
    ],
    "sgd": [
        ("activation=softmax", "loss=sparse_cce", "optimizer.lr=0.05", "seed=0"),
        ("activation=sigmoid", "loss=bce", "optimizer.lr=0.05", "optimizer.momentum=0.9", "seed=1"),
        ("activation=softmax", "loss=mse", "optimizer.lr=0.2", "optimizer.momentum=0.5", "seed=0",
         "optimizer.weight_decay=1e-3"),
    ],
}


CNN = ("model=cnn", "model.channels=[4]", "model.hidden=[16]")


def _parts(optimizer, cells, model=()):
    cfgs = configs(*[(*SMALL, *model, f"optimizer.name={optimizer}", *cell) for cell in cells])
    return [part for cfg in cfgs for part in train.member_runs(cfg, train.plan(cfg))]


@pytest.mark.parametrize(("optimizer", "model"), [("adam", ()), ("sgd", ()), ("adam", CNN)],
                         ids=["adam", "sgd", "adam-cnn"])
def test_each_member_matches_its_config_trained_alone(mnist_root, optimizer, model):
    parts = _parts(optimizer, MIXED[optimizer][:3] if model else MIXED[optimizer], model)
    assert len(batching.groups([(None, p) for p in parts], max_members=64)) == 1  # the launcher makes one model
    together = {id(p): r for p, r in train.train(parts, NoTracking())}
    for part in parts:
        ((_, alone),) = train.train([part], NoTracking())
        mine = together[id(part)]["metrics"]
        for key in ("val/loss", "val/acc", "test/loss", "test/acc", "test/nll", "test/brier"):
            assert mine[key] == pytest.approx(alone["metrics"][key], rel=2e-4, abs=2e-5), (part.settings, key)


def test_members_group_by_what_they_share():
    cells = [("task=binary", "activation=sigmoid", "loss=bce", "seed=0"),
             ("task=binary", "activation=softmax", "loss=bce", "seed=0"),  # two outputs: another model
             ("task=binary", "activation=none", "loss=mse", "optimizer.lr=0.1", "model.init_scale=3", "seed=1"),
             ("task=binary", "activation=sigmoid", "loss=mse", "data.batch_size=32"),  # other batches: another
             ("task=binary", "activation=sigmoid", "loss=mse", "optimizer.name=sgd"),  # other optimizer: another
             ("task=binary", "activation=softmax", "loss=cce", "seeds=[3,4]")]
    cfgs = configs(*[(*SMALL[1:], *c) for c in cells])
    parts = [(i, part) for i, cfg in enumerate(cfgs) for part in train.member_runs(cfg, train.plan(cfg))]
    grouped = [sorted(i for i, _ in g) for g in batching.groups(parts, max_members=64)]
    assert grouped == [[0, 2], [1, 5, 5], [3], [4]]
    assert [len(g) for g in batching.groups(parts, max_members=2)] == [2, 2, 1, 1, 1]


def test_a_sweeps_learning_rates_become_one_parameter_block_each(mnist_root):
    """In sweep order (lr, then seed) equal settings are not adjacent; grouped, the model has
    one block per learning rate and every member keeps its own job and seed."""
    cells = [(f"activation={a}", f"loss={loss}", f"optimizer.lr={lr}", f"seed={seed}")
             for a, loss in (("softmax", "cce"), ("sigmoid", "bce")) for lr in (1e-3, 1e-2) for seed in (0, 1)]
    cfgs = configs(*[(*SMALL, *c) for c in cells])
    parts = [(i, part) for i, cfg in enumerate(cfgs) for part in train.member_runs(cfg, train.plan(cfg))]
    (group,) = batching.groups(parts, max_members=64)
    module, data = train.build([part for _, part in group])
    assert len(module.nets.blocks) == 2
    assert [(m.lr, m.activation) for m in module.members] == [(float(p.cfg.optimizer.lr), p.plan.activation)
                                                              for _, p in group]
    assert data.seeds == [p.seed for _, p in group] and sorted(i for i, _ in group) == list(range(len(cells)))


def test_resume_of_one_run_compile_and_ddp_are_refused_with_a_reason():
    cfgs = configs((*SMALL, "resume=outputs/x"), (*SMALL, "trainer.compile=true"),
                   (*SMALL, "trainer=ddp"), SMALL, (*SMALL, "resume=auto", "logger=mlflow"))
    reasons = [batching.refuse(c) for c in cfgs]
    assert "resume=outputs/x names one run" in reasons[0] and "use resume=auto" in reasons[0]
    assert "compile" in reasons[1] and "ddp" in reasons[2] and reasons[3] is None and reasons[4] is None


TINY = ("data.subset=300", "data.val_size=500", "trainer.max_epochs=2", "trainer.log_every_n_steps=1")


def test_the_launcher_skips_bad_cells_fails_a_diverged_member_and_finishes_the_rest(mnist_root, store, tmp_path):
    out = run_xentlab("-m", "hydra/launcher=batched", "task=binary", "loss=mse,sparse_cce", "activation=none",
                      "optimizer.name=sgd", "optimizer.lr=1e6,0.01", *TINY, f"logger.tracking_uri={store}",
                      cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "xentlab sweep: 1 ran, 2 skipped, 1 failed" in out.stdout
    assert "optimizer.lr=1000000.0: NonFiniteLoss: loss became NaN or infinite at step 2" in out.stdout
    client, runs = runs_in(store)
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    members = {r.data.params["optimizer.lr"]: r for r in runs if r is not parent}
    assert set(members) == {"1000000.0", "0.01"}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in members.values())
    assert members["1000000.0"].info.status == "FAILED" and "at step 2" in members["1000000.0"].data.tags["error"]
    assert members["0.01"].info.status == "FINISHED" and members["0.01"].data.tags["batch_members"] == "2"
    assert [m.step for m in client.get_metric_history(members["0.01"].info.run_id, "val/loss")] == [0, 1]
    assert "val/loss" not in members["1000000.0"].data.metrics  # nothing logged after it diverged


def test_the_launcher_composes_a_config_per_group_and_each_job_equals_what_hydra_composes():
    """The sweeper validates every job by composing it; the launcher composes once per distinct
    rest of the overrides, derives the jobs' configs from it, and takes them instead of composing
    again. Each equals Hydra's own composition of that job, hydra node included."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from hydra_plugins.xentlab_batched_launcher.batched_launcher import ComposeOnce
    from xentlab import registration

    from conftest import ROOT

    registration.register()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(ROOT / "conf")))
    master = loader.load_configuration("config", overrides=["experiment=fair_grid_mnist"], run_mode=RunMode.MULTIRUN)
    hydra_compose, composed = loader.load_sweep_config, []
    loader.load_sweep_config = lambda master_config, sweep_overrides: (
        composed.append(list(sweep_overrides)) or hydra_compose(master_config, sweep_overrides))
    once = ComposeOnce(loader)
    grid = preset_jobs("fair_grid_mnist")
    jobs = [["experiment=fair_grid_mnist", *job] for job in grid[::5]] + [  # as the sweeper makes them
        ["loss=cce", "loss.label_smoothing=0.1", "seeds=[1,2]", "model.init_scale=2"],
        ["activation=sigmoid", "loss=bce", "optimizer.momentum=0.5", "optimizer.weight_decay=1e-3",
         "logger.run_name=x"], ["loss=mse", "seed=3", "data.subset=100"], ["seed=4", "+extra=1"]]
    for job in jobs:  # as Hydra's Sweeper.validate_batch_is_legal does
        loader.load_sweep_config(master_config=master, sweep_overrides=job)
    taken = [once.take(master, job) for job in jobs]
    groups_of = ("experiment", "activation", "loss", "data.subset", "+extra")  # what is not a member's value
    distinct = {tuple(o for o in job if o.split("=")[0] in groups_of) for job in jobs}
    assert len(composed) == len(distinct) < len(jobs)  # once per group, not per job
    assert len(grid) == 108 and {len(j) for j in grid} == {4}
    for job, cfg in zip(jobs, taken):
        assert OmegaConf.to_container(cfg) == OmegaConf.to_container(hydra_compose(master, job)), job
        assert OmegaConf.to_yaml(cfg.hydra.overrides) == OmegaConf.to_yaml({"hydra": [], "task": job})
    once.take(master, jobs[0])  # a config is handed out once; asked again, it is derived again
    assert len(composed) == len(distinct)


@pytest.mark.parametrize("preset", ["fair_grid_binary", "fair_grid_mnist", "fair_grid_multilabel"])
def test_fair_grid_presets_batch_every_cell_at_three_learning_rates_and_three_seeds(preset):
    import itertools

    from hydra import compose, initialize_config_dir

    from xentlab import losses, registration
    from xentlab.errors import ConfigError

    from conftest import ROOT

    registration.register()
    jobs = preset_jobs(preset)
    cells = {tuple(o.split("=")[1] for o in job if o.startswith(("activation=", "loss="))) for job in jobs}
    assert cells == set(itertools.product(losses.ACTIVATIONS, losses.LOSSES))
    assert {float(o.split("=")[1]) for job in jobs for o in job
            if o.startswith("optimizer.lr=")} == {3e-4, 1e-3, 3e-3}
    assert len(jobs) == len(cells) * 3 * 3
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        hydra_cfg = compose(config_name="config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    assert hydra_cfg.hydra.launcher._target_.endswith(".BatchedLauncher")
    # learning rate and seed may differ within a model: one of each is enough to see the models
    valid = []
    for cfg in configs(*[(f"experiment={preset}", *job) for job in jobs
                         if "seed=0" in job and "optimizer.lr=0.001" in job]):
        try:
            valid += [(None, part) for part in train.member_runs(cfg, train.plan(cfg))]
        except ConfigError:
            continue
    outputs = {part.plan.num_outputs for _, part in valid}
    assert len(outputs) == (2 if preset == "fair_grid_binary" else 1)  # binary: sigmoid/none 1 output, softmax 2
    assert len(batching.groups(valid, max_members=64)) == len(outputs)


def test_stacked_blocks_stay_the_weights_the_forward_uses_after_a_cast_and_get_their_gradients():
    """The optimizer steps the parameter blocks; the forward pass reads one tensor per parameter.
    After a cast (as Lightning's device moves and precisions do) a step on a block must still
    move that member's outputs, and each block gets exactly its members' gradients, as each
    network alone computes them in float64."""
    import torch

    from xentlab.module import MemberSettings, Stacked

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
            for _ in range(4)]
    stacked = Stacked(nets, [MemberSettings("mse", "softmax", lr=lr) for lr in (1e-3, 1e-3, 1e-2, 1e-2)]).double()
    x = torch.randn(4, 5, 6, dtype=torch.float64)
    stacked(x, shared=False).square().sum().backward()
    for (start, stop), block in zip(stacked.blocks, stacked.parameter_blocks()):
        for i in range(start, stop):
            alone = [p.detach().double().requires_grad_() for p in nets[i].parameters()]
            w1, b1, w2, b2 = alone
            (torch.tanh(x[i] @ w1.T + b1) @ w2.T + b2).square().sum().backward()
            for p, q in zip(block, alone):  # stored weights are (in, out): the network's transposed
                grad = p.grad[i - start]
                torch.testing.assert_close(grad.T if grad.dim() == 2 else grad, q.grad)
    before = stacked(x, shared=False).detach()
    with torch.no_grad():
        stacked.parameter_blocks()[1][-1].add_(1.0)  # the output bias of members 2 and 3
    after = stacked(x, shared=False).detach()
    torch.testing.assert_close(after[:2], before[:2])
    torch.testing.assert_close(after[2:], before[2:] + 1.0)
