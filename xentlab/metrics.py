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

The K members of a model are measured at once, as they are evaluated: each batch adds every
member's sufficient statistics (:data:`STATISTICS`, ``(K, ...)`` tensors on the device) in one
vectorised pass per output activation, and each yardstick is a formula over them
(:data:`FORMULAS`) with torchmetrics' definitions: a zero division gives 0, ECE bins as
torchmetrics bins, mAP is exact, each run of tied scores one threshold as in scikit-learn.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from xentlab import losses, yardsticks

N_BINS = 15
# torchmetrics' ECE bins (bucketize(right=True) - 1 over these edges): a confidence of exactly 1 has a 16th bin
EDGES = torch.linspace(0, 1, N_BINS + 1)


class Batch:
    """A batch as one activation group of G members sees it: their outputs ``(G, B, C)`` against the
    labels, with the views the statistics read, each computed once and only when read."""

    def __init__(self, kind: str, activation: str, num_classes: int, z: Tensor, y: Tensor, loss: Tensor | None):
        self.kind, self.activation, self.num_classes = kind, activation, num_classes
        self.z, self.y, self.loss = z, y, loss

    @functools.cached_property
    def probs(self) -> Tensor:
        """Per tag ``(G, B, C)``, the positive class's ``(G, B)`` (binary), or the distribution
        (multiclass, renormalised: sigmoid outputs do not sum to 1)."""
        z, activation = self.z, self.activation
        if self.kind == "binary":  # one sigmoid output, or softmax over [negative, positive]
            return torch.softmax(z, -1)[..., 1] if z.shape[-1] == 2 else losses.activate(activation, z[..., 0])
        p = losses.activate(activation, z)
        return p if self.kind == "multilabel" else p / p.sum(-1, keepdim=True)

    @functools.cached_property
    def hard(self) -> Tensor:
        """The predicted class ``(G, B)``, or 0/1 per tag ``(G, B, C)``."""
        return self.z.argmax(-1) if self.kind == "multiclass" else (self.probs >= 0.5).long()

    @functools.cached_property
    def indicators(self) -> tuple[Tensor, Tensor]:
        """(predicted, true) as 0/1 per class or tag: ``(G, B, C)`` and ``(B, C)``."""
        if self.kind == "multilabel":
            return self.hard, self.y.long()
        return F.one_hot(self.hard, self.num_classes), F.one_hot(self.y, self.num_classes)

    @functools.cached_property
    def nll(self) -> Tensor:
        """Per example ``(G, B)``: BCE over the tags or the one sigmoid output, else sparse CCE."""
        z, y = self.z, self.y
        if self.kind == "multilabel" or z.shape[-1] == 1:
            y = (y if self.kind == "multilabel" else y.unsqueeze(-1)).float()
            return losses.compute("bce", self.activation, z, y.expand(len(z), *y.shape), reduction="none",
                                  check_values=False)
        return losses.compute("sparse_cce", self.activation, z, y.expand(len(z), *y.shape), reduction="none",
                              check_values=False)

    @functools.cached_property
    def brier(self) -> Tensor:
        p, y = self.probs, self.y
        if self.kind == "multiclass":
            return ((p - F.one_hot(y, self.num_classes)) ** 2).sum(-1)
        return (p - y) ** 2 if self.kind == "binary" else ((p - y) ** 2).mean(-1)

    @functools.cached_property
    def calibration(self) -> tuple[Tensor, Tensor]:
        """What ECE bins, ``(G, N)`` each: confidences, and 1 where right."""
        p, y = self.probs, self.y
        if self.kind == "multiclass":
            confidence, predicted = p.max(-1)
            return confidence, (predicted == y).to(p.dtype)
        return p.reshape(len(p), -1), y.reshape(-1).to(p.dtype).expand(len(p), -1)


def _mean(values: Tensor) -> Tensor:
    """(sum, count) per member of per-example values ``(G, B)``; NaNs left out, as torchmetrics' MeanMetric does."""
    nan = values.isnan()
    return torch.stack([values.masked_fill(nan, 0.0).sum(1), (~nan).sum(1).to(values.dtype)], -1)


def _bins(b: Batch) -> Tensor:
    """Per bin: (count, sum of confidences, sum of rights), ``(G, 3, N_BINS + 1)``."""
    confidence, right = b.calibration
    index = torch.bucketize(confidence.contiguous(), EDGES.to(confidence), right=True) - 1
    src = torch.stack([torch.ones_like(confidence), confidence, right], 1)
    return confidence.new_zeros(len(confidence), 3, len(EDGES)).scatter_add_(2, index.unsqueeze(1).expand_as(src), src)


def _confusion(b: Batch) -> Tensor:
    """(true positives, false positives, false negatives) per class or tag, ``(G, 3, C)``."""
    predicted, true = b.indicators
    tp = (predicted * true).sum(1)
    return torch.stack([tp, predicted.sum(1) - tp, true.sum(0) - tp], 1)


