"""Every yardstick of every task kind × activation against scikit-learn or a hand value in
float64, on seeded random outputs fed in uneven batches (what an evaluation epoch does): one
member alone, K members of mixed activations measured at once, and a K-member model's logged values."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from scipy.special import expit, softmax
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    hamming_loss,
    log_loss,
    recall_score,
)
from torch import nn

from xentlab import losses, metric_keys
from xentlab.data import TensorBatches
from xentlab.metrics import N_BINS, Yardsticks
from xentlab.module import Classifier, MemberSettings
from xentlab.yardsticks import available

N, BATCHES = 300, (70, 130, 100)


def ece(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Expected calibration error, 15 equal-width bins: sum_b n_b/N |mean(correct_b) - mean(confidence_b)|."""
    bins = np.minimum((confidence * N_BINS).astype(int), N_BINS - 1)
    return sum(abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean()
               for b in range(N_BINS) if (bins == b).any())


def probabilities(activation: str, z: np.ndarray) -> np.ndarray:
    return {"sigmoid": expit, "softmax": lambda v: softmax(v, axis=-1), "none": lambda v: v}[activation](z)


def references(kind: str, activation: str, z: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The yardsticks of ``activation(z)`` against ``y`` (binary and multiclass: with the per-class ones)."""
    p = probabilities(activation, z)
    if kind == "binary":
        p1 = p[:, 1] if z.shape[1] == 2 else p[:, 0]
        ref = {"acc": accuracy_score(y, p1 >= 0.5), **per_class(y, (p1 >= 0.5).astype(int), 2)}
        if activation != "none":
            ref.update(nll=log_loss(y, p1, labels=[0, 1]), brier=np.mean((p1 - y) ** 2), ece=ece(p1, y))
        return ref
    if kind == "multiclass":
        ref = {"acc": accuracy_score(y, z.argmax(1)), **per_class(y, z.argmax(1), z.shape[1])}
        if activation != "none":
            q = p / p.sum(1, keepdims=True)  # sigmoid outputs: the renormalised distribution
            one_hot = np.eye(z.shape[1])[y]
            ref.update(nll=log_loss(y, q, labels=range(z.shape[1])), brier=np.mean(((q - one_hot) ** 2).sum(1)),
                       ece=ece(q.max(1), q.argmax(1) == y))
        return ref
    hard = (p >= 0.5).astype(int)
    ref = {"subset_acc": accuracy_score(y, hard), "hamming_acc": 1 - hamming_loss(y, hard),
           "micro_f1": f1_score(y, hard, average="micro"), "macro_f1": f1_score(y, hard, average="macro")}
    if activation != "none":
        ref.update(map=average_precision_score(y, p, average="macro"),
                   nll=log_loss(y.ravel(), p.ravel(), labels=[0, 1]), brier=np.mean((p - y) ** 2),
                   ece=ece(p.ravel(), y.ravel()))
    return ref


def per_class(y: np.ndarray, predicted: np.ndarray, classes: int) -> dict[str, float]:
    recalls = recall_score(y, predicted, average=None, labels=range(classes), zero_division=0)
    return {"balanced_acc": balanced_accuracy_score(y, predicted), **{f"recall_{c}": r for c, r in enumerate(recalls)}}


def logged(kind: str, activation: str, classes: int) -> set[str]:
    """The names a member reports (the per-class recall under one name per class)."""
    names = set(available(kind, activation, per_class=kind != "multilabel")) - {"recall"}
    return names | ({f"recall_{c}" for c in range(classes)} if kind != "multilabel" else set())


def random_outputs(kind: str, activation: str, g: torch.Generator, n: int = N) -> tuple[torch.Tensor, int]:
    """Outputs ``(n, outputs)`` for ``activation`` and the number of classes."""
    classes = {"binary": 2, "multiclass": 5, "multilabel": 4}[kind]
    outputs = 2 if kind == "binary" and activation == "softmax" else (1 if kind == "binary" else classes)
    if activation == "none":
        return torch.rand(n, outputs, generator=g) * 1.4 - 0.2, classes  # a regression onto 0/1 lands near [0, 1]
    return torch.randn(n, outputs, generator=g) * 2, classes


def random_labels(kind: str, classes: int, g: torch.Generator, n: int = N) -> torch.Tensor:
    if kind == "multilabel":
        return (torch.rand(n, classes, generator=g) < 0.4).float()
    return torch.randint(0, classes, (n,), generator=g)


def assert_equal_to_references(got: dict[str, float], want: dict[str, float], what) -> None:
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-4, abs=1e-5), (what, name)


CASES = [(kind, act) for kind in ("binary", "multiclass", "multilabel") for act in ("sigmoid", "softmax", "none")]


@pytest.mark.parametrize("kind, activation", CASES)
def test_yardsticks_equal_sklearn_and_hand_values(kind, activation):
    g = torch.Generator().manual_seed(CASES.index((kind, activation)))
    z, classes = random_outputs(kind, activation, g)
    y = random_labels(kind, classes, g)
    m = Yardsticks(kind, [activation], classes, per_class=True)
    for zb, yb in zip(z.split(BATCHES), y.split(BATCHES)):
        m.update(zb.unsqueeze(0), yb)
    got = {k: float(v[0]) for k, v in m.compute().items()}
    want = references(kind, activation, z.double().numpy(), y.numpy().astype(int))
    assert set(got) - {"loss"} == set(want) == logged(kind, activation, classes) == set(m.keys[0]) - {"loss"}
    assert_equal_to_references(got, want, activation)


MIXED = {"binary": ("sigmoid", "none", "sigmoid"), "multiclass": ("softmax", "none", "sigmoid", "softmax"),
         "multilabel": ("sigmoid", "softmax", "none", "sigmoid")}


@pytest.mark.parametrize("kind", MIXED)
def test_members_of_mixed_activations_each_equal_sklearn_on_their_own_outputs(kind):
    """One pass per activation group: the rows hold the members in another order (a compacted model's
    rows are a subset), one row is left out, and each member's values are its own."""
    activations = MIXED[kind]
    g = torch.Generator().manual_seed(7)
    z, classes = random_outputs(kind, "sigmoid", g)
    z = torch.stack([z] + [random_outputs(kind, a, g)[0] for a in activations[1:]])  # (K, N, outputs)
    y = random_labels(kind, classes, g)
    k = len(activations)
    members = [k - 1 - r for r in range(k)] + [None]  # rows reversed, and a row no member reads
    m = Yardsticks(kind, activations, classes, per_class=True)
    loss = torch.rand(k + 1, N, generator=g)
    rows = torch.cat([z.flip(0), z[:1] * 100])
    for zb, yb, lb in zip(rows.split(BATCHES, 1), y.split(BATCHES), loss.split(BATCHES, 1)):
        m.update(zb, yb, lb, members)
    values = m.compute()
    for i, activation in enumerate(activations):
        got = {name: float(values[name][i]) for name in m.keys[i]}
        assert set(got) == logged(kind, activation, classes) | {"loss"}
        want = references(kind, activation, z[i].double().numpy(), y.numpy().astype(int))
        want["loss"] = float(loss[k - 1 - i].double().mean())
        assert_equal_to_references(got, want, (i, activation))
        assert all(np.isnan(float(values[name][i])) for name in set(values) - set(got))


def test_map_counts_a_run_of_tied_scores_as_one_threshold():
    """The runs are those of the float32 probabilities the members report (softmax can tie two
    different rows' values in float32 that float64 tells apart)."""
    g = torch.Generator().manual_seed(3)
    z = (torch.randn(2, N, 3, generator=g) * 2).round() / 2  # few distinct scores: long runs of ties
    y = (torch.rand(N, 3, generator=g) < 0.3).float()
    y[:, 2] = 0  # a tag without positives: its AP is 0, as torchmetrics and scikit-learn count it
    m = Yardsticks("multilabel", ["sigmoid", "softmax"], 3)
    for zb, yb in zip(z.split(BATCHES, 1), y.split(BATCHES)):
        m.update(zb, yb)
    got = m.compute()["map"]
    for i, p in enumerate((torch.sigmoid(z[0]), torch.softmax(z[1], -1))):
        want = np.mean([average_precision_score(y[:, t].numpy(), p[:, t].double().numpy()) if y[:, t].any() else 0.0
                        for t in range(3)])
        assert float(got[i]) == pytest.approx(want, rel=1e-6)


def _model(kind: str, settings: list[MemberSettings], outputs: int, classes: int) -> Classifier:
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, outputs)) for _ in settings]
    return Classifier(nets, settings, kind=kind, num_classes=classes, optimizer="adam", check_every=1,
                      per_class=True)


