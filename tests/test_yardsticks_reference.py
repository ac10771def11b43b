"""Every yardstick of every task kind × activation against scikit-learn or a hand value in
float64, on seeded random outputs fed in uneven batches (what an evaluation epoch does)."""

import numpy as np
import pytest
import torch
from scipy.special import expit, softmax
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, hamming_loss, log_loss

from xentlab.metrics import N_BINS, Yardsticks
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
    p = probabilities(activation, z)
    if kind == "binary":
        p1 = p[:, 1] if z.shape[1] == 2 else p[:, 0]
        ref = {"acc": accuracy_score(y, p1 >= 0.5)}
        if activation != "none":
            ref.update(nll=log_loss(y, p1, labels=[0, 1]), brier=np.mean((p1 - y) ** 2), ece=ece(p1, y))
        return ref
    if kind == "multiclass":
        ref = {"acc": accuracy_score(y, z.argmax(1))}
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


CASES = [(kind, act) for kind in ("binary", "multiclass", "multilabel") for act in ("sigmoid", "softmax", "none")]


@pytest.mark.parametrize("kind, activation", CASES)
def test_yardsticks_equal_sklearn_and_hand_values(kind, activation):
    g = torch.Generator().manual_seed(CASES.index((kind, activation)))
    classes = {"binary": 2, "multiclass": 5, "multilabel": 4}[kind]
    outputs = 2 if kind == "binary" and activation == "softmax" else (1 if kind == "binary" else classes)
    z = torch.randn(N, outputs, generator=g) * 2
    if activation == "none":
        z = torch.rand(N, outputs, generator=g) * 1.4 - 0.2  # a regression onto 0/1 lands near [0, 1]
    if kind == "multilabel":
        y = (torch.rand(N, classes, generator=g) < 0.4).float()
    else:
        y = torch.randint(0, classes, (N,), generator=g)
    m = Yardsticks(kind, activation, classes)
    for zb, yb in zip(z.split(BATCHES), y.split(BATCHES)):
        m.update(zb, yb)
    got = {k: float(v) for k, v in m.compute().items()}
    want = references(kind, activation, z.double().numpy(), y.numpy().astype(int))
    assert set(got) == set(want) == set(available(kind, activation))
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-4, abs=1e-5), name


def test_map_ranks_by_the_probabilities_not_the_raw_outputs():
    """Softmax shifts each example's outputs by its own offset: ranking a tag by raw outputs
    is not ranking it by the model's probabilities. Here the two orders disagree."""
    z = torch.tensor([[5.0, 4.0], [0.0, -3.0], [2.0, 2.5]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    m = Yardsticks("multilabel", "softmax", 2)
    m.update(z, y)
    p = softmax(z.double().numpy(), axis=-1)
    assert average_precision_score(y.numpy(), p, average="macro") != pytest.approx(
        average_precision_score(y.numpy(), z.numpy(), average="macro"))
    assert float(m.compute()["map"]) == pytest.approx(average_precision_score(y.numpy(), p, average="macro"))
