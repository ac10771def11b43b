"""Where losses are decided: activation × loss on raw network outputs, in pure torch.

Everything a training run, a test or a user needs goes through one function::

    compute(loss, activation, outputs, targets, *, label_smoothing=0.0,
            numerics="stable", reduction="mean")

``outputs`` are the raw outputs of the network (before the output activation). The
activation is part of the loss call so that each pair can be computed the numerically
right way:

* ``numerics="stable"`` (default) works in log space from the raw outputs
  (``logsigmoid``, ``log_softmax``, ``logsumexp``): no clipping, finite values and
  non-vanishing gradients for any finite outputs. The matched pairs are torch's fused
  functions (sigmoid+BCE is ``binary_cross_entropy_with_logits``, softmax+CCE and
  softmax+sparse CCE are ``cross_entropy``).
* ``numerics="keras"`` reproduces Keras 3 with ``from_logits=False`` on its torch and JAX
  backends: the activation is applied, probabilities are clipped to ``[1e-7, 1 - 1e-7]``
  and CCE renormalises them to sum to 1, so you can see what Keras would have reported,
  caps included. The TensorFlow backend differs: when the activation is the model's last
  operation it recovers the logits, so there sigmoid+BCE and softmax+CCE (and sparse CCE)
  equal ``numerics="stable"`` and CCE on sigmoid outputs becomes softmax CE of the logits.

Losses (Keras conventions; ``reduction="none"`` returns one value per example):

``bce``
    ``mean_c -[y_c log p_c + (1 - y_c) log(1 - p_c)]``. Targets: float, same shape as
    ``outputs`` (0/1, multi-hot or soft values in [0, 1]). Label smoothing
    ``y (1 - s) + s / 2``.
``cce``
    ``-sum_c y_c log q_c`` with ``q`` the predicted class distribution. Targets: float
    one-hot or soft rows, shape ``(N, C)``. Label smoothing ``y (1 - s) + s / C``.
``sparse_cce``
    ``-log q_y``. Targets: integer class indices, shape ``(N,)``, ``0 <= y < C``. Label
    smoothing as ``cce`` on the one-hot target (torch semantics; Keras has none, so it is
    refused with ``numerics="keras"``).
``mse``
    ``mean_c (y_c - p_c)^2``. Targets: float, same shape as ``outputs``. No label
    smoothing.

Activations: ``sigmoid`` (independent probabilities), ``softmax`` (one distribution over
the last axis; refused over a single output, where it is the constant 1), ``none``
(outputs used as they are; only MSE is defined on them in stable mode, cross-entropies on
unbounded outputs are what Keras computes with clipping).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

EPSILON = 1e-7
"""Keras's ``backend.epsilon()``: the clip used with ``numerics="keras"``."""

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid,
    "softmax": lambda z: torch.softmax(z, dim=-1),
    "none": lambda z: z,
}
NUMERICS = ("stable", "keras")
REDUCTIONS = ("mean", "sum", "none")

TARGET_FORMATS = {
    "bce": "float targets with the same shape as the outputs (0/1, multi-hot or soft values in [0, 1])",
    "cce": "float one-hot (or soft) rows of shape (N, C) that sum to 1",
    "sparse_cce": "integer class indices of shape (N,) with 0 <= y < C",
    "mse": "float targets with the same shape as the outputs",
}


def activate(activation: str, outputs: Tensor) -> Tensor:
    """Apply an output activation by name (what the model reports as its prediction)."""
    _check_choice("activation", activation, ACTIVATIONS)
    return ACTIVATIONS[activation](outputs)


# --- log-space building blocks (numerics="stable") -------------------------------------


def _log1m_softmax(z: Tensor) -> Tensor:
    """log(1 - softmax(z)_c) = logsumexp_{j != c} z_j - logsumexp_j z_j, exact in log space.

    Uses an (..., C, C) intermediate, fine for the tens of classes BCE-on-softmax is
    used with; ``log1p(-p)`` would give -inf as soon as p rounds to 1.
    """
    c = z.shape[-1]
    eye = torch.eye(c, dtype=torch.bool, device=z.device)
    others = z.unsqueeze(-2).masked_fill(eye, float("-inf"))
    return torch.logsumexp(others, dim=-1) - torch.logsumexp(z, dim=-1, keepdim=True)


def _log_renormalised_sigmoid(z: Tensor) -> Tensor:
    """log q_c for q = sigmoid(z) / sum_j sigmoid(z_j) (CCE on sigmoid outputs)."""
    ls = F.logsigmoid(z)
    return ls - torch.logsumexp(ls, dim=-1, keepdim=True)


