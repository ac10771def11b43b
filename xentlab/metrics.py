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

from typing import Callable

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric
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

from xentlab import losses, yardsticks

N_BINS = 15


def _ece(kind: str, c: int):
    return (BinaryCalibrationError(n_bins=N_BINS) if kind != "multiclass"
            else MulticlassCalibrationError(c, n_bins=N_BINS))


# yardstick -> (torchmetrics factory of (task kind, classes), the view of the outputs it reads)
FACTORIES: dict[str, tuple[Callable[[str, int], Metric], str]] = {
    "acc": (lambda kind, c: BinaryAccuracy() if kind == "binary" else MulticlassAccuracy(c, average="micro"), "hard"),
    "subset_acc": (lambda kind, c: MultilabelExactMatch(c), "hard"),
    "hamming_acc": (lambda kind, c: MultilabelAccuracy(c, average="micro"), "hard"),
    "micro_f1": (lambda kind, c: MultilabelF1Score(c, average="micro"), "hard"),
    "macro_f1": (lambda kind, c: MultilabelF1Score(c, average="macro"), "hard"),
    "map": (lambda kind, c: MultilabelAveragePrecision(c, average="macro"), "probs"),
    "nll": (lambda kind, c: MeanMetric(), "nll"),
    "brier": (lambda kind, c: MeanMetric(), "brier"),
    "ece": (_ece, "pooled_probs"),
    "balanced_acc": (lambda kind, c: MulticlassAccuracy(c, average="macro"), "hard"),
    "recall": (lambda kind, c: MulticlassRecall(c, average=None), "hard"),
}


class Yardsticks(nn.Module):
    """Accumulates the task's yardsticks on the device; ``compute`` syncs once per epoch."""

    def __init__(self, kind: str, activation: str, num_classes: int, per_class: bool = False):
        super().__init__()
        self.kind, self.activation, self.num_classes = kind, activation, num_classes
        self.names = yardsticks.available(kind, activation, per_class=per_class and kind != "multilabel")
        self.metrics = nn.ModuleDict({n: FACTORIES[n][0](kind, num_classes) for n in self.names})

    def _views(self, z: Tensor, y: Tensor) -> dict[str, tuple[Tensor, ...]]:
        """The inputs a metric may read (``FACTORIES``): hard predictions against labels, and
        with probabilities: the probabilities, their pooled form for ECE, per-example NLL and Brier."""
        act, kind = self.activation, self.kind
        views: dict[str, tuple[Tensor, ...]] = {}
        if kind == "multilabel":
            p = losses.activate(act, z)
            yi = y.long()
            views["hard"] = ((p >= 0.5).long(), yi)
            if act != "none":
                views["probs"] = (p, yi)
                views["pooled_probs"] = (p.reshape(-1), yi.reshape(-1))
                views["nll"] = (losses.compute("bce", act, z, y, reduction="none", check_values=False),)
                views["brier"] = (((p - y) ** 2).mean(-1),)
            return views
        if kind == "binary":
            if z.shape[-1] == 2:  # softmax over [negative, positive]
                p1 = torch.softmax(z, -1)[:, 1]
            else:
                p1 = losses.activate(act, z[:, 0])
            views["hard"] = ((p1 >= 0.5).long(), y)
            if act != "none":
                views["probs"] = views["pooled_probs"] = (p1, y)
                views["brier"] = ((p1 - y) ** 2,)
        else:  # multiclass
            views["hard"] = (z.argmax(-1), y)
            if act != "none":
                q = losses.activate(act, z)
                q = q / q.sum(-1, keepdim=True)  # sigmoid outputs: the renormalised distribution
                views["probs"] = views["pooled_probs"] = (q, y)
                views["brier"] = (((q - nn.functional.one_hot(y, self.num_classes)) ** 2).sum(-1),)
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
            metric.update(*views[FACTORIES[name][1]])

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