@dataclass(frozen=True)
class Statistic:
    """What a batch adds to each member's state: ``add`` gives ``(G, *shape(C))``, summed over the batches and
    the DDP ranks; with ``every_example`` the state keeps every example (``(N, K, *shape)``, NaN for a member
    not updated), for a yardstick that no sum gives."""

    shape: Callable[[int], tuple[int, ...]]
    add: Callable[[Batch], Tensor]
    dtype: torch.dtype = torch.long
    every_example: bool = False


STATISTICS: dict[str, Statistic] = {
    "n": Statistic(lambda c: (), lambda b: torch.full((len(b.z),), len(b.y), device=b.z.device)),
    "correct": Statistic(lambda c: (), lambda b: (b.hard == b.y).sum(1)),
    "exact": Statistic(lambda c: (), lambda b: (b.hard == b.y).all(-1).sum(1)),
    "confusion": Statistic(lambda c: (3, c), _confusion),
    "loss": Statistic(lambda c: (2,), lambda b: _mean(b.loss), torch.float32),
    "nll": Statistic(lambda c: (2,), lambda b: _mean(b.nll), torch.float32),
    "brier": Statistic(lambda c: (2,), lambda b: _mean(b.brier), torch.float32),
    "bins": Statistic(lambda c: (3, N_BINS + 1), _bins, torch.float32),
    "probs": Statistic(lambda c: (c,), lambda b: b.probs, torch.float32, every_example=True),
}


