"""Compare runs side by side: a table per task (and condition) and learning curves, from MLflow alone.

    python scripts/compare.py --experiment loss_grid_mnist
    python scripts/compare.py --parent <sweep parent run id> --out reports/mine
    python scripts/compare.py --experiment xentlab-mnist --filter "tags.loss = 'bce'"

Writes ``report.html`` (self-contained), ``report.md``, ``summary.json``, and per table
``grid_<table>.png`` (every activation × loss cell, coloured by the primary test yardstick)
and ``curves_<task>.png`` into ``--out`` (default ``reports/<experiment or parent>``) and,
when the runs belong to one sweep, attaches them to its parent run. Runs are compared on
the task's yardsticks (accuracy, NLL, Brier, ECE; multilabel: subset accuracy, micro-F1,
mAP), never on their loss values, which are on different scales. The statistics live in
``xentlab.analysis``; this module renders them. Imports no training code: it reads MLflow
(through ``xentlab.tracking``) only.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any, Optional, Sequence

from xentlab import tracking
from xentlab.analysis import RESAMPLES, STABLE, RunInfo, aggregate, one_per_seed
from xentlab.errors import ConfigError

NOTE = ("Runs are compared on the task's yardsticks (test split), never on their raw loss values: "
        "each loss has its own scale. Values are mean ± 95% confidence half-width over seeds "
        "(Student's t); ★ marks every value that Welch's t-test on the seeds (5% level) cannot tell "
        "from the best mean; 'epochs to target' is the mean first epoch at which the validation "
        "{metric} reached {target} (over the seeds that reached it).{lr_note}")
LR_NOTE = (" Runs differ in optimizer.lr: the table has a row per learning rate, and the grid shows each "
           "cell at the learning rate with the best mean validation {metric} (chosen on validation data, "
           "reported on test data).")
BEST_LR_NOTE = (" Runs differ in optimizer.lr ({lrs}): each cell is shown at the learning rate with the best mean "
                "validation {metric} only (--best-lr). The choice was made on validation data; the test scores "
                "and ★ are those of that learning rate.")


def fmt(cell: Optional[dict], digits: int = 4) -> str:
    """Mean ± 95% half-width, or — where there is no value."""
    if not cell or cell.get("mean") is None or math.isnan(cell["mean"]):
        return "—"
    ci = cell.get("ci95")
    return f"{cell['mean']:.{digits}f}" + ("" if ci is None or math.isnan(ci) else f" ± {ci:.{digits}f}")


SELECTION_NOTE = {
    "last": " Test scores are those of each run's weights after its last epoch (trainer.select=last).",
    "best": " Test scores are those of each run's weights at its best validation epoch on {on} "
            "(trainer.select=best); 'selected epoch' is the mean of those epochs over seeds.",
}
BUDGET_MARK = "†"
BUDGET_NOTE = (" † marks a budget-limited cell: at least one of its seeds trained all trainer.max_epochs and "
               "selected an epoch within the last trainer.patience of them (without patience: the last epoch; "
               "with trainer.select=last: always), so more epochs might have raised its score.")
BUDGET_UNKNOWN = " Whether {n} row(s) are budget-limited is unknown (runs without the tag, best_epoch or params)."
FOLDS_NOTE = (" Runs with data.folds=K trained a model per fold (K train/validation folds of the training rows, "
              "stratified by class, the same for every cell): each fold model is tested at its own best validation "
              "epoch, a row's values are means over its fold models and seeds (the 'seeds' column reads seeds × "
              "folds), the learning rate is chosen on the mean validation score over folds and seeds, and Welch's "
              "test takes each fold model as one sample, as it takes each seed.")
STABILITY_NOTE = (" Stability of the learning-rate choice (each learning rate's runs resampled with replacement, "
                  "{resamples} draws): {cells}. A cell whose learning rate wins fewer than {stable:.0%} of the draws "
                  "gets no ★: its place rests on a choice that resampling the seeds and folds overturns.")
BATCHED_NOTE = (" Runs marked ×K trained as members of a batched model of K runs: their 'train s' is their "
                "share of the model's time (the model's time ÷ K).")


def selection_note(table: dict[str, Any]) -> str:
    """The heading's sentence on which epoch's weights were tested (every rule the runs used)."""
    return "".join(SELECTION_NOTE["last"] if rule == "last" else
                   SELECTION_NOTE["best"].format(on=rule.removeprefix("best ")) for rule in table["selection"])


def budget_mark(cell: Optional[dict]) -> str:
    """The mark beside a budget-limited cell's score (``analysis.budget_limited``)."""
    return f" {BUDGET_MARK}" if cell and cell.get("budget_limited") else ""


