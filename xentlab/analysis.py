"""Statistics over finished runs and benchmark rounds, in one place for every report.

Runs are compared on their task's yardsticks (never on raw loss values, which live on
different scales), grouped over seeds: mean ± 95% Student-t half-width. A value "ties
with the best" when Welch's t-test on the seeds cannot tell it from the best mean at
the 5% level, so a report marks every cell that might be the best, not only the largest
mean. When runs of one cell differ in ``optimizer.lr``, each cell keeps the learning rate
with the best mean validation score (over its seeds and ``data.folds`` folds) and reports its test
scores there; :func:`lr_stability` says how often resampling those runs keeps that choice, and a cell
whose choice it overturns gets no star (:func:`supported`). A cell is marked
budget-limited when a run's selected epoch came so late that more epochs might have raised it
(:func:`budget_limited`, the one definition training's tag uses too). Statistics only:
``xentlab.tracking.load_runs`` reads the runs from MLflow; imports no training code.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from xentlab import yardsticks
from xentlab.config import BEFORE, IDENTITY

ALPHA = 0.05  # Welch's t-test level for "cannot be told from the best"
RESAMPLES = 1000  # bootstrap draws behind a learning-rate choice's stability
STABLE = 0.8  # the share of those draws a cell's chosen learning rate must win for its ★ (four in five)


def budget_limited(selected_epoch: int, epochs_trained: int, max_epochs: int, patience: Optional[int]) -> bool:
    """Whether the epoch budget, not the data, may have chosen the tested epoch: the run trained all
    ``max_epochs`` and its selected epoch (1-based) lies within the last ``patience`` epochs, where
    patience could not yet have seen it stop improving (without patience: the selected epoch is the
    last). More epochs might then have raised its score, so a ranking of such runs is provisional.

    A run stopped by patience before ``max_epochs`` is not budget-limited: it stopped improving on its
    own. With ``trainer.select=last`` the selected epoch is the last one trained, so every such run is
    budget-limited (patience needs ``select=best``): its score is that of the epoch the budget ended
    on, whether or not it was still improving. The training run's ``budget_limited`` tag and the
    reports both use this one definition."""
    if epochs_trained < max_epochs:
        return False
    return selected_epoch > max_epochs - max(patience or 0, 1)


@dataclass
class RunInfo:
    run_id: str
    task: str
    kind: str
    activation: str
    loss: str
    seed: str
    status: str
    metrics: dict[str, float]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    started: int = 0  # start time (ms): the newest of a configuration's runs is the one that counts
    members: int = 1  # runs its model trained at once (batched); its train_seconds is its share
    experiment: str = ""  # the MLflow experiment's id
    tags: dict[str, str] = field(default_factory=dict)  # its MLflow tags

    @property
    def identity(self) -> tuple[tuple[str, str], ...]:
        """The run's configuration as ``resume=auto`` matches it in its experiment (``config.IDENTITY``,
        from its params; keys added since the run are read as what it did then)."""
        params = {**{k: str(v) for k, v in BEFORE.items()}, **self.params}
        return (("experiment", self.experiment),) + tuple(sorted(
            (k, v) for k, v in params.items() if any(k == f or k.startswith(f + ".") for f in IDENTITY)))

    @property
    def selection(self) -> str:
        """Which epoch's weights its test scores are from (runs from before the choice existed: the last)."""
        return self.params.get("selection", "last")

    def validation(self, key: str) -> Optional[float]:
        """The validation value of ``key`` at the selected epoch (its curve at ``best_epoch``),
        else the last logged one."""
        best, curve = self.metrics.get("best_epoch"), dict(self.curves.get(key, []))
        if best and int(best) - 1 in curve:
            return curve[int(best) - 1]
        return self.metrics.get(key)

    @property
    def budget_limited(self) -> Optional[bool]:
        """Its ``budget_limited`` tag (:func:`budget_limited`, computed when it trained from the epochs it
        trained: a run extended by ``resume=`` with a larger ``trainer.max_epochs`` keeps its first
        params). Runs from before the tag: derived from ``best_epoch`` (``select=last``: the last epoch)
        and the params ``trainer.max_epochs`` and ``trainer.patience``, patience having stopped it
        ``patience`` epochs after its best; None where these are missing."""
        if self.tags.get("budget_limited") in ("true", "false"):
            return self.tags["budget_limited"] == "true"
        if not (self.params.get("trainer.max_epochs") or "").isdigit():
            return None
        max_epochs = int(self.params["trainer.max_epochs"])
        patience = self.params.get("trainer.patience", "None")
        patience = int(patience) if patience.isdigit() else None
        if self.selection == "last":
            return budget_limited(max_epochs, max_epochs, max_epochs, patience)
        if not self.metrics.get("best_epoch"):
            return None
        best = int(self.metrics["best_epoch"])
        return budget_limited(best, min(max_epochs, best + patience) if patience else max_epochs, max_epochs,
                              patience)

    @property
    def lr(self) -> str:
        return self.params.get("optimizer.lr", "?")

    @property
    def fold(self) -> str:
        """Its train/validation fold (``data.fold``; runs from before folds had the one split, fold 0)."""
        return self.params.get("data.fold", str(BEFORE["data.fold"]))

    @property
    def conditions(self) -> dict[str, str]:
        """The stress conditions the run trained under (``task.label_noise``, ``task.imbalance``)."""
        out = {}
        if float(self.params.get("task.label_noise") or 0) > 0:
            out["label_noise"] = self.params["task.label_noise"]
        if self.params.get("task.imbalance") not in (None, "", "None"):
            out["imbalance"] = self.params["task.imbalance"]
        return out

    @property
    def table(self) -> str:
        """The report table the run belongs to: its task, its data file (``task=file``) and conditions."""
        name = self.task + (f" {Path(self.params['task.path']).stem}" if self.params.get("task.path") else "")
        cond = ", ".join(f"{k}={v}" for k, v in self.conditions.items())
        return f"{name} [{cond}]" if cond else name


