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

Losses are classes registered in :data:`LOSSES` with :func:`register` (Keras conventions;
each class's docstring gives its formula, target shape and an example). Everything else
(the compatibility table's names, ``activation=auto``, config checks, target encoding,
sweeps over every loss) derives from that registry.

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

from xentlab.config import Numerics

EPSILON = 1e-7
"""Keras's ``backend.epsilon()``: the clip used with ``numerics="keras"``."""

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid,
    "softmax": lambda z: torch.softmax(z, dim=-1),
    "none": lambda z: z,
}
NUMERICS = tuple(n.value for n in Numerics)  # the choice ``loss.numerics``
REDUCTIONS = ("mean", "sum", "none")

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


def _keras_bce(p: Tensor, y: Tensor) -> Tensor:
    p = p.clamp(EPSILON, 1.0 - EPSILON)
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean(-1)


def _keras_log_q(p: Tensor) -> Tensor:
    q = p / p.sum(-1, keepdim=True)
    return torch.log(q.clamp(EPSILON, 1.0 - EPSILON))


# --- the registry ----------------------------------------------------------------------


class Loss:
    """A loss, declared once. Subclass, set the class attributes, write ``stable`` (and
    ``keras``), and decorate with :func:`register`.

    ``stable``/``keras`` take (activation, raw outputs, targets, label smoothing) and return
    one value per example; the targets are already checked against the class attributes.
    """

    name: str
    target_format: str  # for error messages: what the targets must look like
    integer_targets: bool = False  # class indices (N,) rather than float rows shaped like the outputs
    unit_targets: bool = False  # target values must lie in [0, 1]
    smoothing_with: tuple[str, ...] = ()  # the numerics that define label smoothing for this loss
    natural_activation: dict[str, str]  # activation=auto, per task kind

    def stable(self, activation: str, z: Tensor, y: Tensor, s: float) -> Tensor:
        raise NotImplementedError

    def keras(self, activation: str, z: Tensor, y: Tensor, s: float) -> Tensor:
        return self.stable(activation, z, y, s)

    def check_options(self, label_smoothing: float, numerics: str) -> None:
        """Refuse label smoothing where this loss does not define it, naming the losses that do."""
        if label_smoothing and numerics not in self.smoothing_with:
            having = [n for n, loss in LOSSES.items() if numerics in loss.smoothing_with]
            raise ValueError(f"loss={self.name} has no label smoothing with numerics={numerics}; the losses that "
                             f"have it there: {', '.join(having)}")


LOSSES: dict[str, Loss] = {}
"""Registry of losses by name, in the order they were registered."""


def register(cls: type[Loss]) -> type[Loss]:
    """Class decorator: add a :class:`Loss` to :data:`LOSSES` under its ``name``."""
    LOSSES[cls.name] = cls()
    return cls


def get(name: str) -> Loss:
    _check_choice("loss", name, LOSSES)
    return LOSSES[name]


@register
class BinaryCrossentropy(Loss):
    """``mean_c -[y_c log p_c + (1 - y_c) log(1 - p_c)]``, ``p = activation(outputs)``.

    Targets: float, same shape as the outputs (0/1, multi-hot or soft values in [0, 1]).
    Label smoothing ``y (1 - s) + s / 2``.

    >>> compute("bce", "sigmoid", torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, 1.0]]))
    tensor(0.4100)
    """

    name = "bce"
    target_format = "float targets with the same shape as the outputs (0/1, multi-hot or soft values in [0, 1])"
    unit_targets = True
    smoothing_with = ("stable", "keras")
    natural_activation = {"binary": "sigmoid", "multiclass": "sigmoid", "multilabel": "sigmoid"}

    def stable(self, activation, z, y, s):
        return _bce_stable(activation, z, _smooth(y, s, 2))

    def keras(self, activation, z, y, s):
        return _keras_bce(activate(activation, z), _smooth(y, s, 2))


@register
class CategoricalCrossentropy(Loss):
    """``-sum_c y_c log q_c``, ``q`` the predicted class distribution.

    Targets: float one-hot or soft rows of shape (N, C). Label smoothing ``y (1 - s) + s / C``.

    >>> compute("cce", "softmax", torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    tensor(0.6931)
    """

    name = "cce"
    target_format = "float one-hot (or soft) rows of shape (N, C) that sum to 1"
    unit_targets = True
    smoothing_with = ("stable", "keras")
    natural_activation = {"binary": "softmax", "multiclass": "softmax", "multilabel": "softmax"}

    def stable(self, activation, z, y, s):
        return _cce_stable(activation, z, _smooth(y, s, z.shape[-1]))

    def keras(self, activation, z, y, s):
        return -(_smooth(y, s, z.shape[-1]) * _keras_log_q(activate(activation, z))).sum(-1)


@register
class SparseCategoricalCrossentropy(Loss):
    """``-log q_y``: CCE with the one-hot target given as its class index.

    Targets: integer class indices of shape (N,), ``0 <= y < C``. Label smoothing as
    ``cce`` on the one-hot target (torch semantics; Keras has none).

    >>> compute("sparse_cce", "softmax", torch.tensor([[0.0, 0.0]]), torch.tensor([0]))
    tensor(0.6931)
    """

    name = "sparse_cce"
    target_format = "integer class indices of shape (N,) with 0 <= y < C"
    integer_targets = True
    smoothing_with = ("stable",)
    natural_activation = {"binary": "softmax", "multiclass": "softmax", "multilabel": "softmax"}

    def stable(self, activation, z, y, s):
        return _sparse_cce_stable(activation, z, y, s)

    def keras(self, activation, z, y, s):
        log_q = _keras_log_q(activate(activation, z))
        return -log_q.gather(-1, y.unsqueeze(-1)).squeeze(-1)


