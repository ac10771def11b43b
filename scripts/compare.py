"""Compare runs side by side: a table per task and learning curves, from MLflow alone.

    python scripts/compare.py --experiment loss_grid_mnist
    python scripts/compare.py --parent <sweep parent run id> --out reports/mine
    python scripts/compare.py --experiment xentlab-mnist --filter "tags.loss = 'bce'"

Writes ``report.html`` (self-contained), ``report.md``, ``summary.json`` and one
``curves_<task>.png`` per task into ``--out`` (default ``reports/<experiment or parent>``)
and, when the runs belong to one sweep, attaches them to its parent run. Runs are
compared on the task's yardsticks (accuracy, NLL, Brier, ECE; multilabel: subset accuracy,
micro-F1, mAP), never on their loss values, which are on different scales. Imports no
training code: it reads MLflow only.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

# yardstick -> True if higher is better; the first one ranks the rows
COLUMNS = {
    "binary": {"acc": True, "nll": False, "brier": False, "ece": False},
    "multiclass": {"acc": True, "nll": False, "brier": False, "ece": False},
    "multilabel": {"subset_acc": True, "micro_f1": True, "map": True, "nll": False, "brier": False, "ece": False},
}
TARGETS = {"binary": 0.95, "multiclass": 0.97, "multilabel": 0.5}  # of the ranking metric, on validation
NOTE = ("Runs are compared on the task's yardsticks (test split), never on their raw loss values: "
        "each loss has its own scale. Values are mean ± 95% confidence half-width over seeds "
        "(Student's t); ★ marks the best mean per column; 'epochs to target' is the mean first epoch "
        "at which the validation {metric} reached {target} (over the seeds that reached it).")


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


def load_runs(client, *, experiment: Optional[str] = None, parent: Optional[str] = None,
              filter_string: str = "") -> list[RunInfo]:
    """Finished training runs (not sweep parents) of an experiment and/or one sweep."""
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = ", ".join(e.name for e in client.search_experiments())
            raise SystemExit(f"compare: no experiment {experiment!r} in this store; experiments: {names or 'none'}")
        exp_ids = [exp.experiment_id]
    elif parent:
        exp_ids = [client.get_run(parent).info.experiment_id]
    else:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
    clauses = ["attributes.status = 'FINISHED'"]
    if parent:
        clauses.append(f"tags.mlflow.parentRunId = '{parent}'")
    if filter_string:
        clauses.append(filter_string)
    found = []
    page_token = None
    while True:
        page = client.search_runs(exp_ids, " and ".join(clauses), max_results=1000, page_token=page_token)
        found += page
        page_token = page.token
        if not page_token:
            break
    runs = []
    for r in found:
        t = r.data.tags
        if t.get("sweep") == "parent" or "task" not in t:
            continue
        kind = t.get("task_kind", "multiclass")
        info = RunInfo(r.info.run_id, t["task"], kind, t.get("activation", "?"), t.get("loss", "?"),
                       t.get("seed", "?"), t.get("combination_status", "?"), dict(r.data.metrics),
                       params=dict(r.data.params))
        for key in (f"val/{next(iter(COLUMNS[kind]))}", "val/nll"):
            if key in info.metrics:
                info.curves[key] = [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, key)]
        runs.append(info)
    return runs


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and 95% confidence half-width (Student's t); half-width is nan for one value."""
    if not values:
        return math.nan, math.nan
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, math.nan
    from scipy.stats import t

    return m, float(t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))


def epochs_to_target(curve: list[tuple[int, float]], target: float) -> Optional[int]:
    return next((step + 1 for step, value in sorted(curve) if value >= target), None)


