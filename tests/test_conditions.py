"""Label noise and class imbalance: exact counts, training split only, deterministic; the
per-class yardsticks that imbalance turns on, against scikit-learn."""

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from xentlab import tasks, train
from xentlab.errors import ConfigError
from xentlab.metrics import Yardsticks
from xentlab.tasks import conditions

from conftest import configs, preset_jobs
from conftest import make_config as make


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), classes=st.integers(2, 12), fraction=st.floats(0, 0.99), seed=st.integers(0, 50))
def test_label_noise_changes_exactly_the_fraction_and_each_to_another_valid_class(n, classes, fraction, seed):
    y = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))
    noisy = conditions.label_noise(y, fraction, classes, seed)
    assert int((noisy != y).sum()) == round(fraction * n)
    assert noisy.min() >= 0 and noisy.max() < classes and noisy.dtype == y.dtype
    assert torch.equal(noisy, conditions.label_noise(y, fraction, classes, seed))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 100), tags=st.integers(1, 10), fraction=st.floats(0, 0.99))
@example(n=35, tags=10, fraction=0.97)  # 0.97 * 35 * 10 rounds to 339, 0.97 * 350 to 340: the fraction is of all tags
def test_multilabel_noise_flips_exactly_the_fraction_of_tags(n, tags, fraction):
    y = (torch.rand(n, tags, generator=torch.Generator().manual_seed(n)) < 0.3).float()
    noisy = conditions.label_noise(y, fraction, tags, 0)
    assert int((noisy != y).sum()) == round(fraction * (n * tags))
    assert set(noisy.unique().tolist()) <= {0.0, 1.0}


def test_noise_is_symmetric_over_the_other_classes():
    y = torch.zeros(100_000, dtype=torch.long)
    counts = torch.bincount(conditions.label_noise(y, 0.9, 10, 0), minlength=10)
    assert counts[0] == 10_000
    expected = 90_000 / 9  # binomial sd ~ 95: 5 sd either side
    assert all(abs(int(c) - expected) < 500 for c in counts[1:])


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), min_size=2, max_size=8), ratio=st.floats(0.01, 1.0))
def test_imbalance_keeps_a_geometric_share_of_each_class(sizes, ratio):
    y = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])[torch.randperm(sum(sizes))]
    keep = conditions.imbalance_keep(y, ratio, len(sizes), 0)
    kept = torch.bincount(y[keep], minlength=len(sizes)).tolist()
    c = len(sizes) - 1
    assert kept == [max(1, round(ratio ** (k / c) * s)) for k, s in enumerate(sizes)]
    assert torch.equal(keep, keep.sort().values) and len(set(keep.tolist())) == len(keep)


def test_conditions_touch_the_training_split_only(mnist_root):
    clean = make("task=binary", "data.subset=4000", f"data.root={mnist_root}")
    both = make("task=binary", "data.subset=4000", f"data.root={mnist_root}", "task.label_noise=0.2",
                "task.imbalance=0.1", "loss=bce")
    spec = train.plan(both).task
    a, b = tasks.build(spec, clean.task, clean.data), tasks.build(spec, both.task, both.data)
    for name in ("val", "test"):
        assert (torch.equal(getattr(a, name).x, getattr(b, name).x)
                and torch.equal(getattr(a, name).y, getattr(b, name).y))
    keep = conditions.imbalance_keep(a.train.y, 0.1, 2, 0)
    n_pos = int((a.train.y == 1).sum())
    assert len(b.train) == int((a.train.y == 0).sum()) + round(0.1 * n_pos)
    assert torch.equal(b.train.x, a.train.x[keep])
    assert int((b.train.y != a.train.y[keep]).sum()) == round(0.2 * len(b.train))


def test_imbalance_on_a_multilabel_task_is_refused_before_any_data():
    with pytest.raises(ConfigError, match="multilabel task has no class sizes"):
        train.plan(make("task=multilabel", "loss=bce", "task.imbalance=0.1"))
    with pytest.raises(ConfigError, match=r"task.label_noise must be in \[0, 1\)"):
        train.plan(make("task.label_noise=1.0"))


def test_normalize_false_gives_raw_pixels(mnist_root):
    cfg = make("data.normalize=false", "data.subset=500", f"data.root={mnist_root}")
    from xentlab.tasks.idx_files import MNIST

    raw, _ = MNIST.load(mnist_root, train=False)
    s = tasks.build(train.plan(cfg).task, cfg.task, cfg.data)
    assert torch.equal(s.test.x, raw.float().unsqueeze(1) / 255.0)


@pytest.mark.parametrize("kind, c", [("binary", 2), ("multiclass", 5)])
def test_balanced_accuracy_and_per_class_recall_match_sklearn(kind, c):
    from sklearn.metrics import balanced_accuracy_score, recall_score

    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.zeros(300, dtype=torch.long), torch.randint(0, c, (60,), generator=g)])
    z = torch.randn(360, 1 if kind == "binary" else c, generator=g)
    ys = Yardsticks(kind, ["sigmoid" if kind == "binary" else "softmax"], c, per_class=True)
    for i in range(0, 360, 100):
        ys.update(z[i:i + 100][None], y[i:i + 100])
    got = ys.compute()
    pred = (z[:, 0] >= 0).long() if kind == "binary" else z.argmax(1)
    assert float(got["balanced_acc"]) == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-6)
    np.testing.assert_allclose([float(got[f"recall_{k}"]) for k in range(c)], recall_score(y, pred, average=None),
                               atol=1e-6)
    assert "balanced_acc" not in Yardsticks(kind, ["softmax"], c).names


@pytest.mark.parametrize("preset, conditions, runnable", [
    ("noise_grid_mnist", {("label_noise", v) for v in (0.0, 0.2, 0.4)}, 6),
    ("imbalance_grid_binary", {("imbalance", v) for v in (1.0, 0.1, 0.02)}, 15),
])
def test_condition_presets_plan_every_cell_under_every_condition(preset, conditions, runnable):
    jobs = preset_jobs(preset)
    planned, seen = [], set()
    for cfg in configs(*([f"experiment={preset}", *job] for job in jobs)):
        seen |= {(k, cfg.task[k]) for k in ("label_noise", "imbalance") if (k, cfg.task[k]) in conditions}
        try:
            planned.append(train.plan(cfg))
        except ConfigError as exc:
            assert "activation=sigmoid with loss=sparse_cce is invalid" in str(exc)
    assert seen == conditions and len(planned) == runnable
    assert all(p.batched and p.seeds == (0, 1, 2) for p in planned)