_LOG_BERNOULLI: dict[str, Callable[[Tensor], tuple[Tensor, Tensor]]] = {
    # (log p, log(1 - p)) per output, for BCE
    "sigmoid": lambda z: (F.logsigmoid(z), F.logsigmoid(-z)),
    "softmax": lambda z: (torch.log_softmax(z, dim=-1), _log1m_softmax(z)),
}
_LOG_CATEGORICAL: dict[str, Callable[[Tensor], Tensor]] = {
    # log q over the last axis, for CCE and sparse CCE
    "softmax": lambda z: torch.log_softmax(z, dim=-1),
    "sigmoid": _log_renormalised_sigmoid,
}


def _no_stable_form(loss: str, activation: str) -> ValueError:
    return ValueError(
        f"loss={loss!r} needs probabilities, but activation={activation!r} leaves the outputs "
        f"unbounded, so there is no log-space form. Use activation='sigmoid' or 'softmax' "
        f"(fused into the stable logits form), or numerics='keras' to see what Keras computes "
        f"by clipping."
    )


def _bce_stable(activation: str, z: Tensor, y: Tensor) -> Tensor:
    if activation == "sigmoid":
        return F.binary_cross_entropy_with_logits(z, y, reduction="none").mean(-1)
    if activation not in _LOG_BERNOULLI:
        raise _no_stable_form("bce", activation)
    log_p, log_1mp = _LOG_BERNOULLI[activation](z)
    return -(y * log_p + (1 - y) * log_1mp).mean(-1)


def _cce_stable(activation: str, z: Tensor, y: Tensor) -> Tensor:
    if activation == "softmax":
        return F.cross_entropy(_classes_to_dim1(z), _classes_to_dim1(y), reduction="none")
    if activation not in _LOG_CATEGORICAL:
        raise _no_stable_form("cce", activation)
    return -(y * _LOG_CATEGORICAL[activation](z)).sum(-1)


def _sparse_cce_stable(activation: str, z: Tensor, y: Tensor, smoothing: float) -> Tensor:
    if activation == "softmax":
        return F.cross_entropy(_classes_to_dim1(z), y, label_smoothing=smoothing, reduction="none")
    if activation not in _LOG_CATEGORICAL:
        raise _no_stable_form("sparse_cce", activation)
    log_q = _LOG_CATEGORICAL[activation](z)
    nll = -log_q.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    if smoothing == 0.0:
        return nll
    return (1 - smoothing) * nll - smoothing * log_q.mean(-1)


def _classes_to_dim1(t: Tensor) -> Tensor:
    """torch's cross_entropy wants classes on dim 1; Keras puts them last."""
    return t if t.dim() <= 2 else t.movedim(-1, 1)


# --- Keras 3 from-probabilities forms (numerics="keras") -------------------------------


def _keras_probs(activation: str, z: Tensor) -> Tensor:
    return ACTIVATIONS[activation](z)


def _keras_bce(p: Tensor, y: Tensor) -> Tensor:
    p = p.clamp(EPSILON, 1.0 - EPSILON)
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean(-1)


def _keras_log_q(p: Tensor) -> Tensor:
    q = p / p.sum(-1, keepdim=True)
    return torch.log(q.clamp(EPSILON, 1.0 - EPSILON))


# --- smoothing, validation, dispatch ---------------------------------------------------


def smooth(loss: str, targets: Tensor, label_smoothing: float) -> Tensor:
    """Keras's label smoothing: BCE y(1-s)+s/2, CCE y(1-s)+s/C. Other losses unchanged."""
    if label_smoothing == 0.0:
        return targets
    if loss == "bce":
        return targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if loss == "cce":
        return targets * (1.0 - label_smoothing) + label_smoothing / targets.shape[-1]
    return targets


def validate_targets(loss: str, outputs: Tensor, targets: Tensor, *, check_values: bool = True) -> None:
    """Raise a ValueError naming the loss, the expected target format and what was given.

    Shape and dtype checks are free; ``check_values`` also checks ranges, which needs a
    device-to-host sync, so the training loop validates the whole data set once instead.
    """
    _check_choice("loss", loss, LOSSES)
    given = f"got {_describe(targets)} for outputs of shape {tuple(outputs.shape)}"
    n_out = outputs.shape[-1] if outputs.dim() else 1
    if loss == "sparse_cce":
        if targets.is_floating_point() or targets.dtype == torch.bool:
            hint = " (one-hot rows belong to loss='cce'; use targets.argmax(-1) for sparse_cce)" if (
                targets.shape == outputs.shape
            ) else ""
            raise ValueError(f"loss='sparse_cce' expects {TARGET_FORMATS[loss]}; {given}{hint}")
        if tuple(targets.shape) != tuple(outputs.shape[:-1]):
            raise ValueError(f"loss='sparse_cce' expects {TARGET_FORMATS[loss]}; {given}")
        if check_values and targets.numel():
            lo, hi = int(targets.min()), int(targets.max())
            if lo < 0 or hi >= n_out:
                raise ValueError(
                    f"loss='sparse_cce': labels must satisfy 0 <= y < {n_out} (the number of "
                    f"outputs), but they range over [{lo}, {hi}]"
                )
        return
    if not targets.is_floating_point():
        hint = (
            " (integer labels belong to loss='sparse_cce'; for this loss one-hot encode them, "
            "e.g. torch.nn.functional.one_hot(y, C).float())"
            if tuple(targets.shape) == tuple(outputs.shape[:-1])
            else " (cast them with targets.float())"
        )
        raise ValueError(f"loss={loss!r} expects {TARGET_FORMATS[loss]}; {given}{hint}")
    if tuple(targets.shape) != tuple(outputs.shape):
        raise ValueError(
            f"loss={loss!r} expects {TARGET_FORMATS[loss]}; {given}. Shapes must match exactly: "
            f"torch would broadcast them silently into a wrong loss"
        )
    if check_values and loss in ("bce", "cce") and targets.numel():
        lo, hi = float(targets.min()), float(targets.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"loss={loss!r}: targets must lie in [0, 1], but they range over [{lo:g}, {hi:g}]")