def one_per_seed(runs: list[RunInfo]) -> tuple[list[RunInfo], list[str]]:
    """Each configuration and seed counted once: of the FINISHED runs with one identity (a sweep
    run twice, a batched sweep resumed by hand) the newest is kept. Returns the runs kept and
    a line for each run set aside, saying why."""
    newest: dict[tuple, RunInfo] = {}
    for r in sorted(runs, key=lambda r: r.started):
        newest[r.identity] = r
    kept = {id(r) for r in newest.values()}
    aside = [f"{r.run_id} ({r.activation} + {r.loss}, lr {r.lr}, seed {r.seed}): an older run of the configuration "
             f"of {newest[r.identity].run_id}" for r in runs if id(r) not in kept]
    return [r for r in runs if id(r) in kept], aside


def conditions_note(conditions: dict[str, str], kind: str) -> str:
    """What a table's conditions did to the training data, for its heading."""
    parts = []
    if "label_noise" in conditions:
        what = "tags were flipped" if kind == "multilabel" else "labels were replaced by another class"
        parts.append(f"{float(conditions['label_noise']):.0%} of the training {what}")
    if "imbalance" in conditions:
        share = float(conditions["imbalance"])
        if share == 1:
            parts.append("no class was thinned (imbalance=1: the balanced baseline, with per-class recall)")
        elif kind == "binary":
            parts.append(f"{share:.0%} of the training positives were kept")
        else:
            parts.append(f"training class sizes decay geometrically from all of the first class to {share:.0%} "
                         f"of the last")
        parts[-1] += "; balanced accuracy and per-class recall show what accuracy hides"
    return ("Conditions: " + "; ".join(parts) + ". Validation and test data are clean.") if parts else ""


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and 95% confidence half-width (Student's t); half-width is nan for one value."""
    if not values:
        return math.nan, math.nan
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, math.nan
    from scipy.stats import t

    return m, float(t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))


def spread(values: list[float]) -> dict[str, Any]:
    """Median with min and max of repeated measurements: how the benchmarks report a figure."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "per_round": list(values)}


def indistinguishable(a: list[float], b: list[float], alpha: float = ALPHA) -> bool:
    """True when Welch's two-sided t-test on the seeds cannot separate ``a`` from ``b`` at
    level ``alpha``. With fewer than two seeds on a side, or no spread at all, only equal
    means are indistinguishable."""
    if len(a) < 2 or len(b) < 2 or (statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0):
        return statistics.fmean(a) == statistics.fmean(b)
    from scipy.stats import ttest_ind

    return float(ttest_ind(a, b, equal_var=False).pvalue) >= alpha


def rank_by(kind: str) -> str:
    """The yardstick that ranks a task's rows and colours its grid."""
    return yardsticks.primary(kind)


def epochs_to_target(curve: list[tuple[int, float]], target: float) -> Optional[int]:
    return next((step + 1 for step, value in sorted(curve) if value >= target), None)


