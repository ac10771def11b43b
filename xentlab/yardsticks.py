"""The yardsticks, declared once: what each one measures for which task kinds, and how to read it.

Torch-free, so the reports and the claims study read it without importing training code.
``xentlab.metrics`` computes each one for K members at once (its formula table is keyed by
these names); the report's columns, its ranking yardstick, the default epochs-to-target
and the epoch summary all derive from this table, the way torchmetrics keeps
``higher_is_better`` on the metric itself. Adding a yardstick is one :func:`declare` here
plus its formula in ``xentlab.metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

KINDS = ("binary", "multiclass", "multilabel")


@dataclass(frozen=True)
class Yardstick:
    name: str
    kinds: tuple[str, ...]
    higher_is_better: bool
    needs_probabilities: bool = False  # left out with activation=none: raw outputs are no probabilities
    in_report: bool = True  # a column of the comparison report
    per_class: bool = False  # only with task.imbalance set (binary and multiclass)
    targets: Mapping[str, float] = field(default_factory=dict)  # kind -> default epochs-to-target level


TABLE: dict[str, Yardstick] = {}


def declare(y: Yardstick) -> Yardstick:
    """Add ``y``; a kind's first declared yardstick ranks that kind's runs (it needs a target)."""
    if y.name in TABLE:
        raise ValueError(f"yardstick {y.name!r} is declared twice")
    TABLE[y.name] = y
    return y


for _y in (
    Yardstick("acc", ("binary", "multiclass"), True, targets={"binary": 0.95, "multiclass": 0.97}),
    Yardstick("subset_acc", ("multilabel",), True, targets={"multilabel": 0.5}),
    Yardstick("hamming_acc", ("multilabel",), True, in_report=False),
    Yardstick("micro_f1", ("multilabel",), True),
    Yardstick("macro_f1", ("multilabel",), True, in_report=False),
    Yardstick("map", ("multilabel",), True, needs_probabilities=True),
    Yardstick("nll", KINDS, False, needs_probabilities=True),
    Yardstick("brier", KINDS, False, needs_probabilities=True),
    Yardstick("ece", KINDS, False, needs_probabilities=True),
    # imbalance: the mean of the per-class recalls, and each class's recall as ``recall_<class>``
    Yardstick("balanced_acc", ("binary", "multiclass"), True, per_class=True),
    Yardstick("recall", ("binary", "multiclass"), True, per_class=True, in_report=False),  # shown per class
):
    declare(_y)


def of(kind: str, *, per_class: bool = False) -> tuple[str, ...]:
    """The yardsticks of a task kind, in declaration order (the per-class ones only when asked)."""
    return tuple(n for n, y in TABLE.items() if kind in y.kinds and (per_class or not y.per_class))


def available(kind: str, activation: str, per_class: bool = False) -> tuple[str, ...]:
    """Those that are well defined for this task kind and output activation."""
    return tuple(n for n in of(kind, per_class=per_class)
                 if activation != "none" or not TABLE[n].needs_probabilities)


def primary(kind: str) -> str:
    """The yardstick that ranks a task's rows, colours its grid and is summarised per epoch."""
    return of(kind)[0]


def higher_is_better(name: str) -> bool:
    """Direction of a yardstick, also of a logged key such as ``val/acc`` or ``test/recall_3``."""
    base = name.rsplit("/", 1)[-1]
    if base not in TABLE and base.rsplit("_", 1)[0] in TABLE and base.rsplit("_", 1)[1].isdigit():
        base = base.rsplit("_", 1)[0]  # a per-class value
    return TABLE[base].higher_is_better


def report_columns(kind: str) -> dict[str, bool]:
    """The report's columns for a kind (name -> higher is better), the ranking one first."""
    return {n: TABLE[n].higher_is_better for n in of(kind) if TABLE[n].in_report}


def target(kind: str) -> float:
    """The default validation level of the ranking yardstick that 'epochs to target' counts to."""
    return TABLE[primary(kind)].targets[kind]
