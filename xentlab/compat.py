"""Which output activation goes with which loss on which kind of task, and why.

The table is data: one entry per (task kind, activation, loss) cell, with a status and a
one-line reason, hand-written for each loss of the registry (``losses.LOSSES``); a new
loss brings its rows with :func:`declare`. ``check`` turns a cell into a decision before any training starts:
``invalid`` raises :class:`IncompatibleCombination` naming the valid alternatives,
``questionable`` returns the reason so the caller can warn and log it. The README's
compatibility section is this table (``scripts/compat_table.py``); each reason is the
one-line summary of the maths of its cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Mapping

from xentlab.errors import IncompatibleCombination
from xentlab.losses import ACTIVATIONS, LOSSES, get

KINDS = ("binary", "multiclass", "multilabel")


class Status(str, Enum):
    RECOMMENDED = "recommended"
    VALID = "valid"
    QUESTIONABLE = "questionable"
    INVALID = "invalid"


@dataclass(frozen=True)
class Cell:
    status: Status
    reason: str


R, V, Q, X = Status.RECOMMENDED, Status.VALID, Status.QUESTIONABLE, Status.INVALID
_NOT_PROBS = "outputs are not probabilities (use sigmoid: it is fused into the stable logits form)"
_NOT_PROBS_CE = "outputs are not probabilities, so cross-entropy is undefined (use softmax)"

TABLE: dict[tuple[str, str, str], Cell] = {
    # binary: 1 output with sigmoid/none, 2 outputs with softmax
    ("binary", "sigmoid", "bce"): Cell(R, "logistic regression: BCE on one sigmoid output"),
    ("binary", "sigmoid", "cce"): Cell(X, "one output renormalised is always 1: constant loss, zero gradient"),
    ("binary", "sigmoid", "sparse_cce"): Cell(X, "label 1 is out of range for 1 output"),
    ("binary", "sigmoid", "mse"): Cell(V, "gradient 2(p-y)p(1-p) vanishes on confident mistakes"),
    ("binary", "softmax", "bce"): Cell(V, "with 2 softmax outputs BCE equals CCE exactly"),
    ("binary", "softmax", "cce"): Cell(R, "two-class softmax with one-hot targets"),
    ("binary", "softmax", "sparse_cce"): Cell(R, "two-class softmax with integer targets"),
    ("binary", "softmax", "mse"): Cell(V, "squared error on two softmax outputs"),
    ("binary", "none", "bce"): Cell(X, _NOT_PROBS),
    ("binary", "none", "cce"): Cell(X, _NOT_PROBS_CE),
    ("binary", "none", "sparse_cce"): Cell(X, _NOT_PROBS_CE),
    ("binary", "none", "mse"): Cell(Q, "unbounded outputs regressed onto 0/1"),
    # multiclass: C outputs, exactly one label per example
    ("multiclass", "sigmoid", "bce"): Cell(
        Q, "C independent one-vs-rest questions; ignores that exactly one class is true"
    ),
    ("multiclass", "sigmoid", "cce"): Cell(
        Q, "renormalised sigmoids, not a softmax (Keras on TensorFlow takes softmax CE of the logits instead)"
    ),
    ("multiclass", "sigmoid", "sparse_cce"): Cell(
        Q, "renormalised sigmoids, not a softmax (Keras on TensorFlow takes softmax CE of the logits instead)"
    ),
    ("multiclass", "sigmoid", "mse"): Cell(V, "squared error on independent sigmoid outputs"),
    ("multiclass", "softmax", "bce"): Cell(V, "adds sum_c -log(1-p_c) terms for the wrong classes"),
    ("multiclass", "softmax", "cce"): Cell(R, "softmax regression with one-hot targets"),
    ("multiclass", "softmax", "sparse_cce"): Cell(R, "softmax regression with integer targets (same value as CCE)"),
    ("multiclass", "softmax", "mse"): Cell(V, "squared error on a distribution; slow when saturated"),
    ("multiclass", "none", "bce"): Cell(X, _NOT_PROBS),
    ("multiclass", "none", "cce"): Cell(X, _NOT_PROBS_CE),
    ("multiclass", "none", "sparse_cce"): Cell(X, _NOT_PROBS_CE),
    ("multiclass", "none", "mse"): Cell(
        V, "squared loss on raw outputs vs one-hot (competitive with a tuned learning rate)"
    ),
    # multilabel: C tags, k of them true
    ("multilabel", "sigmoid", "bce"): Cell(R, "one independent yes/no question per tag"),
    ("multilabel", "sigmoid", "cce"): Cell(
        Q, "renormalisation makes tags compete; loss floor k*log(k) "
           "(Keras on TensorFlow takes softmax CE of the logits instead)"
    ),
    ("multilabel", "sigmoid", "sparse_cce"): Cell(X, "several tags cannot be one integer"),
    ("multilabel", "sigmoid", "mse"): Cell(V, "squared error per tag"),
    ("multilabel", "softmax", "bce"): Cell(Q, "softmax outputs sum to 1, so two tags can never both exceed 0.5"),
    ("multilabel", "softmax", "cce"): Cell(
        Q, "with raw multi-hot targets the optimum is 1/k per tag, so two tags never both exceed 0.5"
    ),
    ("multilabel", "softmax", "sparse_cce"): Cell(X, "several tags cannot be one integer"),
    ("multilabel", "softmax", "mse"): Cell(Q, "softmax outputs sum to 1, so two tags can never both exceed 0.5"),
    ("multilabel", "none", "bce"): Cell(X, _NOT_PROBS),
    ("multilabel", "none", "cce"): Cell(X, _NOT_PROBS_CE),
    ("multilabel", "none", "sparse_cce"): Cell(X, "several tags cannot be one integer"),
    ("multilabel", "none", "mse"): Cell(Q, "unbounded outputs regressed onto 0/1"),
}



def declare(loss: str, cells: Mapping[tuple[str, str], Cell]) -> None:
    """Add a registered loss's rows: one cell per (task kind, activation), all of them."""
    want = {(k, a) for k in KINDS for a in ACTIVATIONS}
    if loss not in LOSSES or set(cells) != want:
        raise ValueError(f"declare({loss!r}) needs a registered loss and exactly the cells {sorted(want)}")
    TABLE.update({(k, a, loss): c for (k, a), c in cells.items()})


