"""The verdict table across tasks, docs/VERDICTS.md: which output activation and loss to use,
and what choosing wrong costs, on five real tasks.

    python scripts/verdicts.py                    # the five fair-grid sweeps, then docs/VERDICTS.md
    python scripts/verdicts.py --no-sweeps        # only render again from the store

Each task's fair-grid preset (every activation × loss cell × its Adam learning rates × seeds
0-2, batched, each run trained until patience stops it) runs as ``python run.py -m
experiment=<preset>``; every run is judged at its
best validation epoch, each cell at its learning rate with the best mean validation score,
and scored on the test split (``xentlab.analysis``). The two sentences under each grid are
computed from the table, not written by hand.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from xentlab import analysis, compat, tracking
from xentlab.report.compare import BUDGET_MARK, budget_mark, fmt

ROOT = Path(__file__).resolve().parents[2]  # the repository: its run.py and docs/
# Published figures a task's best cross-entropy cell is held against (issue #32), keyed by task name.
PUBLISHED = {
    "mnist": ("softmax", ("sparse_cce", "cce"),
              "Published CE MLPs on MNIST: a 784-128-10 MLP trained with cross-entropy reaches 98.29 ± 0.07% test "
              "accuracy (5 seeds); Keras's `mnist_mlp` example (784-512-512-10, dropout 0.2, RMSprop, 20 epochs) "
              "98.40%. Both train on all 60,000 training images; here 5,000 of them are held out for validation."),
}
PRESETS = ("fair_grid_mnist", "fair_grid_fashion", "fair_grid_binary", "fair_grid_multilabel",
           "fair_grid_breast_cancer")


def sweep(preset: str, uri: str, extra: list[str], log) -> tuple[str, float]:
    """Run one preset's sweep; returns the command a user types and its wall time."""
    command = f"python run.py -m experiment={preset}"
    start = time.perf_counter()
    log(f"{command} ...")
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", f"experiment={preset}",
                           f"logger.tracking_uri={uri}", f"hydra.sweep.dir=multirun/verdicts/{preset}", *extra],
                          capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    summary = next((line for line in proc.stdout.splitlines() if line.startswith("xentlab sweep:")), "")
    log(f"  {summary} ({seconds:.0f} s)")
    if proc.returncode != 0:
        raise SystemExit(f"verdicts: {command} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return command, seconds


def grid_markdown(table: dict[str, Any]) -> list[str]:
    """Activations (rows) × losses (columns): mean ± 95% CI of the test yardstick at the cell's
    validation-chosen lr and its mean selected epoch; ★ ties with the best, † budget-limited, ✗ invalid."""
    kind = table["kind"]
    lines = ["| activation \\ loss | " + " | ".join(compat.LOSSES) + " |", "|---" * (len(compat.LOSSES) + 1) + "|"]
    for act in compat.ACTIVATIONS:
        cells = []
        for loss in compat.LOSSES:
            status = compat.cell(kind, act, loss).status
            g = table["grid"].get(f"{act}/{loss}")
            if status is compat.Status.INVALID:
                cells.append("✗")
            elif not g or g["mean"] is None:
                cells.append("no runs")
            else:
                share = f", chosen {g['lr_share']:.0%}" if g.get("lr_share") is not None else ""
                epoch = f", ep {g['selected_epoch']:.1f}" if g.get("selected_epoch") else ""
                mark = " ⚠" if status is compat.Status.QUESTIONABLE else ""
                cells.append(f"{fmt(g)}{' ★' if g['best'] else ''}{budget_mark(g)}{mark} "
                             f"(lr {g['lr']}{share}{epoch})")
        lines.append(f"| {act} | " + " | ".join(cells) + " |")
    return lines


def budget(scored: dict[str, dict[str, Any]], top_key: str) -> str:
    """Whether the best cell and its rivals are budget-limited (``analysis.budget_limited``): a
    winner, or a rival, that was still improving when the epochs ran out makes the ranking provisional."""
    name = lambda key: key.replace("/", " + ")  # noqa: E731
    at = {k: f"{name(k)} at lr {g['lr']}" for k, g in scored.items()}
    top = scored[top_key]["budget_limited"]
    others = {k: g["budget_limited"] for k, g in scored.items() if k != top_key}
    limited = sorted(k for k, v in others.items() if v)
    unknown = sorted(k for k, v in others.items() if v is None)
    out = {True: f"It is budget-limited (at lr {scored[top_key]['lr']})", False: "It is not budget-limited",
           None: "Whether it is budget-limited is unknown"}[top]
    if limited:
        out += (f"; {len(limited)} of the other {len(others)} cells {'is' if len(limited) == 1 else 'are'} "
                f"({', '.join(at[k] for k in limited)})")
    elif others:
        out += "; no other cell is" if not unknown else f"; no other cell is known to be ({len(unknown)} unknown)"
    return out + (": more epochs might change the ranking." if top or limited else ".")


def verdict(table: dict[str, Any]) -> list[str]:
    """Two sentences: what is best (and what ties with it, and whether it or its rivals are
    budget-limited), and what the worst runnable choice costs."""
    metric = f"test {table['rank_by']}"
    scored = {key: g for key, g in table["grid"].items() if g["mean"] is not None}
    if not scored:
        return ["No cell has a finished run.", ""]
    top_key = max(scored, key=lambda k: scored[k]["mean"])
    worst_key = min(scored, key=lambda k: scored[k]["mean"])
    top, worst = scored[top_key], scored[worst_key]
    ties = sorted(k for k, g in scored.items()
                  if k != top_key and analysis.indistinguishable(g["values"], top["values"]))
    name = lambda key: key.replace("/", " + ")  # noqa: E731
    lottery = "" if analysis.supported(top) else (
        f" Its learning rate wins only {top['lr_share']:.0%} of the resamples of its seeds"
        f"{' and folds' if (top.get('folds') or 1) > 1 else ''}, so no cell gets a ★: which learning rate is best "
        "is a lottery here.")
    first = (f"Best {metric}: {name(top_key)} ({top['mean']:.4f}); "
             + (f"{len(ties)} of the other {len(scored) - 1} runnable cells cannot be told from it "
                f"({', '.join(map(name, ties))})." if ties else "no other runnable cell ties with it.")
             + lottery + " " + budget(scored, top_key))
    epochs = [g["selected_epoch"] for g in scored.values() if g.get("selected_epoch")]
    span = ("" if not epochs else f" Every run's best validation epoch was epoch {max(epochs):.0f}."
            if min(epochs) == max(epochs) else
            f" Best validation epochs ranged from {min(epochs):.1f} to {max(epochs):.1f} (mean over seeds).")
    second = (f"Choosing wrong costs up to {100 * (top['mean'] - worst['mean']):.1f} points: the worst runnable "
              f"cell, {name(worst_key)}, reaches {worst['mean']:.4f} even at its best learning rate.{span}")
    return [first, second]


def setup(runs: list[analysis.RunInfo]) -> str:
    """How a preset trained, from its runs' params: the model, batch, budget, patience and folds."""
    def values(key: str) -> str:
        return " / ".join(sorted({r.params.get(key, "?") for r in runs}))
    folds = values("data.folds")
    return (f"MLP hidden layers {values('model.hidden')}, batch {values('data.batch_size')}, budget "
            f"{values('trainer.max_epochs')} epochs, patience {values('trainer.patience')}"
            + (f", {folds} folds per configuration" if folds != "1" else ""))


def effort(runs: list[analysis.RunInfo], seconds: float) -> str:
    """Where the wall time went: epochs trained over all member runs against their budget, and the
    models' training time (each run logs its share of its model's, ``train_seconds``) against the rest."""
    if not runs:
        return ""
    epochs = sum(max((len(c) for c in r.curves.values()), default=0) for r in runs)
    budget = sum(int(r.params.get("trainer.max_epochs", 0) or 0) for r in runs)
    train = sum(r.metrics.get("train_seconds", 0.0) for r in runs)
    out = (f"{len(runs)} runs trained {epochs} epochs in all, {epochs / len(runs):.1f} per run on average "
           f"({epochs / budget:.0%} of the budget); a stopped member leaves its model's passes (compaction).")
    if seconds and train:
        out += (f" Training the models took {train / 60:.1f} of the {seconds / 60:.1f} min "
                f"({1000 * train / epochs:.0f} ms per member-epoch); the rest is start-up, building the members, "
                "testing and MLflow.")
    return out


def published(table: dict[str, Any]) -> list[str]:
    """The task's published figures beside its best cross-entropy cell, where there are any."""
    if table["task"] not in PUBLISHED:
        return []
    act, losses, text = PUBLISHED[table["task"]]
    cells = {f"{act} + {loss}": table["grid"].get(f"{act}/{loss}") for loss in losses}
    cells = {k: g for k, g in cells.items() if g and g["mean"] is not None}
    if not cells:
        return [text, ""]
    name, g = max(cells.items(), key=lambda kv: kv[1]["mean"])
    return [f"{text} Here the best of {', '.join(cells)}: {name}, {100 * g['mean']:.2f}% (lr {g['lr']}"
            f"{', budget-limited' if g['budget_limited'] else ''}).", ""]


def render(sections: list[dict[str, Any]], total: float, rendered_again: bool = False) -> str:
    out = ["# Verdicts: which output activation and loss, and what choosing wrong costs", "",
           "Generated by `python scripts/verdicts.py` (`xentlab/report/verdicts.py`). For every task: every "
           "activation × loss cell at each of the preset's Adam learning rates and seeds, trained as batched "
           "models; each run judged at its best validation epoch, each cell at the learning rate with the best "
           "mean validation score, each configuration and seed counted once. Cells: test score mean ± 95% CI "
           "over seeds (Student's t) at that learning rate, with the mean selected epoch; ★: Welch's t-test (5%) "
           f"cannot tell it from the best (and the cell's learning rate wins at least {analysis.STABLE:.0%} of the "
           f"resamples); chosen N%: the share of {analysis.RESAMPLES} bootstrap resamples of its seeds (and folds) in "
           "which that learning rate still has the best mean validation score; ⚠: questionable; ✗: invalid (refused "
           "before training); "
           f"{BUDGET_MARK}: budget-limited, at least one seed selected an epoch within the last trainer.patience "
           "epochs of trainer.max_epochs (the last epoch without patience), so more epochs might have raised "
           "its score.", ""]
    if total:
        out += [f"Wall time of the sweeps on the machine that generated this ({os.cpu_count()} CPU cores, no GPU "
                f"used): {total / 60:.1f} min in all" + (" (each sweep from its MLflow parent run's start to its end, "
                "without the seconds of Python start-up before it)" if rendered_again else "") + ".", ""]
    for s in sections:
        table = s["table"]
        lrs = ", ".join(table["learning_rates"])
        seeds = max((g["n"] // (g.get("folds") or 1) for g in table["grid"].values()), default=0)
        out += [f"## {s['preset']}: {s['title']} ({table['kind']}, test {table['rank_by']})", "",
                f"`{s['command']}`" + (f" ({s['seconds'] / 60:.1f} min); " if s["seconds"] else "; ")
                + f"learning rates {lrs}; {seeds} seeds per cell; {s['setup']}.", "",
                *grid_markdown(table), "", *verdict(table), "", *published(table)]
        if s["effort"]:
            out += [s["effort"], ""]
        if s["aside"]:
            out += [f"{len(s['aside'])} older run(s) of the same configurations were set aside.", ""]
    return "\n".join(out)


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default=",".join(PRESETS), help="comma-separated experiment presets")
    ap.add_argument("--no-sweeps", action="store_true", help="render from the runs already in the store")
    ap.add_argument("--tracking-uri", help="MLflow store (default: MLflow's default, sqlite:///mlflow.db)")
    ap.add_argument("--override", action="append", default=[], help="an extra override for every sweep")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "VERDICTS.md")
    a = ap.parse_args(argv)
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {msg}", flush=True)

    uri = tracking.check_store(a.tracking_uri)
    presets = a.presets.split(",")
    if "fair_grid_breast_cancer" in presets and not (ROOT / "data" / "examples" / "breast_cancer.npz").is_file():
        from xentlab.tasks import examples

        examples.write(ROOT / "data" / "examples")
    client, sections, total = tracking.client(uri), [], 0.0
    for preset in presets:
        if a.no_sweeps:
            command, seconds = f"python run.py -m experiment={preset}", tracking.sweep_seconds(client, preset) or 0.0
        else:
            command, seconds = sweep(preset, uri, a.override, log)
        total += seconds
        runs, aside = analysis.one_per_seed(tracking.load_runs(client, experiment=preset))
        for n, (name, table) in enumerate(analysis.aggregate(runs, best_lr=True).items()):
            mine = [r for r in runs if r.table == name]
            sections.append({"preset": preset, "title": name, "table": table, "command": command,
                             "seconds": seconds, "aside": aside if n == 0 else [], "setup": setup(mine),
                             "effort": effort(mine, seconds if n == 0 else 0.0)})
    a.out.write_text(render(sections, total, a.no_sweeps))
    log(f"wrote {a.out}")
