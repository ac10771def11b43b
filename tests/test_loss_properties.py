"""Properties of the stable loss path over random shapes, losses, activations, label smoothing
and logits up to ±1e4 (hypothesis): finite values and gradients, equal to a float64 reference
written with SciPy's log-space functions, and independent of the order of the examples."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import expit, log_expit, log_softmax, logsumexp, softmax

from xentlab import losses

LOGITS = st.floats(-1e4, 1e4, width=32)
UNIT = st.floats(0.0, 1.0, width=32)


@st.composite
def cases(draw):
    loss = draw(st.sampled_from(("bce", "cce", "sparse_cce", "mse")))
    activation = draw(st.sampled_from(("sigmoid", "softmax", "none") if loss == "mse" else ("sigmoid", "softmax")))
    n = draw(st.integers(1, 8))
    c = draw(st.integers(2 if activation == "softmax" else 1, 6))
    z = draw(arrays(np.float32, (n, c), elements=LOGITS))
    if loss == "sparse_cce":
        y = draw(arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    else:
        y = draw(arrays(np.float32, (n, c), elements=UNIT))
        if loss == "cce":
            y = (y + 1e-3) / (y + 1e-3).sum(-1, keepdims=True)  # rows of a distribution
    smoothing = 0.0 if loss == "mse" else draw(st.sampled_from((0.0, 0.1, 0.45)))
    return loss, activation, z, y, smoothing


def reference(loss, activation, z, y, s):
    """Per-example loss in float64."""
    z = z.astype(np.float64)
    c = z.shape[-1]
    if loss == "mse":
        p = {"sigmoid": expit, "softmax": lambda v: softmax(v, axis=-1), "none": lambda v: v}[activation](z)
        return ((y - p) ** 2).mean(-1)
    if loss == "bce":
        y = y * (1 - s) + s / 2
        if activation == "sigmoid":
            log_p, log_1mp = log_expit(z), log_expit(-z)
        else:  # log(1 - softmax_c) = logsumexp over the other outputs - logsumexp over all
            others = np.where(np.eye(c, dtype=bool), -np.inf, z[..., None, :])
            log_p, log_1mp = log_softmax(z, axis=-1), logsumexp(others, axis=-1) - logsumexp(z, axis=-1, keepdims=True)
        return -(y * log_p + (1 - y) * log_1mp).mean(-1)
    if loss == "sparse_cce":
        y = np.eye(c)[y]
    y = y * (1 - s) + s / c
    if activation == "softmax":
        log_q = log_softmax(z, axis=-1)
    else:  # renormalised sigmoids
        log_q = log_expit(z) - logsumexp(log_expit(z), axis=-1, keepdims=True)
    return -(y * log_q).sum(-1)


def compute(loss, activation, z, y, s, reduction="none"):
    return losses.compute(loss, activation, z, y, label_smoothing=s, reduction=reduction)


@settings(max_examples=300, deadline=None)
@given(cases())
def test_stable_path_is_finite_with_finite_gradients_and_equals_float64(case):
    loss, activation, z_np, y_np, s = case
    z, y = torch.from_numpy(z_np).requires_grad_(), torch.from_numpy(y_np)
    per_example = compute(loss, activation, z, y, s)
    per_example.mean().backward()
    assert torch.isfinite(per_example).all() and torch.isfinite(z.grad).all()
    scale = 1.0 + float(np.abs(z_np).max())  # float32 keeps ~7 digits of the largest logit
    np.testing.assert_allclose(per_example.detach().double().numpy(), reference(loss, activation, z_np, y_np, s),
                               rtol=1e-5, atol=2e-6 * scale)


@settings(max_examples=200, deadline=None)
@given(cases(), st.randoms(use_true_random=False))
def test_examples_do_not_depend_on_their_order_in_the_batch(case, rnd):
    loss, activation, z_np, y_np, s = case
    order = list(range(len(z_np)))
    rnd.shuffle(order)
    z, y = torch.from_numpy(z_np), torch.from_numpy(y_np)
    straight = compute(loss, activation, z, y, s)
    shuffled = compute(loss, activation, z[order], y[order], s)
    scale = 1.0 + float(np.abs(z_np).max())
    torch.testing.assert_close(shuffled, straight[order], rtol=1e-6, atol=1e-6 * scale)
    torch.testing.assert_close(compute(loss, activation, z[order], y[order], s, "mean"),
                               compute(loss, activation, z, y, s, "mean"), rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("loss, targets", [("bce", torch.ones(4, 1)), ("cce", torch.ones(4, 1)),
                                           ("sparse_cce", torch.zeros(4, dtype=torch.long)), ("mse", torch.ones(4, 1))])
@pytest.mark.parametrize("numerics", ["stable", "keras"])
def test_softmax_over_one_output_is_refused(loss, targets, numerics):
    with pytest.raises(ValueError, match=r"activation='softmax' over 1 output is the constant 1"):
        losses.compute(loss, "softmax", torch.randn(4, 1), targets, numerics=numerics)