def resolve_activation(kind: str, activation: str, loss: str) -> str:
    """Turn ``auto`` into the loss's natural activation on this kind of task."""
    return get(loss).natural_activation[kind] if activation == "auto" else activation


def cell(kind: str, activation: str, loss: str) -> Cell:
    for name, value, valid in (("task kind", kind, KINDS), ("activation", activation, ACTIVATIONS),
                               ("loss", loss, LOSSES)):
        if value not in valid:
            raise ValueError(f"unknown {name} {value!r}; valid choices are: {', '.join(valid)}")
    return TABLE[(kind, activation, loss)]


def alternatives(kind: str, activation: str, loss: str) -> str:
    """The runnable cells next to a refused one: same loss other activation, and vice versa."""

    def fmt(name, cells):
        ok = [f"{v} ({TABLE[k].status.value})" for k, v in cells if TABLE[k].status is not X]
        return f"{name}={', '.join(ok)}" if ok else f"no {name} works"

    acts = fmt("activation", [((kind, a, loss), a) for a in ACTIVATIONS])
    losses = fmt("loss", [((kind, activation, other), other) for other in LOSSES])
    return f"with loss={loss}: {acts}; with activation={activation}: {losses}"


def check(task: str, kind: str, activation: str, loss: str) -> Cell:
    """Return the cell; raise IncompatibleCombination (with the alternatives) if invalid."""
    c = cell(kind, activation, loss)
    if c.status is X:
        raise IncompatibleCombination(
            f"activation={activation} with loss={loss} is invalid for task={task} ({kind}): "
            f"{c.reason}. Valid choices {alternatives(kind, activation, loss)}."
        )
    return c


def markdown() -> str:
    """The table as Markdown, one section per task kind (the README embeds this text)."""
    marks = {R: "✅ recommended", V: "✓ valid", Q: "⚠ questionable", X: "✗ invalid"}
    out = []
    for kind in KINDS:
        out += [f"**{kind}**", "", "| activation | " + " | ".join(LOSSES) + " |", "|---" * (len(LOSSES) + 1) + "|"]
        for a in ACTIVATIONS:
            cells = [f"{marks[TABLE[(kind, a, loss)].status]}: {TABLE[(kind, a, loss)].reason}" for loss in LOSSES]
            out.append(f"| {a} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
