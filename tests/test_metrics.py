"""Yardsticks follow the task, not the loss or the output shape."""

import math

import pytest
import torch

from xentlab.metrics import Yardsticks
from xentlab.yardsticks import available


def test_multiclass_against_hand_values():
    z = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0]])
    y = torch.tensor([0, 1, 2])
    m = Yardsticks("multiclass", ["softmax"], 3)
    m.update(z[None], y)
    got = {k: float(v) for k, v in m.compute().items()}
    p = torch.softmax(z, -1)
    assert got["acc"] == pytest.approx(2 / 3)
    assert got["nll"] == pytest.approx(float(-torch.log(p[torch.arange(3), y]).mean()), rel=1e-5)
    assert got["brier"] == pytest.approx(float(((p - torch.eye(3)[y]) ** 2).sum(1).mean()), rel=1e-5)
    assert 0 <= got["ece"] <= 1


def test_binary_single_output_and_two_softmax_outputs_agree():
    logit = torch.tensor([2.0, -1.0, 0.5, -3.0])
    y = torch.tensor([1, 1, 0, 0])
    one = Yardsticks("binary", ["sigmoid"], 2)
    one.update(logit.unsqueeze(1)[None], y)
    two = Yardsticks("binary", ["softmax"], 2)
    two.update(torch.stack([torch.zeros(4), logit], 1)[None], y)  # softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]
    a, b = one.compute(), two.compute()
    for k in set(a) - {"loss"}:  # no loss given
        assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-5), k
    assert float(a["acc"]) == 0.5
    assert float(a["nll"]) == pytest.approx(
        float(torch.nn.functional.binary_cross_entropy_with_logits(logit, y.float())), rel=1e-5)


def test_multilabel_thresholds_each_tag_and_scores_exact_match():
    y = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    z = torch.tensor([[3.0, 2.0, -2.0], [1.0, 2.0, -1.0]])  # second row: tag 0 wrongly on
    m = Yardsticks("multilabel", ["sigmoid"], 3)
    m.update(z[None], y)
    got = {k: float(v) for k, v in m.compute().items()}
    assert got["subset_acc"] == 0.5 and got["hamming_acc"] == pytest.approx(5 / 6)
    assert got["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1))
    assert set(got) == {"loss", *available("multilabel", "sigmoid")}


def test_linear_outputs_are_thresholded_at_one_half_not_squashed():
    # MSE on raw outputs regresses onto 0/1: 0.3 means "no", although sigmoid(0.3) > 0.5
    y = torch.tensor([[0.0, 1.0]])
    m = Yardsticks("multilabel", ["none"], 2)
    m.update(torch.tensor([[0.3, 0.9]])[None], y)
    got = m.compute()
    assert float(got["subset_acc"]) == 1.0
    assert "nll" not in got and "brier" not in got and "ece" not in got


def test_sigmoid_multiclass_nll_uses_the_renormalised_distribution():
    z = torch.tensor([[0.0, 0.0]])
    m = Yardsticks("multiclass", ["sigmoid"], 2)
    m.update(z[None], torch.tensor([0]))
    assert float(m.compute()["nll"]) == pytest.approx(math.log(2), rel=1e-6)
