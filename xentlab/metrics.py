"""Yardsticks: the metrics that make runs comparable whatever loss trained them.

Loss values of different losses are on different scales, so every run also reports the
same task-defined metrics. They follow the task, never the loss name: argmax for
multiclass, 0.5 threshold for binary and per tag for multilabel (binary reads the
positive-class probability from one sigmoid output or the second of two softmax
outputs). NLL, Brier score, ECE and mAP are computed from the model's probabilities,
so with ``activation=none`` they are left out (mAP ranks examples by a score that would
otherwise be each batch's raw outputs). ECE comes in three kinds: binary bins the
positive-class probability against the label, multiclass the top-label confidence
against being right, multilabel every (example, tag) probability pooled.

With ``per_class`` (set when ``task.imbalance`` skews the training classes) binary and
multiclass tasks also report balanced accuracy (the mean of the per-class recalls) and
each class's recall as ``recall_<class index>``: on imbalanced data accuracy can look fine
while the rare class is never predicted.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryCalibrationError,
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassRecall,
    MultilabelAccuracy,
    MultilabelAveragePrecision,
    MultilabelExactMatch,
    MultilabelF1Score,
)

from xentlab import losses

YARDSTICKS: dict[str, tuple[str, ...]] = {
    "binary": ("acc", "nll", "brier", "ece"),
    "multiclass": ("acc", "nll", "brier", "ece"),
    "multilabel": ("subset_acc", "hamming_acc", "micro_f1", "macro_f1", "map", "nll", "brier", "ece"),
}
PER_CLASS = ("balanced_acc", "recall")  # added by ``per_class``; "recall" is logged per class
NEEDS_PROBABILITIES = frozenset({"nll", "brier", "ece", "map"})
N_BINS = 15


def available(kind: str, activation: str) -> tuple[str, ...]:
    """The yardsticks that are well defined for this task kind and output activation."""
    names = YARDSTICKS[kind]
    return names if activation != "none" else tuple(n for n in names if n not in NEEDS_PROBABILITIES)


class Yardsticks(nn.Module):
    """Accumulates the task's yardsticks on the device; ``compute`` syncs once per epoch."""

    def __init__(self, kind: str, activation: str, num_classes: int, per_class: bool = False):
        super().__init__()
        self.kind, self.activation, self.num_classes = kind, activation, num_classes
        c = num_classes
        factories = {
            "binary": {"acc": BinaryAccuracy, "ece": lambda: BinaryCalibrationError(n_bins=N_BINS)},
            "multiclass": {
                "acc": lambda: MulticlassAccuracy(c, average="micro"),
                "ece": lambda: MulticlassCalibrationError(c, n_bins=N_BINS),
            },
            "multilabel": {
                "subset_acc": lambda: MultilabelExactMatch(c),
                "hamming_acc": lambda: MultilabelAccuracy(c, average="micro"),
                "micro_f1": lambda: MultilabelF1Score(c, average="micro"),
                "macro_f1": lambda: MultilabelF1Score(c, average="macro"),
                "map": lambda: MultilabelAveragePrecision(c, average="macro"),
                "ece": lambda: BinaryCalibrationError(n_bins=N_BINS),
            },
        }[kind]
        factories = {**factories, "nll": MeanMetric, "brier": MeanMetric,
                     "balanced_acc": lambda: MulticlassAccuracy(c, average="macro"),
                     "recall": lambda: MulticlassRecall(c, average=None)}
        self.names = available(kind, activation) + (PER_CLASS if per_class and kind != "multilabel" else ())
        self.metrics = nn.ModuleDict({n: factories[n]() for n in self.names})

    def _views(self, z: Tensor, y: Tensor) -> dict[str, tuple[Tensor, ...]]:
        """Inputs of each metric: hard predictions, probabilities, per-example NLL/Brier."""
        act, kind = self.activation, self.kind
        if kind == "multilabel":
            p = losses.activate(act, z)
            hard, yi = (p >= 0.5).long(), y.long()
            views = {n: (hard, yi) for n in ("subset_acc", "hamming_acc", "micro_f1", "macro_f1")}
            if act != "none":
                views["map"] = (p, yi)
                views["nll"] = (losses.compute("bce", act, z, y, reduction="none", check_values=False),)
                views["brier"] = (((p - y) ** 2).mean(-1),)
                views["ece"] = (p.reshape(-1), yi.reshape(-1))
            return views
        if kind == "binary":
            if z.shape[-1] == 2:  # softmax over [negative, positive]
                p1 = torch.softmax(z, -1)[:, 1]
            else:
                p1 = losses.activate(act, z[:, 0])
            hard = (p1 >= 0.5).long()
            views = {"acc": (hard, y), "balanced_acc": (hard, y), "recall": (hard, y)}
            if act != "none":
                views["brier"] = ((p1 - y) ** 2,)
                views["ece"] = (p1, y)
        else:  # multiclass
            hard = z.argmax(-1)
            views = {"acc": (hard, y), "balanced_acc": (hard, y), "recall": (hard, y)}
            if act != "none":
                q = losses.activate(act, z)
                q = q / q.sum(-1, keepdim=True)  # sigmoid outputs: the renormalised distribution
                views["brier"] = (((q - nn.functional.one_hot(y, self.num_classes)) ** 2).sum(-1),)
                views["ece"] = (q, y)
        if act != "none":
            if z.shape[-1] == 1:
                nll = losses.compute("bce", act, z, y.float().unsqueeze(-1), reduction="none", check_values=False)
            else:
                nll = losses.compute("sparse_cce", act, z, y, reduction="none", check_values=False)
            views["nll"] = (nll,)
        return views

    @torch.no_grad()
    def update(self, outputs: Tensor, labels: Tensor) -> None:
        z = outputs.detach().float()
        views = self._views(z, labels)
        for name, metric in self.metrics.items():
            metric.update(*views[name])

    def compute(self) -> dict[str, Tensor]:
        out = {}
        for name, m in self.metrics.items():
            value = m.compute()
            if name == "recall":
                out.update({f"recall_{i}": v for i, v in enumerate(value)})
            else:
                out[name] = value
        return out

    def reset(self) -> None:
        for m in self.metrics.values():
            m.reset()

