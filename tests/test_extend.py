"""Adding a loss or a task takes the steps README.md shows ("Adding a loss", "Adding a
task"); these tests take them, outside the package, and run the result."""

import itertools
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from xentlab import compat, losses

from conftest import DATA_ROOT, ROOT, runs_in

TOY_LOSS = '''
import torch
from xentlab import compat, losses


@losses.register
class SquaredHinge(losses.Loss):
    """``mean_c max(0, 1 - t_c p_c)^2`` with ``t = 2y - 1`` and ``p = activation(outputs)``.

    Targets: float 0/1, same shape as the outputs. No label smoothing.

    >>> losses.compute("squared_hinge", "none", torch.tensor([[0.5, -2.0]]), torch.tensor([[1.0, 0.0]]))
    tensor(0.1250)
    """

    name = "squared_hinge"
    target_format = "float 0/1 targets with the same shape as the outputs"
    unit_targets = True
    natural_activation = {"binary": "none", "multiclass": "none", "multilabel": "none"}

    def stable(self, activation, z, y, s):
        return torch.relu(1 - (2 * y - 1) * losses.activate(activation, z)).pow(2).mean(-1)


compat.declare("squared_hinge", {
    (kind, act): compat.Cell(compat.Status.VALID if act == "none" else compat.Status.QUESTIONABLE,
                             "a margin loss on raw scores" if act == "none" else "a margin of 1 on probabilities")
    for kind in compat.KINDS for act in compat.ACTIVATIONS})
'''


def run_with_plugin(tmp_path, module: str, source: str, argv: list[str]) -> None:
    """``python run.py <argv>`` after importing ``source`` as ``module`` (and running its doctests)."""
    (tmp_path / f"{module}.py").write_text(source)
    code = textwrap.dedent(f"""
        import doctest, runpy, sys
        import {module}
        assert doctest.testmod({module}).failed == 0
        sys.argv = {argv!r}
        runpy.run_path({str(ROOT / 'run.py')!r}, run_name="__main__")
    """)
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": path},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_a_loss_declared_outside_the_package_trains_end_to_end_through_run_py(tmp_path, mnist_root, store):
    (tmp_path / "conf" / "loss").mkdir(parents=True)
    (tmp_path / "conf" / "loss" / "squared_hinge.yaml").write_text("name: squared_hinge\n")
    argv = ["run.py", "task=binary", "loss=squared_hinge", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
            "data.subset=3000", "trainer.max_epochs=2", "trainer.progress_bar=false", f"data.root={DATA_ROOT}",
            f"logger.tracking_uri={store}", f"hydra.run.dir={tmp_path / 'out'}"]
    run_with_plugin(tmp_path, "toy_loss", TOY_LOSS, argv)
    _, runs = runs_in(store)
    (run,) = runs
    assert run.info.status == "FINISHED"
    assert (run.data.tags["loss"], run.data.tags["activation"], run.data.tags["combination_status"]) == (
        "squared_hinge", "none", "valid")
    assert run.data.params["loss.name"] == "squared_hinge"
    # a linear score trained on the margin loss separates odd from even digits far above chance (0.5)
    assert run.data.metrics["test/acc"] > 0.8


def test_the_toy_loss_value_matches_its_closed_form():
    exec(compile(TOY_LOSS, "toy_loss", "exec"), {})
    try:
        z, y = torch.tensor([[0.5, -2.0], [3.0, 0.2]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        # by hand: row 1: (1-0.5)^2=0.25, 0 → 0.125; row 2: (1+3)^2=16, (1-0.2)^2=0.64 → 8.32
        assert torch.allclose(losses.compute("squared_hinge", "none", z, y, reduction="none"),
                              torch.tensor([0.125, 8.32]))
        assert {(k, a) for k, a, loss in compat.TABLE if loss == "squared_hinge"} == set(
            itertools.product(compat.KINDS, compat.ACTIVATIONS))
    finally:
        losses.LOSSES.pop("squared_hinge")
        for key in [k for k in compat.TABLE if k[2] == "squared_hinge"]:
            del compat.TABLE[key]


TOY_TASK = '''
from dataclasses import dataclass

import torch

from xentlab.config import TaskConfig
from xentlab.tasks import Split, Splits, task


@dataclass
class HalfSpaceOptions(TaskConfig):
    dims: int = 20
    train_size: int = 4000


@task("half_space", kind="binary", input_shape=(20,), num_classes=2, options=HalfSpaceOptions)
def build(task_cfg, data_cfg) -> Splits:
    """Gaussian points labelled by the side of a fixed hyperplane they lie on."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(task_cfg.dims, generator=g)

    def split(n):
        x = torch.randn(n, task_cfg.dims, generator=g)
        return Split(x, (x @ w > 0).long())

    return Splits(split(task_cfg.train_size), split(1000), split(1000))
'''


@pytest.mark.slow
def test_a_task_declared_outside_the_package_is_a_hydra_choice_and_trains(tmp_path, store):
    argv = ["run.py", "task=half_space", "task.train_size=3000", "loss=bce", "model.hidden=[32]",
            "optimizer.lr=0.01", "trainer.max_epochs=5", "trainer.progress_bar=false", f"logger.tracking_uri={store}",
            f"hydra.run.dir={tmp_path / 'out'}"]
    run_with_plugin(tmp_path, "toy_task", TOY_TASK, argv)
    _, runs = runs_in(store)
    (run,) = runs
    assert run.info.status == "FINISHED" and run.data.tags["task"] == "half_space"
    assert run.data.params["task.train_size"] == "3000" and run.data.params["task.dims"] == "20"
    # a half-space is exactly what logistic regression represents: near-perfect, far above chance (0.5)
    assert run.data.metrics["test/acc"] > 0.95