def aggregate(runs: list[RunInfo], targets: Optional[dict[str, float]] = None) -> dict[str, dict[str, Any]]:
    """One table per task: a row per activation+loss with mean/CI per yardstick over seeds."""
    targets = {**TARGETS, **(targets or {})}
    tables: dict[str, dict[str, Any]] = {}
    for task in sorted({r.task for r in runs}):
        mine = [r for r in runs if r.task == task]
        kind = mine[0].kind
        cols, rank = COLUMNS[kind], next(iter(COLUMNS[kind]))
        rows = []
        for act, loss in sorted({(r.activation, r.loss) for r in mine}):
            group = [r for r in mine if (r.activation, r.loss) == (act, loss)]
            row: dict[str, Any] = {"activation": act, "loss": loss, "status": group[0].status,
                                   "seeds": sorted(r.seed for r in group), "n": len(group)}
            for col in cols:
                vals = [r.metrics[f"test/{col}"] for r in group if f"test/{col}" in r.metrics]
                row[col] = dict(zip(("mean", "ci95"), mean_ci(vals))) if vals else None
            reached = [e for r in group if (e := epochs_to_target(r.curves.get(f"val/{rank}", []), targets[kind]))]
            row["epochs_to_target"] = {"mean": statistics.fmean(reached) if reached else None,
                                       "reached": len(reached), "of": len(group)}
            row["train_seconds"] = dict(zip(("mean", "ci95"), mean_ci(
                [r.metrics["train_seconds"] for r in group if "train_seconds" in r.metrics])))
            rows.append(row)
        rows.sort(key=lambda r: -(r[rank]["mean"] if r[rank] else -math.inf))
        best = {}
        for col, higher in {**cols, "train_seconds": False}.items():
            means = [(r[col]["mean"], i) for i, r in enumerate(rows) if r.get(col) and not math.isnan(r[col]["mean"])]
            if means:
                best[col] = (max if higher else min)(means)[1]
        reached_rows = [(r["epochs_to_target"]["mean"], i) for i, r in enumerate(rows) if r["epochs_to_target"]["mean"]]
        if reached_rows:
            best["epochs_to_target"] = min(reached_rows)[1]
        tables[task] = {"kind": kind, "rank_by": rank, "target": targets[kind], "columns": list(cols),
                        "rows": rows, "best": best}
    return tables


def _fmt(cell: Optional[dict], digits: int = 4) -> str:
    if not cell or cell.get("mean") is None or math.isnan(cell["mean"]):
        return "—"
    ci = cell.get("ci95")
    return f"{cell['mean']:.{digits}f}" + ("" if ci is None or math.isnan(ci) else f" ± {ci:.{digits}f}")