def epochs_to_target_over_seeds(runs: list[RunInfo], target: float) -> dict[str, Any]:
    """Mean first epoch at which the ranking yardstick reached ``target`` on validation, over
    the seeds that reached it, and how many did."""
    reached = [e for r in runs if (e := epochs_to_target(r.curves.get(f"val/{rank_by(r.kind)}", []), target))]
    return {"mean": statistics.fmean(reached) if reached else None, "reached": len(reached), "of": len(runs)}


def _row(group: list[RunInfo], cols: dict[str, bool], rank: str, target: float) -> dict[str, Any]:
    first = group[0]
    row: dict[str, Any] = {"activation": first.activation, "loss": first.loss, "lr": first.lr, "status": first.status,
                           "selection": first.selection,
                           "seeds": sorted({r.seed for r in group}), "folds": len({r.fold for r in group}),
                           "n": len(group), "values": {}}
    for col in cols:
        vals = [r.metrics[f"test/{col}"] for r in group if f"test/{col}" in r.metrics]
        row["values"][col] = vals
        row[col] = _summary(vals) if vals else None
    val = [v for r in group if (v := r.validation(f"val/{rank}")) is not None]
    row["val_" + rank] = statistics.fmean(val) if val else None
    row["values"]["selected_epoch"] = [r.metrics["best_epoch"] for r in group if "best_epoch" in r.metrics]
    row["selected_epoch"] = _summary(row["values"]["selected_epoch"]) if row["values"]["selected_epoch"] else None
    row["members"] = max(r.members for r in group)
    flags = [r.budget_limited for r in group]
    row["budget_limited_runs"] = sum(f is True for f in flags)
    row["budget_limited"] = budget_limited_cell(flags)
    row["epochs_to_target"] = epochs_to_target_over_seeds(group, target)
    row["values"]["train_seconds"] = [r.metrics["train_seconds"] for r in group if "train_seconds" in r.metrics]
    row["train_seconds"] = _summary(row["values"]["train_seconds"])
    return row


def budget_limited_cell(flags: list[Optional[bool]]) -> Optional[bool]:
    """A cell is budget-limited when any of its seeds is (its mean may still be rising), not when
    every seed is known not to be; None when unknown."""
    return True if any(flags) else False if flags and all(f is False for f in flags) else None


def _summary(values: list[float]) -> dict[str, float]:
    return dict(zip(("mean", "ci95"), mean_ci(values)))


def _ties(rows: list[dict[str, Any]], col: str, higher: bool) -> list[int]:
    """Indices of the rows whose ``col`` cannot be told from the best mean."""
    scored = [i for i, r in enumerate(rows) if r.get(col) and not math.isnan(r[col]["mean"])]
    if not scored:
        return []
    top = (max if higher else min)(scored, key=lambda i: rows[i][col]["mean"])
    return [i for i in scored if indistinguishable(rows[i]["values"][col], rows[top]["values"][col])]


def lr_stability(runs: list[RunInfo], rank: str, resamples: int = RESAMPLES,
                 seed: int = 0) -> Optional[dict[str, float]]:
    """How often each learning rate wins a cell's choice (the best mean validation ``rank`` at each run's
    selected epoch, as :func:`chosen_lr` chooses) when each learning rate's runs (its seeds × folds) are
    drawn again with replacement: the share of ``resamples`` bootstrap draws it wins, from a fixed
    generator so that a report reads the same each time. One validation split of a few rows can make
    the choice a lottery; the share says so. None when there is no choice (one learning rate) or a
    learning rate has fewer than two runs to resample."""
    import numpy as np

    by_lr: dict[str, list[float]] = {}
    for r in runs:
        if (v := r.validation(f"val/{rank}")) is not None:
            by_lr.setdefault(r.lr, []).append(v)
    if len(by_lr) < 2 or min(map(len, by_lr.values())) < 2:
        return None
    rng, lrs = np.random.default_rng(seed), sorted(by_lr)  # chosen_lr's order: the first of equal means wins
    means = np.stack([np.asarray(by_lr[lr])[rng.integers(0, len(by_lr[lr]), (resamples, len(by_lr[lr])))].mean(1)
                      for lr in lrs])
    wins = np.bincount(means.argmax(0), minlength=len(lrs))
    return {lr: float(w) / resamples for lr, w in zip(lrs, wins)}


def supported(row: dict[str, Any]) -> bool:
    """Whether a row's ★ can stand: its learning rate, chosen on validation, wins at least ``STABLE`` of the
    resamples (:func:`lr_stability`; no choice or nothing to resample: nothing to doubt). A tie at a learning
    rate that resampling the seeds and folds overturns rests on a lottery."""
    return row.get("lr_share") is None or row["lr_share"] >= STABLE