def _describe(t: Tensor) -> str:
    return f"{str(t.dtype).replace('torch.', '')} targets of shape {tuple(t.shape)}"


def _check_choice(kind: str, value: str, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid choices are: {', '.join(valid)}")


def _bce(activation, z, y, s, numerics):
    y = smooth("bce", y, s)
    if numerics == "keras":
        return _keras_bce(_keras_probs(activation, z), y)
    return _bce_stable(activation, z, y)


def _cce(activation, z, y, s, numerics):
    y = smooth("cce", y, s)
    if numerics == "keras":
        return -(y * _keras_log_q(_keras_probs(activation, z))).sum(-1)
    return _cce_stable(activation, z, y)


def _sparse_cce(activation, z, y, s, numerics):
    if numerics == "keras":
        if s:
            raise ValueError(
                "loss='sparse_cce' has no label smoothing in Keras; use numerics='stable' "
                "(torch semantics) or loss='cce' with one-hot targets"
            )
        log_q = _keras_log_q(_keras_probs(activation, z))
        return -log_q.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return _sparse_cce_stable(activation, z, y, s)


def _mse(activation, z, y, s, numerics):
    if s:
        raise ValueError("loss='mse' has no label smoothing (Keras defines it for bce and cce only)")
    return F.mse_loss(ACTIVATIONS[activation](z), y, reduction="none").mean(-1)


LOSSES: dict[str, Callable[[str, Tensor, Tensor, float, str], Tensor]] = {
    "bce": _bce,
    "cce": _cce,
    "sparse_cce": _sparse_cce,
    "mse": _mse,
}
"""Registry of losses: name -> fn(activation, outputs, targets, label_smoothing, numerics)
returning one value per example."""


def compute(
    loss: str,
    activation: str,
    outputs: Tensor,
    targets: Tensor,
    *,
    label_smoothing: float = 0.0,
    numerics: str = "stable",
    reduction: str = "mean",
    check_values: bool = True,
) -> Tensor:
    """Loss of ``activation(outputs)`` against ``targets``; see the module docstring.

    ``reduction="mean"`` is the sum over examples divided by their number (Keras's
    default), ``"sum"`` the sum, ``"none"`` one value per example.
    """
    _check_choice("loss", loss, LOSSES)
    _check_choice("activation", activation, ACTIVATIONS)
    _check_choice("numerics", numerics, NUMERICS)
    _check_choice("reduction", reduction, REDUCTIONS)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
    if activation == "softmax" and outputs.dim() and outputs.shape[-1] == 1:
        raise ValueError("activation='softmax' over 1 output is the constant 1, so no loss can depend on the "
                         "network: use activation='sigmoid' with 1 output, or 2 outputs with softmax")
    validate_targets(loss, outputs, targets, check_values=check_values)
    per_example = LOSSES[loss](activation, outputs, targets, float(label_smoothing), numerics)
    if reduction == "none":
        return per_example
    return per_example.mean() if reduction == "mean" else per_example.sum()


def encode_targets(loss: str, labels: Tensor, num_outputs: int) -> Tensor:
    """Turn task labels into the loss's own target format.

    ``labels`` are integer classes (N,) or float multi-hot rows (N, C). ``sparse_cce``
    takes integer classes as they are; the other losses take float rows shaped like the
    outputs: one-hot for classes ((N, 1) 0/1 column for a single output).
    """
    _check_choice("loss", loss, LOSSES)
    if labels.is_floating_point():
        if loss == "sparse_cce":
            raise ValueError(
                f"loss='sparse_cce' expects {TARGET_FORMATS[loss]}, but the task's labels are "
                f"multi-hot rows of shape {tuple(labels.shape)}: several tags cannot be one integer"
            )
        return labels
    if loss == "sparse_cce":
        return labels
    if num_outputs == 1:
        return labels.float().unsqueeze(-1)
    return F.one_hot(labels, num_outputs).float()
