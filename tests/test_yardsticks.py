"""The yardstick table (``xentlab.yardsticks``): every declared direction agrees with what the
metric does, and a new yardstick is one declaration plus its formula (and any statistic it reads)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import top_k_accuracy_score

from xentlab import analysis, metrics, yardsticks

CLASSES = {"binary": 2, "multiclass": 4, "multilabel": 3}


def outputs(kind: str, n: int = 400, seed: int = 0):
    """Labels, perfect logits for them and uninformative logits (softmax for multiclass, else sigmoid)."""
    g = torch.Generator().manual_seed(seed)
    c = CLASSES[kind]
    if kind == "multilabel":
        y = (torch.rand(n, c, generator=g) < 0.5).float()
        perfect = (y * 2 - 1) * 6
        return y, perfect, torch.randn(n, c, generator=g), "sigmoid"
    y = torch.arange(n) % c  # every class present, so per-class recall is defined
    if kind == "binary":
        return y, ((y.float() * 2 - 1) * 6).unsqueeze(1), torch.randn(n, 1, generator=g), "sigmoid"
    return y, torch.nn.functional.one_hot(y, c).float() * 12, torch.randn(n, c, generator=g), "softmax"


def scores(kind: str, activation: str, z: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    m = metrics.Yardsticks(kind, [activation], CLASSES[kind], per_class=kind != "multilabel")
    m.update(z[None], y)
    return {k: float(v) for k, v in m.compute().items() if k != "loss"}  # no loss given


@pytest.mark.parametrize("kind", yardsticks.KINDS)
def test_each_declared_direction_ranks_a_perfect_model_above_a_guessing_one(kind):
    y, perfect, guess, activation = outputs(kind)
    good, bad = scores(kind, activation, perfect, y), scores(kind, activation, guess, y)
    assert set(good) >= set(yardsticks.of(kind, per_class=False))
    for name in good:
        if yardsticks.higher_is_better(name):
            assert good[name] > bad[name], name
        else:
            assert good[name] < bad[name], name


def test_every_yardstick_has_a_formula_and_a_kind():
    assert set(metrics.FORMULAS) == set(yardsticks.TABLE)
    for y in yardsticks.TABLE.values():
        assert y.kinds and set(y.kinds) <= set(yardsticks.KINDS)
    for kind in yardsticks.KINDS:  # the ranking yardstick of each kind has a default target
        assert 0 < yardsticks.target(kind) < 1


def test_adding_a_yardstick_is_one_declaration_and_its_formula(monkeypatch):
    name = "top2_acc"
    monkeypatch.setitem(yardsticks.TABLE, name, yardsticks.Yardstick(name, ("multiclass",), True,
                                                                     needs_probabilities=True))
    monkeypatch.setitem(metrics.STATISTICS, "top2", metrics.Statistic(
        lambda c: (), lambda b: (b.probs.topk(2, -1).indices == b.y.unsqueeze(-1)).any(-1).sum(1)))
    monkeypatch.setitem(metrics.FORMULAS, name, metrics.Formula(("top2", "n"), lambda hits, n: hits / n))
    g = torch.Generator().manual_seed(3)
    z, y = torch.randn(500, 5, generator=g), torch.randint(0, 5, (500,), generator=g)
    m = metrics.Yardsticks("multiclass", ["softmax"], 5)
    for zb, yb in zip(z.split(128), y.split(128)):
        m.update(zb[None], yb)
    want = top_k_accuracy_score(y.numpy(), torch.softmax(z.double(), -1).numpy(), k=2, labels=np.arange(5))
    assert float(m.compute()[name]) == pytest.approx(want, rel=1e-6)
    assert name not in metrics.Yardsticks("multiclass", ["none"], 5).names  # needs probabilities
    # the report picks it up: a column, ranked by its declared direction
    runs = [analysis.RunInfo(f"r{s}", "mnist", "multiclass", "softmax", loss, str(s), "valid",
                    {"test/acc": 0.9, f"test/{name}": 0.95 + 0.01 * (loss == "cce") + 0.001 * s, "val/acc": 0.9})
            for loss in ("cce", "mse") for s in range(3)]
    (table,) = analysis.aggregate(runs).values()
    assert name in table["columns"]
    assert [table["rows"][i]["loss"] for i in table["best"][name]] == ["cce"]