def chosen_lr(rows: list[dict[str, Any]], rank: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Per activation × loss cell, its row at the learning rate with the best mean validation ``rank``."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        cell, score = (row["activation"], row["loss"]), row["val_" + rank]
        held = out.get(cell)
        if held is None or (score is not None and (held["val_" + rank] is None or score > held["val_" + rank])):
            out[cell] = row
    return out


def aggregate(runs: list[RunInfo], targets: Optional[dict[str, float]] = None,
              best_lr: bool = False) -> dict[str, dict[str, Any]]:
    """One table per task and condition (``RunInfo.table``): a row per activation + loss (+ learning rate,
    where runs differ in it) with mean and CI per yardstick over seeds; ``best`` lists, per column, the rows that
    tie with the best; ``grid`` holds each activation × loss cell at its learning rate chosen
    on validation. ``best_lr``: the table too keeps only that learning rate's row per cell,
    so its test scores (and ties) are those of a choice made without looking at the test split."""
    targets = targets or {}
    tables: dict[str, dict[str, Any]] = {}
    for name in sorted({r.table for r in runs}):
        mine = [r for r in runs if r.table == name]
        kind, conditions = mine[0].kind, mine[0].conditions
        cols, rank = yardsticks.report_columns(kind), rank_by(kind)
        if "imbalance" in conditions and kind != "multilabel":
            recalls = sorted({k[len("test/"):] for r in mine for k in r.metrics if k.startswith("test/recall_")},
                             key=lambda k: int(k.rsplit("_", 1)[1]))
            balanced = {n: y.higher_is_better for n, y in yardsticks.TABLE.items()
                        if y.per_class and y.in_report and kind in y.kinds}
            cols = {rank: True, **balanced, **{k: True for k in recalls}, **cols}
        lrs = sorted({r.lr for r in mine})
        keys = sorted({(r.activation, r.loss, r.lr, r.selection) for r in mine})  # runs of two rules: two rows
        target = targets.get(kind, yardsticks.target(kind))
        rows = [_row([r for r in mine if (r.activation, r.loss, r.lr, r.selection) == k], cols, rank, target)
                for k in keys]
        for (act, loss), chosen in chosen_lr(rows, rank).items():
            cell = [r for r in mine if (r.activation, r.loss, r.selection) == (act, loss, chosen["selection"])]
            shares = lr_stability(cell, rank)
            for row in rows:
                if shares and (row["activation"], row["loss"], row["selection"]) == (act, loss, chosen["selection"]):
                    row["lr_share"] = shares.get(row["lr"], 0.0)
        if best_lr:
            rows = list(chosen_lr(rows, rank).values())
        rows.sort(key=lambda r: -(r[rank]["mean"] if r[rank] else -math.inf))
        best = {col: _ties(rows, col, higher) for col, higher in {**cols, "train_seconds": False}.items()}
        if best_lr:  # the rows are learning-rate choices: a choice that resampling overturns gets no ★
            best.update({col: [i for i in best[col] if supported(rows[i])] for col in cols})
        reached = [(r["epochs_to_target"]["mean"], i) for i, r in enumerate(rows) if r["epochs_to_target"]["mean"]]
        best["epochs_to_target"] = [min(reached)[1]] if reached else []
        grid = {}
        for (act, loss), chosen in sorted(chosen_lr(rows, rank).items()):
            grid[f"{act}/{loss}"] = {"lr": chosen["lr"], "mean": chosen[rank]["mean"] if chosen[rank] else None,
                                     "ci95": chosen[rank]["ci95"] if chosen[rank] else None, "n": chosen["n"],
                                     "values": chosen["values"][rank],
                                     "selected_epoch": chosen["selected_epoch"]["mean"] if chosen["selected_epoch"]
                                     else None, "budget_limited": chosen["budget_limited"],
                                     "budget_limited_runs": chosen["budget_limited_runs"],
                                     "folds": chosen["folds"], "lr_share": chosen.get("lr_share")}
        top = max((g for g in grid.values() if g["values"]), key=lambda g: g["mean"], default=None)
        for g in grid.values():
            g["best"] = bool(top and g["values"] and indistinguishable(g["values"], top["values"]) and supported(g))
        tables[name] = {"task": mine[0].task, "kind": kind, "conditions": conditions,
                        "conditions_note": conditions_note(conditions, kind), "rank_by": rank,
                        "target": target, "columns": list(cols),
                        "learning_rates": lrs, "best_lr": best_lr, "rows": rows, "best": best, "grid": grid,
                        "selection": sorted({r.selection for r in mine}),
                        "batched": any(r.members > 1 for r in mine)}
    return tables