MODELS = {
    "multiclass": [MemberSettings("sparse_cce", "softmax"), MemberSettings("bce", "sigmoid"),
                   MemberSettings("mse", "none"), MemberSettings("cce", "sigmoid", label_smoothing=0.1),
                   MemberSettings("mse", "softmax")],
    "multilabel": [MemberSettings("bce", "sigmoid"), MemberSettings("mse", "none"), MemberSettings("bce", "softmax")],
    "binary": [MemberSettings("bce", "sigmoid"), MemberSettings("mse", "none"), MemberSettings("mse", "sigmoid")],
}


@pytest.mark.parametrize("kind", MODELS)
def test_a_k_member_models_logged_values_are_each_members_own(kind):
    """A model of mixed activations and losses, validated: each member logs exactly its keys, each
    value scikit-learn's on that member's own outputs, its loss that of its own loss."""
    settings = MODELS[kind]
    classes = {"binary": 2, "multiclass": 5, "multilabel": 4}[kind]
    outputs = 1 if kind == "binary" else classes
    module = _model(kind, settings, outputs, classes)
    g = torch.Generator().manual_seed(11)
    x, y = torch.randn(N, 6, generator=g), random_labels(kind, classes, g)
    targets = [losses.encode_targets(loss, y, outputs) for loss in module.target_losses]
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, dataloaders=TensorBatches((x, y, *targets), 128), verbose=False)
    metrics = trainer.callback_metrics
    with torch.no_grad():
        z = module(x)
    for i, s in enumerate(settings):
        got = {name: float(v) for name, v in metric_keys.of(metrics, i).items()}
        assert set(got) == {f"val/{name}" for name in logged(kind, s.activation, classes) | {"loss"}}
        want = references(kind, s.activation, z[i].double().numpy(), y.numpy().astype(int))
        target = targets[module.target_losses.index(s.loss)]
        want["loss"] = float(losses.compute(s.loss, s.activation, z[i], target, label_smoothing=s.label_smoothing))
        assert_equal_to_references({k.removeprefix("val/"): v for k, v in got.items()}, want, (i, s))


def test_map_ranks_by_the_probabilities_not_the_raw_outputs():
    """Softmax shifts each example's outputs by its own offset: ranking a tag by raw outputs
    is not ranking it by the model's probabilities. Here the two orders disagree."""
    z = torch.tensor([[5.0, 4.0], [0.0, -3.0], [2.0, 2.5]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    m = Yardsticks("multilabel", ["softmax"], 2)
    m.update(z.unsqueeze(0), y)
    p = softmax(z.double().numpy(), axis=-1)
    assert average_precision_score(y.numpy(), p, average="macro") != pytest.approx(
        average_precision_score(y.numpy(), z.numpy(), average="macro"))
    assert float(m.compute()["map"][0]) == pytest.approx(average_precision_score(y.numpy(), p, average="macro"))