def budget_note(table: dict[str, Any]) -> str:
    """The heading's legend for the budget-limited mark, and how many rows are unknown."""
    unknown = sum(r["budget_limited"] is None for r in table["rows"])
    return BUDGET_NOTE + (BUDGET_UNKNOWN.format(n=unknown) if unknown else "")


def folds_note(table: dict[str, Any]) -> str:
    """The heading's sentence on cross-validated runs, where there are any."""
    return FOLDS_NOTE if any(r["folds"] > 1 for r in table["rows"]) else ""


def stability_note(table: dict[str, Any]) -> str:
    """The heading's sentence on how often each cell's chosen learning rate wins (``analysis.lr_stability``)."""
    cells = [f"{key.replace('/', ' + ')}: lr {g['lr']} chosen in {g['lr_share']:.0%} of resamples"
             for key, g in table["grid"].items() if g.get("lr_share") is not None]
    return STABILITY_NOTE.format(resamples=RESAMPLES, cells="; ".join(cells), stable=STABLE) if cells else ""


def runs_count(row: dict[str, Any]) -> str:
    """The 'seeds' column: how many seeds, times how many folds where there are several."""
    return f"{len(row['seeds'])} × {row['folds']} folds" if row["folds"] > 1 else str(row["n"])


def table_rows(table: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    several_lrs, rules = len(table["learning_rates"]) > 1, len(table["selection"]) > 1
    selected = any(r["selected_epoch"] for r in table["rows"])
    header = ["activation", "loss", *(["lr"] if several_lrs else []), *(["tested"] if rules else []), "status",
              "seeds", *table["columns"],
              *(["selected epoch"] if selected else []), "epochs to target",
              "train s (batched: share)" if table["batched"] else "train s"]
    out = []
    for i, r in enumerate(table["rows"]):
        star = lambda col: " ★" if i in table["best"].get(col, []) else ""  # noqa: E731
        e = r["epochs_to_target"]
        epochs = "—" if e["mean"] is None else f"{e['mean']:.1f} ({e['reached']}/{e['of']})"
        seconds = fmt(r["train_seconds"], 1) + (f" ×{r['members']}" if r["members"] > 1 else "")
        out.append([r["activation"], r["loss"], *([r["lr"]] if several_lrs else []),
                    *([r["selection"]] if rules else []), r["status"], runs_count(r),
                    *[fmt(r[c]) + star(c) + (budget_mark(r) if c == table["rank_by"] else "")
                      for c in table["columns"]],
                    *([fmt(r["selected_epoch"], 1)] if selected else []),
                    epochs + star("epochs_to_target"), seconds + star("train_seconds")])
    return header, out


def grid_cells(table: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Every activation × loss cell of the task kind: status and reason from the compatibility
    table, the ranking yardstick's mean ± CI where runs exist."""
    from xentlab import compat  # the loss registry imports torch: not for --help
    kind, rank = table["kind"], table["rank_by"]
    cells = []
    for act in compat.ACTIVATIONS:
        row = []
        for loss in compat.LOSSES:
            c = compat.cell(kind, act, loss)
            g = table["grid"].get(f"{act}/{loss}")
            text = "✗" if c.status is compat.Status.INVALID else ("no runs" if not g or g["mean"] is None else
                                                                  fmt({"mean": g["mean"], "ci95": g["ci95"]}, 3))
            if c.status is compat.Status.QUESTIONABLE:
                text = "⚠ " + text
            if g and g["best"]:
                text += " ★"
            text += budget_mark(g)
            tip = f"{act} + {loss}: {c.status.value}: {c.reason}"
            if g and g["mean"] is not None:
                tip += (f"; test {rank} over {g['n']} run(s)" + (f" ({g['folds']} folds)" if g["folds"] > 1 else "")
                        + (f" at lr {g['lr']}" if len(table["learning_rates"]) > 1 else "")
                        + (f", chosen in {g['lr_share']:.0%} of resamples" if g.get("lr_share") is not None else ""))
                if g["budget_limited"]:
                    tip += f"; budget-limited in {g['budget_limited_runs']} of its {g['n']} run(s)"
            row.append({"activation": act, "loss": loss, "status": c.status.value, "text": text, "tip": tip,
                        "mean": None if not g else g["mean"]})
        cells.append(row)
    return cells


def plot_grid(task: str, table: dict[str, Any], path: Path) -> None:
    """The question at a glance: activation (rows) × loss (columns), coloured by the task's
    primary test yardstick."""
    import matplotlib

    from xentlab import compat

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = grid_cells(table)
    values = np.array([[np.nan if c["mean"] is None else c["mean"] for c in row] for row in cells])
    fig, ax = plt.subplots(figsize=(1.9 * len(compat.LOSSES) + 2, 1.1 * len(compat.ACTIVATIONS) + 1.6))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
    finite = values[np.isfinite(values)]
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=finite.min() if finite.size else 0,
                      vmax=finite.max() if finite.size else 1, aspect="auto")
    for i, row in enumerate(cells):
        for j, c in enumerate(row):
            dark = c["mean"] is not None and finite.size and c["mean"] < (finite.min() + finite.max()) / 2
            ax.text(j, i, c["text"], ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_xticks(range(len(compat.LOSSES)), compat.LOSSES)
    ax.set_yticks(range(len(compat.ACTIVATIONS)), compat.ACTIVATIONS)
    ax.set_xlabel("loss")
    ax.set_ylabel("output activation")
    fig.colorbar(image, ax=ax, label=f"test {table['rank_by']} (mean over seeds)")
    ax.set_title(f"{task} ({table['kind']}): ✗ invalid, ⚠ questionable, ★ ties with the best (Welch, 5%), "
                 f"{BUDGET_MARK} budget-limited",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def grid_html(table: dict[str, Any]) -> str:
    """The grid as an HTML table, each cell's status and reason on hover."""
    from xentlab import compat
    colours = {"recommended": "#d8f0d8", "valid": "#eef6ee", "questionable": "#fff3cd", "invalid": "#eeeeee"}
    out = ["<table class='grid'><tr><th>activation \\ loss</th>"
           + "".join(f"<th>{html.escape(loss)}</th>" for loss in compat.LOSSES) + "</tr>"]
    for row in grid_cells(table):
        out.append(f"<tr><th>{html.escape(row[0]['activation'])}</th>" + "".join(
            f"<td title='{html.escape(c['tip'], quote=True)}' style='background:{colours[c['status']]}'>"
            f"{html.escape(c['text'])}</td>" for c in row) + "</tr>")
    return "".join(out) + "</table>"


def plot_curves(task: str, table: dict[str, Any], runs: list[RunInfo], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [f"val/{table['rank_by']}", "val/nll"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.get_cmap("tab20")
    several_lrs = len(table["learning_rates"]) > 1
    last_epoch = 1
    for i, row in enumerate(table["rows"]):
        group = [r for r in runs if r.table == task and (r.activation, r.loss, r.lr, r.selection)
                 == (row["activation"], row["loss"], row["lr"], row["selection"])]
        for ax, key in zip(axes, keys):
            curves = [dict(r.curves[key]) for r in group if r.curves.get(key)]
            if not curves:
                continue
            steps = sorted(set.intersection(*(set(c) for c in curves)))
            values = [[c[s] for c in curves] for s in steps]
            epochs = [s + 1 for s in steps]
            last_epoch = max(last_epoch, *epochs)
            label = f"{row['activation']} + {row['loss']}" + (f" (lr {row['lr']})" if several_lrs else "")
            means = [statistics.fmean(v) for v in values]
            ax.plot(epochs, means, color=colours(i % 20), label=label, marker="o", markersize=3)
            chosen = row["selected_epoch"]["mean"] if row["selected_epoch"] else None
            if chosen is not None and round(chosen) in epochs:  # the selected epoch
                ax.plot([round(chosen)], [means[epochs.index(round(chosen))]], color=colours(i % 20), marker="*",
                        markersize=12, markeredgecolor="black", linestyle="none")
            ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], color=colours(i % 20),
                            alpha=0.15)
    for ax, key in zip(axes, keys):
        ax.set_xlabel("epoch")
        ax.set_xticks(range(1, last_epoch + 1, max(1, last_epoch // 10)))  # whole epochs only
        ax.set_xlim(0.5, last_epoch + 0.5)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7, loc="lower right")
    marked = "; ★ = mean selected epoch" if any(r["selected_epoch"] for r in table["rows"]) else ""
    fig.suptitle(f"{task}: validation curves (mean over seeds, band = min..max{marked})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(tables: dict[str, dict[str, Any]], runs: list[RunInfo], out: Path, title: str,
                 aside: Sequence[str] = ()) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", ""]
    counted = (f"Each configuration and seed counts once: {len(aside)} FINISHED run(s) set aside, each an older "
               f"run of a configuration that ran again (the newest counts): " + "; ".join(aside) + ".") if aside else ""
    if counted:
        md += [counted, ""]
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:nth-child(-n+3){text-align:left}"
             "table.grid td{text-align:center;min-width:9em}</style>",
             f"<h1>{html.escape(title)}</h1>"] + ([f"<p>{html.escape(counted)}</p>"] if counted else [])
    files = []
    for task, table in tables.items():
        lr_note = "" if len(table["learning_rates"]) < 2 else (BEST_LR_NOTE if table["best_lr"] else LR_NOTE).format(
            metric=table["rank_by"], lrs=", ".join(table["learning_rates"]))
        note = (NOTE.format(metric=table["rank_by"], target=table["target"], lr_note=lr_note)
                + selection_note(table) + folds_note(table) + stability_note(table) + budget_note(table)
                + (BATCHED_NOTE if table["batched"] else ""))
        if table["conditions_note"]:
            note = table["conditions_note"] + " " + note
        header, rows = table_rows(table)
        slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", task).strip("_")
        grid_png, curves_png = out / f"grid_{slug}.png", out / f"curves_{slug}.png"
        plot_grid(task, table, grid_png)
        plot_curves(task, table, runs, curves_png)
        files += [grid_png, curves_png]
        md += [f"## {task} ({table['kind']})", "", note, "", f"![{task} grid]({grid_png.name})", "",
               "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(r) + " |" for r in rows]
        md += ["", f"![{task} curves]({curves_png.name})", ""]
        b64 = {png: base64.b64encode(png.read_bytes()).decode() for png in (grid_png, curves_png)}
        parts += [f"<h2>{html.escape(task)} ({table['kind']})</h2><p>{html.escape(note)}</p>",
                  f"<p><img alt='{html.escape(task)} grid' src='data:image/png;base64,{b64[grid_png]}'></p>",
                  "<p>Every activation × loss cell (hover for the reason):</p>", grid_html(table),
                  "<p></p><table><tr>",
                  "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
        parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts += [f"</table><p><img alt='{html.escape(task)} curves' "
                  f"src='data:image/png;base64,{b64[curves_png]}'></p>"]
    (out / "report.md").write_text("\n".join(md))
    (out / "report.html").write_text("\n".join(parts))
    (out / "summary.json").write_text(json.dumps(tables, indent=2, default=str))
    return [out / "report.html", out / "report.md", out / "summary.json", *files]


def compare(*, tracking_uri: Optional[str] = None, experiment: Optional[str] = None, parent: Optional[str] = None,
            filter_string: str = "", out: Optional[Path] = None, targets: Optional[dict[str, float]] = None,
            attach: bool = True, best_lr: bool = False) -> dict[str, Any]:
    """Build the report; returns the tables. Attaches it to the sweep's parent run if there is one."""
    client = tracking.client(tracking_uri)
    try:
        runs = tracking.load_runs(client, experiment=experiment, parent=parent, filter_string=filter_string)
    except ConfigError as exc:  # no such experiment: the message lists the store's experiments
        raise SystemExit(str(exc)) from exc
    if not runs:
        raise SystemExit("compare: no finished runs match; check --experiment/--parent/--filter and the store")
    runs, aside = one_per_seed(runs)
    tables = aggregate(runs, targets, best_lr=best_lr)
    title = f"xentlab comparison: {experiment or parent or 'all runs'}"
    out = out or Path("reports") / (experiment or parent or "all")
    files = write_report(tables, runs, out, title, aside)
    parents = {tracking.parent_of(client, r.run_id) for r in runs}
    target_run = parent or (parents.pop() if len(parents) == 1 else None)
    if attach and target_run:
        tracking.attach(client, target_run, files, "comparison")
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
    ap.add_argument("--best-lr", action="store_true",
                    help="one row per cell: the learning rate with the best mean validation score (fair grids)")
    a = ap.parse_args(argv)
    targets = {k: float(v) for k, v in (t.split("=", 1) for t in a.target)}
    compare(tracking_uri=a.tracking_uri, experiment=a.experiment, parent=a.parent, filter_string=a.filter,
            out=a.out, targets=targets, attach=not a.no_attach, best_lr=a.best_lr)