def _div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den``, 0 where ``den`` is 0 (torchmetrics' ``_safe_divide``)."""
    num, den = num.float(), den.float()
    return torch.where(den != 0, num / den, 0.0)


def _ratio(sums: Tensor) -> Tensor:
    """A mean from its (sum, count): NaN without values, as MeanMetric."""
    return sums[:, 0] / sums[:, 1]


def _f1(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    return _div(2 * tp, 2 * tp + fp + fn)


def _recall(confusion: Tensor) -> Tensor:
    return _div(confusion[:, 0], confusion[:, 0] + confusion[:, 2])


def _balanced(confusion: Tensor) -> Tensor:
    """The mean recall over the classes seen (torchmetrics' macro average leaves out a class with
    no true positive, false positive or false negative)."""
    seen = (confusion.sum(1) != 0).float()
    return _div((seen * _recall(confusion)).sum(-1), seen.sum(-1))


def _ece(bins: Tensor) -> Tensor:
    count, confidence, right = bins.unbind(1)
    share = count / count.sum(-1, keepdim=True)
    return (((right / count).nan_to_num() - (confidence / count).nan_to_num()).abs() * share).sum(-1)


def _average_precision(scores: Tensor, labels: Tensor) -> Tensor:
    """Macro average precision, ``(K,)``, of scores ``(N, K, C)`` against labels ``(N, C)``: each tag's
    sum over its positives of the precision at their run of tied scores' end, over the positives (0 without)."""
    s, order = scores.permute(1, 2, 0).sort(-1, descending=True)
    y = labels.long().t().expand(len(s), -1, -1).gather(-1, order)
    at = torch.arange(s.shape[-1], device=s.device)
    precision = y.cumsum(-1) / (at + 1)
    last = torch.ones_like(y, dtype=torch.bool)
    last[..., :-1] = s[..., 1:] != s[..., :-1]
    end = torch.where(last, at, s.shape[-1]).flip(-1).cummin(-1).values.flip(-1)  # each position's run's last
    return _div((y * precision.gather(-1, end)).sum(-1), y.sum(-1)).nanmean(-1)


@dataclass(frozen=True)
class Formula:
    """A yardstick from the statistics it reads (``labels``: every example's, beside an ``every_example``
    statistic): ``(K,)``, or with ``per_class`` ``(K, C)``, logged as ``<name>_<class>``."""

    reads: tuple[str, ...]
    value: Callable[..., Tensor]
    per_class: bool = False


FORMULAS: dict[str, Formula] = {
    "acc": Formula(("correct", "n"), _div),
    "subset_acc": Formula(("exact", "n"), _div),
    "hamming_acc": Formula(("confusion", "n"), lambda c, n: _div(n * c.shape[-1] - c[:, 1:].sum((1, 2)),
                                                                  n * c.shape[-1])),
    "micro_f1": Formula(("confusion",), lambda c: _f1(*c.sum(-1).unbind(1))),
    "macro_f1": Formula(("confusion",), lambda c: _f1(*c.unbind(1)).mean(-1)),
    "map": Formula(("probs", "labels"), _average_precision),
    "nll": Formula(("nll",), _ratio),
    "brier": Formula(("brier",), _ratio),
    "ece": Formula(("bins",), _ece),
    "balanced_acc": Formula(("confusion",), _balanced),
    "recall": Formula(("confusion",), _recall, per_class=True),
}


class Yardsticks(Metric):
    """The loss and yardsticks of K members, each with its output activation (``activations``), on the device.

    ``update`` adds a batch's statistics, ``(K, ...)`` states (torchmetrics syncs them over DDP ranks),
    in one pass per activation group; ``compute`` gives ``{name: (K,) tensor}``: ``loss`` (the mean of
    the per-example losses given), then the yardsticks; NaN for a member without one
    (``activation=none``). ``keys[k]``: what member k reports.
    """

    full_state_update = False
    is_differentiable = False

    def __init__(self, kind: str, activations: Sequence[str], num_classes: int, per_class: bool = False):
        super().__init__()
        self.kind, self.num_classes, self.k = kind, num_classes, len(activations)
        per_class = per_class and kind != "multilabel"
        own = [yardsticks.available(kind, a, per_class=per_class) for a in activations]
        self.names = [n for n in yardsticks.of(kind, per_class=per_class) if any(n in o for o in own)]
        self.keys = [("loss", *(k for n in names for k in self._keys(n))) for names in own]
        self.groups = {a: {i for i, b in enumerate(activations) if b == a} for a in dict.fromkeys(activations)}
        self.reads = {a: tuple(dict.fromkeys(r for n in yardsticks.available(kind, a, per_class=per_class)
                                             for r in FORMULAS[n].reads if r in STATISTICS)) for a in self.groups}
        for name in dict.fromkeys(("loss", *(r for reads in self.reads.values() for r in reads))):
            s = STATISTICS[name]
            if s.every_example:
                self.add_state(name, default=[], dist_reduce_fx="cat")
            else:
                self.add_state(name, default=torch.zeros(self.k, *s.shape(num_classes), dtype=s.dtype),
                               dist_reduce_fx="sum")
        if any(STATISTICS[r].every_example for reads in self.reads.values() for r in reads):
            self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.register_buffer("has", torch.tensor([[n in o for o in own] for n in self.names]).view(-1, self.k),
                             persistent=False)
        self._plans: dict[tuple, list[tuple[str, slice | Tensor, Tensor]]] = {}

    def _wrap_compute(self, compute: Callable) -> Callable:
        """torchmetrics squeezes a result of one element: K = 1 keeps its ``(1,)``."""
        wrapped = super()._wrap_compute(compute)
        return functools.wraps(compute)(lambda: {name: v.reshape(-1) for name, v in wrapped().items()})

    def _keys(self, name: str) -> list[str]:
        return [f"{name}_{c}" for c in range(self.num_classes)] if FORMULAS[name].per_class else [name]

    def _plan(self, members: tuple[int | None, ...], device: torch.device) -> list[tuple[str, slice | Tensor, Tensor]]:
        """Per activation group: its rows of the outputs (a slice where they follow each other) and their members."""
        key = (members, str(device))
        if key not in self._plans:
            self._plans[key] = []
            for activation, group in self.groups.items():
                rows = [r for r, i in enumerate(members) if i in group]
                if rows:
                    span = slice(rows[0], rows[-1] + 1) if rows[-1] - rows[0] == len(rows) - 1 else (
                        torch.tensor(rows, device=device))
                    ids = torch.tensor([members[r] for r in rows], device=device)
                    self._plans[key].append((activation, span, ids))
        return self._plans[key]

    @torch.no_grad()
    def update(self, outputs: Tensor, labels: Tensor, loss: Tensor | None = None,
               members: Sequence[int | None] | None = None) -> None:
        """``outputs`` ``(R, B, C)``, ``loss`` the rows' per-example losses ``(R, B)``; row r holds member
        ``members[r]`` (default: r), and is left out where that is None."""
        z = outputs.detach().float()
        members = tuple(range(len(z))) if members is None else tuple(members)
        kept: dict[str, Tensor] = {}
        for activation, rows, ids in self._plan(members, z.device):
            batch = Batch(self.kind, activation, self.num_classes, z[rows], labels,
                          None if loss is None else loss.detach()[rows].float())
            for name in self.reads[activation] + (("loss",) if loss is not None else ()):
                s = STATISTICS[name]
                if s.every_example:
                    kept.setdefault(name, z.new_full((z.shape[1], self.k, *s.shape(self.num_classes)), float("nan")))
                    kept[name][:, ids] = s.add(batch).transpose(0, 1).to(s.dtype)
                else:
                    getattr(self, name).index_add_(0, ids, s.add(batch).to(s.dtype))
        for name, examples in kept.items():
            getattr(self, name).append(examples)
        if kept:
            self.labels.append(labels)

    def compute(self) -> dict[str, Tensor]:
        state = {name: dim_zero_cat(v) if isinstance(v, list) else v for name, v in self.metric_state.items()}
        values = {"loss": _ratio(state["loss"])}
        for name, has in zip(self.names, self.has):
            f = FORMULAS[name]
            value = f.value(*(state[r] for r in f.reads))
            value = torch.where(has.view(-1, *[1] * (value.dim() - 1)), value, float("nan"))
            values.update(zip(self._keys(name), value.unbind(1)) if f.per_class else [(name, value)])
        return values