def table_rows(table: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["activation", "loss", "status", "seeds", *table["columns"], "epochs to target", "train s"]
    out = []
    for i, r in enumerate(table["rows"]):
        star = lambda col: " ★" if table["best"].get(col) == i else ""  # noqa: E731
        e = r["epochs_to_target"]
        epochs = "—" if e["mean"] is None else f"{e['mean']:.1f} ({e['reached']}/{e['of']})"
        out.append([r["activation"], r["loss"], r["status"], str(r["n"]),
                    *[_fmt(r[c]) + star(c) for c in table["columns"]],
                    epochs + star("epochs_to_target"), _fmt(r["train_seconds"], 1) + star("train_seconds")])
    return header, out


def plot_curves(task: str, table: dict[str, Any], runs: list[RunInfo], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    keys = [f"val/{table['rank_by']}", "val/nll"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.get_cmap("tab20")
    for i, row in enumerate(table["rows"]):
        group = [r for r in runs if r.task == task and (r.activation, r.loss) == (row["activation"], row["loss"])]
        for ax, key in zip(axes, keys):
            curves = [dict(r.curves[key]) for r in group if r.curves.get(key)]
            if not curves:
                continue
            steps = sorted(set.intersection(*(set(c) for c in curves)))
            values = [[c[s] for c in curves] for s in steps]
            epochs = [s + 1 for s in steps]
            ax.plot(epochs, [statistics.fmean(v) for v in values], color=colours(i % 20),
                    label=f"{row['activation']} + {row['loss']}", marker="o", markersize=3)
            ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], color=colours(i % 20), alpha=0.15)
    for ax, key in zip(axes, keys):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{task}: validation curves (mean over seeds, band = min..max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(tables: dict[str, dict[str, Any]], runs: list[RunInfo], out: Path, title: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", ""]
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:nth-child(-n+3){text-align:left}</style>",
             f"<h1>{html.escape(title)}</h1>"]
    files = []
    for task, table in tables.items():
        note = NOTE.format(metric=table["rank_by"], target=table["target"])
        header, rows = table_rows(table)
        png = out / f"curves_{task}.png"
        plot_curves(task, table, runs, png)
        files.append(png)
        md += [f"## {task} ({table['kind']})", "", note, "",
               "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(r) + " |" for r in rows]
        md += ["", f"![{task} curves]({png.name})", ""]
        b64 = base64.b64encode(png.read_bytes()).decode()
        parts += [f"<h2>{html.escape(task)} ({table['kind']})</h2><p>{html.escape(note)}</p><table><tr>",
                  "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
        parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts += [f"</table><p><img alt='{html.escape(task)} curves' src='data:image/png;base64,{b64}'></p>"]
    (out / "report.md").write_text("\n".join(md))
    (out / "report.html").write_text("\n".join(parts))
    (out / "summary.json").write_text(json.dumps(tables, indent=2, default=str))
    return [out / "report.html", out / "report.md", out / "summary.json", *files]


def compare(*, tracking_uri: Optional[str] = None, experiment: Optional[str] = None, parent: Optional[str] = None,
            filter_string: str = "", out: Optional[Path] = None, targets: Optional[dict[str, float]] = None,
            attach: bool = True) -> dict[str, Any]:
    """Build the report; returns the tables. Attaches it to the sweep's parent run if there is one."""
    from xentlab import tracking

    client = tracking.client(tracking_uri)
    runs = load_runs(client, experiment=experiment, parent=parent, filter_string=filter_string)
    if not runs:
        raise SystemExit("compare: no finished runs match; check --experiment/--parent/--filter and the store")
    tables = aggregate(runs, targets)
    title = f"xentlab comparison: {experiment or parent or 'all runs'}"
    out = out or Path("reports") / (experiment or parent or "all")
    files = write_report(tables, runs, out, title)
    parents = {client.get_run(r.run_id).data.tags.get("mlflow.parentRunId") for r in runs}
    target_run = parent or (parents.pop() if len(parents) == 1 else None)
    if attach and target_run:
        for f in files:
            client.log_artifact(target_run, str(f), "comparison")
    print(f"report: {out / 'report.html'} ({len(runs)} runs, {len(tables)} task(s))"
          + (f"; attached to parent run {target_run}" if attach and target_run else ""))
    return tables


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", help="MLflow experiment name (e.g. loss_grid_mnist)")
    ap.add_argument("--parent", help="a sweep's parent run id: compare its child runs")
    ap.add_argument("--filter", default="", help="extra MLflow search filter, e.g. \"tags.loss = 'bce'\"")
    ap.add_argument("--tracking-uri", help="MLflow store (default: MLflow's default, sqlite:///mlflow.db)")
    ap.add_argument("--out", type=Path, help="output folder (default reports/<experiment or parent>)")
    ap.add_argument("--target", action="append", default=[], metavar="KIND=VALUE",
                    help="accuracy target for 'epochs to target', e.g. multiclass=0.98 (repeatable)")
    ap.add_argument("--no-attach", action="store_true", help="do not log the report to the parent run")
    a = ap.parse_args(argv)
    targets = {k: float(v) for k, v in (t.split("=", 1) for t in a.target)}
    compare(tracking_uri=a.tracking_uri, experiment=a.experiment, parent=a.parent, filter_string=a.filter,
            out=a.out, targets=targets, attach=not a.no_attach)


if __name__ == "__main__":
    main()