@register
class MeanSquaredError(Loss):
    """``mean_c (y_c - p_c)^2``, ``p = activation(outputs)``; the same in both numerics.

    Targets: float, same shape as the outputs. No label smoothing.

    >>> compute("mse", "none", torch.tensor([[0.5, 2.0]]), torch.tensor([[0.0, 1.0]]))
    tensor(0.6250)
    """

    name = "mse"
    target_format = "float targets with the same shape as the outputs"
    natural_activation = {"binary": "sigmoid", "multiclass": "softmax", "multilabel": "sigmoid"}

    def stable(self, activation, z, y, s):
        return F.mse_loss(ACTIVATIONS[activation](z), y, reduction="none").mean(-1)


# --- validation and dispatch -------------------------------------------------------------


def _smooth(targets: Tensor, label_smoothing: float, classes: int) -> Tensor:
    """Keras's label smoothing towards the uniform target over ``classes`` values."""
    return targets if label_smoothing == 0.0 else targets * (1.0 - label_smoothing) + label_smoothing / classes


def validate_targets(loss: str, outputs: Tensor, targets: Tensor, *, check_values: bool = True) -> None:
    """Raise a ValueError naming the loss, the expected target format and what was given.

    Shape and dtype checks are free; ``check_values`` also checks ranges, which needs a
    device-to-host sync, so the training loop validates the whole data set once instead.
    """
    spec = get(loss)
    expects = f"loss={loss!r} expects {spec.target_format}"
    given = f"got {_describe(targets)} for outputs of shape {tuple(outputs.shape)}"
    n_out = outputs.shape[-1] if outputs.dim() else 1
    if spec.integer_targets:
        if targets.is_floating_point() or targets.dtype == torch.bool:
            floats = ", ".join(n for n, other in LOSSES.items() if not other.integer_targets)
            hint = f" (one-hot rows belong to loss={floats}; use targets.argmax(-1) for {loss})" if (
                targets.shape == outputs.shape
            ) else ""
            raise ValueError(f"{expects}; {given}{hint}")
        if tuple(targets.shape) != tuple(outputs.shape[:-1]):
            raise ValueError(f"{expects}; {given}")
        if check_values and targets.numel():
            lo, hi = int(targets.min()), int(targets.max())
            if lo < 0 or hi >= n_out:
                raise ValueError(
                    f"loss={loss!r}: labels must satisfy 0 <= y < {n_out} (the number of "
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
        raise ValueError(f"{expects}; {given}{hint}")
    if tuple(targets.shape) != tuple(outputs.shape):
        raise ValueError(f"{expects}; {given}. Shapes must match exactly: torch would broadcast them silently "
                         f"into a wrong loss")
    if check_values and spec.unit_targets and targets.numel():
        lo, hi = float(targets.min()), float(targets.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"loss={loss!r}: targets must lie in [0, 1], but they range over [{lo:g}, {hi:g}]")


def _describe(t: Tensor) -> str:
    return f"{str(t.dtype).replace('torch.', '')} targets of shape {tuple(t.shape)}"


def _check_choice(kind: str, value: str, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid choices are: {', '.join(valid)}")


def check_options(loss: str, activation: str, *, label_smoothing: float = 0.0, numerics: str = "stable") -> None:
    """Every check of names and options that needs no tensors (run before any data is built)."""
    spec = get(loss)
    _check_choice("activation", activation, ACTIVATIONS)
    _check_choice("numerics", numerics, NUMERICS)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
    spec.check_options(label_smoothing, numerics)


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
    check_options(loss, activation, label_smoothing=label_smoothing, numerics=numerics)
    _check_choice("reduction", reduction, REDUCTIONS)
    if activation == "softmax" and outputs.dim() and outputs.shape[-1] == 1:
        raise ValueError("activation='softmax' over 1 output is the constant 1, so no loss can depend on the "
                         "network: use activation='sigmoid' with 1 output, or 2 outputs with softmax")
    validate_targets(loss, outputs, targets, check_values=check_values)
    spec = LOSSES[loss]
    form = spec.keras if numerics == "keras" else spec.stable
    # Under mixed precision (autocast) the outputs may come as bf16/fp16: the log-space forms
    # (log-softmax, logsumexp, the Keras clip at 1e-7) need float32's range and resolution.
    with torch.autocast(outputs.device.type, enabled=False):
        per_example = form(activation, _at_least_float32(outputs), targets, float(label_smoothing))
    if reduction == "none":
        return per_example
    return per_example.mean() if reduction == "mean" else per_example.sum()


def _at_least_float32(t: Tensor) -> Tensor:
    return t.float() if t.is_floating_point() and t.element_size() < 4 else t


def encode_targets(loss: str, labels: Tensor, num_outputs: int) -> Tensor:
    """Turn task labels into the loss's own target format.

    ``labels`` are integer classes (N,) or float multi-hot rows (N, C). A loss with
    integer targets takes classes as they are; the others take float rows shaped like the
    outputs: one-hot for classes ((N, 1) 0/1 column for a single output).
    """
    spec = get(loss)
    if labels.is_floating_point():
        if spec.integer_targets:
            raise ValueError(
                f"loss={loss!r} expects {spec.target_format}, but the task's labels are "
                f"multi-hot rows of shape {tuple(labels.shape)}: several tags cannot be one integer"
            )
        return labels
    if spec.integer_targets:
        return labels
    if num_outputs == 1:
        return labels.float().unsqueeze(-1)
    return F.one_hot(labels, num_outputs).float()
