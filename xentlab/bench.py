"""Benchmark: xentlab's training path against a bare PyTorch loop, in one process, one run.

    python scripts/bench.py                       # CPU here, the GPU where there is one
    python scripts/bench.py --batch-sizes 128 512 --epochs 3 --json bench.json
    python scripts/bench.py --mode sweep --json bench-sweep.json   # launchers, per-job overhead

Measures seconds per epoch and samples per second (MNIST, 784-256-128-10 MLP, Adam,
sparse CCE) for
  (a) a bare PyTorch loop on device-resident tensors (the reference),
  (b) xentlab's own path (``train.run``: Lightning module, device-resident index batches),
  (c) the pattern xentlab replaces: torchvision's MNIST with per-item ToTensor/Normalize
      through a DataLoader with worker processes, same Lightning module,
  (d) (b) with the MLflow logger (its overhead),
plus start-up of ``python run.py`` to its first training step against a bare
``import torch, pytorch_lightning, mlflow, hydra``, and the cost of one-hot ``cce``
against ``sparse_cce`` for 10, 1,000 and 10,000 classes. Prints a table of ratios and
writes everything as JSON. Machines are noisy: compare ratios taken in one run.

``--mode sweep`` times whole sweeps instead, launchers interleaved in every round: a small
grid with the default launcher, ``joblib`` (2 jobs) and ``batched``; ``experiment=loss_grid_mnist``
and ``experiment=fair_grid_mnist`` (minutes: ``--skip fair_grid`` leaves it out) with the
default and the batched launcher; each with its own ``first training step after`` (seconds
since its process started); the seconds a job of a sequential sweep
spends outside its training, validation and test steps; and the training throughput of
models of K members against the bare stacked loop of the same K (the limit), in fp32 and
bf16 autocast; and the step time of a K = 32 model with 0, 8, 16 and 24 of its members
stopped (they leave the model: ``Classifier.compact``) against the bare loop of the members left.

``--mode eval`` times one validation epoch of K-member models (MNIST's 10,000 test images, eval
batch 1000, one thread): all of ``trainer.validate``, its epoch end (``Classifier._eval_epoch_end``:
compute, log, select) and the members' forward pass alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from xentlab import models, registration, tracking
from xentlab.analysis import spread
from xentlab.module import FUSED
from xentlab.report.costs import sparse_vs_one_hot
from xentlab.tasks import mnist as mnist_task

ROOT = Path(__file__).resolve().parents[1]  # the repository: its run.py, conf/ and data/
registration.register()


def make_cfg(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name="config", overrides=list(overrides))


class EpochTimer(pl.Callback):
    """Wall time from an epoch's first batch to its last (validation excluded)."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._sync(trainer)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == trainer.num_training_batches - 1:
            self._sync(trainer)
            self.times.append(time.perf_counter() - self._t0)

    @staticmethod
    def _sync(trainer):
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()


def bare_loop(x, y, batch_size: int, epochs: int, device, seed: int = 0) -> list[float]:
    """(a) The reference: the same model and optimizer, no framework at all."""
    if not torch.cuda.is_available():  # set by importing Lightning; a bare script has not imported it
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    torch.manual_seed(seed)
    net = models.build(make_cfg().model, (1, 28, 28), 10).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=device.type in FUSED)  # as xentlab's module
    x, y = x.to(device), y.to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    times = []
    for _ in range(epochs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        order = torch.randperm(len(x), generator=g, device=device)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


class BareStacked:
    """The reference of a K-member model: K MLPs (784-256-128-10) as one ``baddbmm`` chain,
    each member's batch an index gather of its own permutation of the resident training set,
    torch's fused Adam, softmax cross-entropy; no framework."""

    def __init__(self, x, y, k: int, batch_size: int, device, precision: str = "32-true"):
        if not torch.cuda.is_available():  # set by importing Lightning; a bare script has not imported it
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        g = torch.Generator().manual_seed(0)
        sizes = [x[0].numel(), 256, 128, 10]
        self.weights = [(torch.randn(k, i, o, generator=g) / i ** 0.5).to(device).requires_grad_()
                        for i, o in zip(sizes, sizes[1:])]
        self.biases = [torch.zeros(k, 1, o, device=device, requires_grad=True) for o in sizes[1:]]
        self.opt = torch.optim.Adam([*self.weights, *self.biases], lr=1e-3, fused=device.type in FUSED)
        self.x, self.y, self.k = x.to(device).flatten(1), y.to(device), k
        self.batch_size, self.device = batch_size, device
        self.gens = [torch.Generator(device=device).manual_seed(s) for s in range(k)]
        self.bf16 = precision == "bf16-mixed"
        self.batches = self.epoch_batches()

    def epoch_batches(self):
        """Each step's (K, B) example indices over one epoch: every member its own permutation."""
        n = len(self.x)
        orders = torch.stack([torch.randperm(n, generator=g, device=self.device) for g in self.gens])
        return (orders[:, i:i + self.batch_size] for i in range(0, n, self.batch_size))

    def step(self) -> float:
        """Seconds for the next optimizer step of every member (a new epoch after the last)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        idx = next(self.batches, None)
        if idx is None:
            self.batches = self.epoch_batches()
            idx = next(self.batches)
        h = self.x[idx]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            for j, (w, b) in enumerate(zip(self.weights, self.biases)):
                h = torch.baddbmm(b, h, w)
                h = h.relu() if j < len(self.weights) - 1 else h
        loss = F.cross_entropy(h.float().flatten(0, 1), self.y[idx].flatten(), reduction="none")
        self.opt.zero_grad(set_to_none=True)
        loss.view(self.k, -1).mean(1).sum().backward()
        self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


class PairedSteps(pl.Callback):
    """Interleaves the bare references with xentlab's training, step by step: after each of
    xentlab's steps one step of each reference, so on a shared machine every figure compared
    meets the same load. Per epoch: xentlab's seconds (its steps, data and hooks, from one
    bare step's end to its next step's end) and each reference's seconds over as many steps."""

    def __init__(self, references: dict[str, BareStacked]):
        self.references = references
        self.times: list[float] = []
        self.reference_times: dict[str, list[float]] = {name: [] for name in references}

    def on_train_epoch_start(self, trainer, pl_module):
        for reference in self.references.values():
            reference.batches = reference.epoch_batches()
        self._epoch, self._ref = 0.0, dict.fromkeys(self.references, 0.0)
        EpochTimer._sync(trainer)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        EpochTimer._sync(trainer)
        self._epoch += time.perf_counter() - self._t0
        for name, reference in self.references.items():
            self._ref[name] += reference.step()
        if batch_idx == trainer.num_training_batches - 1:
            self.times.append(self._epoch)
            for name, seconds in self._ref.items():
                self.reference_times[name].append(seconds)
        self._t0 = time.perf_counter()


def xentlab_path(batch_size: int, epochs: int, data_root: str, accelerator: str, logger: str,
                 store: str | None = None, extra: tuple[str, ...] = ()) -> list[float]:
    """(b)/(d)/(e) xentlab's own training path, timed by a callback."""
    overrides = [f"data.root={data_root}", f"data.batch_size={batch_size}", f"trainer.max_epochs={epochs}",
                 "trainer.progress_bar=false", "trainer.checkpoint=false", f"trainer.accelerator={accelerator}",
                 f"logger={logger}", *extra]
    if store:
        overrides.append(f"logger.tracking_uri={store}")
    timer = EpochTimer()
    from xentlab import train

    train.run(make_cfg(*overrides), output_dir=tempfile.mkdtemp(), callbacks=[timer])
    return timer.times


def dataloader_path(batch_size: int, epochs: int, data_root: str, accelerator: str, workers: int) -> list[float]:
    """(c) torchvision MNIST, per-item ToTensor/Normalize, DataLoader workers, same module."""
    from torch.utils.data import DataLoader, Dataset
    from torchvision import datasets, transforms

    from xentlab.module import Classifier, MemberSettings

    tfm = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    mnist = datasets.MNIST(data_root, train=True, download=False, transform=tfm)

    class Triples(Dataset):  # the module's batches are (x, labels, loss targets)
        def __len__(self):
            return 55000

        def __getitem__(self, i):
            x, y = mnist[i]
            return x, y, y

    cfg = make_cfg()
    torch.manual_seed(0)
    module = Classifier([models.build(cfg.model, (1, 28, 28), 10)],
                        [MemberSettings("sparse_cce", "softmax", lr=cfg.optimizer.lr)],
                        kind="multiclass", num_classes=10, optimizer="adam", check_every=50)
    loader = DataLoader(Triples(), batch_size=batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=accelerator != "cpu")
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=False, callbacks=[timer],
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=loader)
    return timer.times


def startup(data_root: str, store: str) -> dict[str, float]:
    """Seconds from launching ``python run.py`` to its first training step, and bare imports."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, pytorch_lightning, mlflow, hydra"], check=True)
    imports = time.perf_counter() - t0
    cmd = [sys.executable, str(ROOT / "run.py"), f"data.root={data_root}", "trainer.progress_bar=false",
           f"logger.tracking_uri={store}", f"hydra.run.dir={tempfile.mkdtemp()}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    first_step = float("nan")
    for line in proc.stdout:
        if "training started" in line:
            first_step = time.perf_counter() - t0
            break
    proc.kill()
    proc.wait()
    return {"imports_s": imports, "run_py_to_first_step_s": first_step, "beyond_imports_s": first_step - imports}


def cell(s: dict, fmt: str = "{:.3f}", scale: float = 1.0) -> str:
    """A repeated figure as median (min–max)."""
    return f"{fmt.format(scale * s['median'])} ({fmt.format(scale * s['min'])}–{fmt.format(scale * s['max'])})"


def markdown(result: dict) -> str:
    """The tables of docs/benchmarks.md: every figure as median (min–max) over the rounds."""
    cols = [("a_bare", "a bare"), ("b_xentlab", "b xentlab"), ("c_dataloader", "c DataLoader"),
            ("d_xentlab_mlflow", "d + MLflow"), ("e_seed_batched_per_model", f"e {result['seeds']} seeds, per model")]
    ratios = [("b/a", "b/a", "{:.2f}", 1), ("b-a ms/step", "(b − a) ms/step", "{:.2f}", 1),
              ("c/b", "c/b", "{:.1f}", 1),
              ("d/b-1", "d/b − 1", "{:+.1f}%", 100), ("mlflow_write_share", "MLflow write share", "{:.1f}%", 100),
              ("b/e", "b/e", "{:.2f}", 1)]
    first = next(iter(result["batches"].values()))
    cols = [c for c in cols if c[0] in first]
    ratios = [r for r in ratios if r[0] in first["ratios"]]
    lines = ["| batch | " + " | ".join(name for _, name in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for bs, r in result["batches"].items():
        lines.append(f"| {bs} | " + " | ".join(cell(r[k]) for k, _ in cols) + " |")
    lines += ["", "| batch | " + " | ".join(name for _, name, _, _ in ratios) + " |", "|---" * (len(ratios) + 1) + "|"]
    for bs, r in result["batches"].items():
        lines.append(f"| {bs} | " + " | ".join(cell(r["ratios"][k], f, sc) for k, _, f, sc in ratios) + " |")
    if "sparse_vs_one_hot" in result:
        lines += ["", "| classes | sparse_cce ms/step | cce ms/step | cce/sparse | noise band | sparse targets | "
                  "one-hot targets |", "|---|---|---|---|---|---|---|"]
        for row in result["sparse_vs_one_hot"]:
            lines.append(f"| {row['classes']:,} | {cell(row['sparse_cce_ms_per_step'], '{:.2f}')} | "
                         f"{cell(row['cce_ms_per_step'], '{:.2f}')} | {cell(row['cce/sparse'], '{:.2f}')} | "
                         f"±{100 * row['noise_band']:.1f}% | {row['sparse_cce_target_mib'] * 1024:.0f} KiB | "
                         f"{row['cce_target_mib']:.2f} MiB |")
    return "\n".join(lines)


class StepTimer(pl.Callback):
    """Seconds inside training, validation and test steps (batch start to batch end)."""

    def __init__(self):
        self.inside = 0.0

    def _start(self, *args):
        self._t0 = time.perf_counter()

    def _end(self, *args):
        self.inside += time.perf_counter() - self._t0

    on_train_batch_start = on_validation_batch_start = on_test_batch_start = _start
    on_train_batch_end = on_validation_batch_end = on_test_batch_end = _end


def job_overhead(data_root: str, store: str, jobs: int) -> dict[str, dict]:
    """A sequential sweep in one process, as Hydra's basic launcher runs it: ``jobs`` 1-epoch
    jobs on ``data.subset=5000`` with MLflow; seconds per job outside its steps."""
    from xentlab import train

    walls, overheads = [], []
    for j in range(jobs):
        cfg = make_cfg(f"data.root={data_root}", "data.subset=5000", "trainer.max_epochs=1", f"seed={j}",
                       "trainer.progress_bar=false", "trainer.checkpoint=false", f"logger.tracking_uri={store}")
        timer = StepTimer()
        t0 = time.perf_counter()
        train.run(cfg, output_dir=tempfile.mkdtemp(), callbacks=[timer])
        walls.append(time.perf_counter() - t0)
        overheads.append(walls[-1] - timer.inside)
    # the first job pays one-off costs (data read, store created); a sweep's later jobs do not
    return {"first_job_s": {"wall": walls[0], "outside_steps": overheads[0]},
            "later_jobs_wall_s": spread(walls[1:]), "later_jobs_outside_steps_s": spread(overheads[1:])}


def sweep_wall(overrides: tuple[str, ...], launcher: tuple[str, ...], data_root: str, tmp: str) -> dict[str, float]:
    """Wall seconds of ``python run.py -m <overrides> <launcher>``, start-up included, and its
    own ``first training step after N.N s`` (seconds since its process started)."""
    out = tempfile.mkdtemp(dir=tmp)
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", *overrides, *launcher, f"data.root={data_root}",
           f"logger.tracking_uri=sqlite:///{out}/mlflow.db", f"hydra.sweep.dir={out}/multirun",
           "trainer.progress_bar=false"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or " 0 failed" not in proc.stdout:
        raise RuntimeError(f"sweep {' '.join(cmd)} failed:\n{proc.stdout[-4000:]}")
    first = re.search(r"first training step after ([0-9.]+) s", proc.stdout)
    return {"wall_s": wall, "first_step_s": float(first.group(1)) if first else float("nan")}


SWEEPS = {  # name: the sweep's overrides, and the launchers it is timed on
    "acceptance grid (16 jobs, data.subset=5000, 2 epochs)": (
        ("task=mnist", "activation=sigmoid,softmax", "loss=bce,cce,sparse_cce,mse", "seed=0,1", "data.subset=5000",
         "trainer.max_epochs=2", "trainer.checkpoint=false"), ("default", "joblib (2 jobs)", "batched")),
    "experiment=loss_grid_mnist": (("experiment=loss_grid_mnist",), ("default", "batched")),
    # the preset trains to convergence (tens of minutes); timed here at a fixed budget of 1 epoch on 10,000 images
    "experiment=fair_grid_mnist, 1 epoch, data.subset=10000": (
        ("experiment=fair_grid_mnist", "trainer.max_epochs=1", "data.subset=10000"), ("default", "batched")),
}
LAUNCHERS = {"default": ("hydra/launcher=basic",),
             "joblib (2 jobs)": ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
             "batched": ("hydra/launcher=batched",)}


def member_grid(data_root: str, accelerator: str, precision: str, k: int, epochs: int, *extra: str) -> list:
    """The runs of a K-member model: a grid of activation × loss × lr × seeds cells on
    ``data.subset=5000``, ordered as the batched launcher orders a model's members."""
    from xentlab import batching, train

    cells = [("softmax", "sparse_cce"), ("softmax", "mse"), ("sigmoid", "bce"), ("softmax", "cce")]
    lrs = (3e-4, 1e-3, 3e-3, 1e-2)
    parts = []
    for i in range(k):
        activation, loss = cells[i % len(cells)]
        cfg = make_cfg(f"data.root={data_root}", "data.subset=5000", f"trainer.max_epochs={epochs}",
                       f"trainer.accelerator={accelerator}", f"trainer.precision={precision}",
                       "trainer.progress_bar=false", "trainer.checkpoint=false", "logger=none",
                       f"activation={activation}", f"loss={loss}", f"optimizer.lr={lrs[(i // len(cells)) % len(lrs)]}",
                       f"seed={i}", *extra)
        parts += train.member_runs(cfg, train.plan(cfg))
    (model,) = batching.groups([(None, part) for part in parts], max_members=k)
    return [part for _, part in model]


class StopAtStart(pl.Callback):
    """Stops ``members`` before the first step, as patience would have: the model drops them
    (``Classifier.compact``) and trains the rest."""

    def __init__(self, members: list[int]):
        self.members = members

    def on_train_start(self, trainer, pl_module):
        pl_module.stopped.update(self.members)


def compaction_steps(data_root: str, accelerator: str, k: int, stopped: list[int], rounds: int,
                     epochs: int = 3) -> dict[str, dict]:
    """Step time of a K-member model (fp32, :func:`member_grid`) with ``s`` of its members stopped
    (spread over its parameter blocks and losses), against the bare stacked loop of the K - s
    members left, interleaved step by step (:class:`PairedSteps`); rounds interleave the values of
    ``s``. A round's figure is the median over ``epochs`` timed epochs after a warm-up epoch."""
    from xentlab import train
    from xentlab.tracking.lifecycle import NoTracking

    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    cfg = make_cfg(f"data.root={data_root}", "data.subset=5000")
    split = mnist_task.build(cfg.task, cfg.data).train
    steps = math.ceil(len(split) / 128)
    per: dict[int, list[dict[str, float]]] = {s: [] for s in stopped}
    for r in range(rounds):
        for s in stopped:
            print(f"compaction: K = {k}, {s} stopped, round {r + 1}/{rounds}", flush=True)
            spread_out = [i for i in range(k) if i * s // k != (i + 1) * s // k]  # s members, evenly spaced
            timer = PairedSteps({"bare": BareStacked(split.x, split.y, k - s, 128, device)})
            # patience set (never reached) so a member stopped at the start counts as stopped by it
            train.train(member_grid(data_root, accelerator, "32-true", k, epochs + 1, "trainer.patience=100"),
                        NoTracking(),
                        callbacks=[StopAtStart(spread_out), timer])
            mine, bare = timer.times[1:], timer.reference_times["bare"][1:]
            per[s].append({"xentlab_ms": 1000 * median(mine) / steps, "bare_ms": 1000 * median(bare) / steps,
                           "xentlab/bare": median(m / b for m, b in zip(mine, bare))})
    out = {}
    for s in stopped:
        out[str(s)] = {"live": k - s, **{key: spread([one[key] for one in per[s]])
                                         for key in ("xentlab_ms", "bare_ms", "xentlab/bare")}}
        if stopped[0] == 0:
            out[str(s)]["of_none_stopped"] = spread([one["xentlab_ms"] / none["xentlab_ms"]
                                                     for one, none in zip(per[s], per[0])])
    return out


def members_throughput(data_root: str, accelerator: str, sizes: list[int], rounds: int,
                       precisions: tuple[str, ...] = ("32-true", "bf16-mixed"), epochs: int = 3) -> dict[str, dict]:
    """Training samples per second of a K-member model, all members together (a grid of
    activation × loss × lr × seeds cells, ``data.subset=5000``, ordered as the batched
    launcher orders a model's members), against the bare stacked loop with the same K and
    precision (:class:`BareStacked`), interleaved step by step (:class:`PairedSteps`) with the
    bare loop in its precision and, for any other than the first (fp32), in the first too;
    ``epochs`` timed epochs after one warm-up epoch; ratios are taken within an epoch, a round's
    figure is the median over its epochs. Speed-ups over fp32 compare the two calls of a round,
    each normalised by the bare fp32 steps that ran beside it."""
    from xentlab import train
    from xentlab.tracking.lifecycle import NoTracking

    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    cfg = make_cfg(f"data.root={data_root}", "data.subset=5000")
    split = mnist_task.build(cfg.task, cfg.data).train
    n, first = len(split), precisions[0]
    # (precision, K) -> per round: medians over the pairs of xentlab / own bare, xentlab / bare fp32 and
    # bare fp32 / own bare (time ratios), and the seconds an epoch of xentlab and of its bare loop took
    rounds_of: dict[tuple[str, int], list[dict[str, float]]] = {}
    for r in range(rounds):
        for precision in precisions:
            for k in sizes:
                print(f"members: K = {k}, {precision}, round {r + 1}/{rounds}", flush=True)
                timer = PairedSteps({p: BareStacked(split.x, split.y, k, 128, device, p)
                                     for p in dict.fromkeys((precision, first))})
                train.train(member_grid(data_root, accelerator, precision, k, epochs + 1), NoTracking(),
                            callbacks=[timer])
                mine = timer.times[1:]
                own, fp32 = timer.reference_times[precision][1:], timer.reference_times[first][1:]
                rounds_of.setdefault((precision, k), []).append({
                    "xentlab_s": median(mine), "bare_s": median(own),
                    "xentlab/own": median(m / b for m, b in zip(mine, own)),
                    "xentlab/fp32": median(m / b for m, b in zip(mine, fp32)),
                    "fp32/own": median(b32 / b for b32, b in zip(fp32, own))})
    out: dict[str, dict] = {}
    for precision in precisions:
        rows = out.setdefault(precision, {})
        for k in sizes:
            runs = rounds_of[(precision, k)]
            rows[str(k)] = {"xentlab_samples_per_s": spread([n * k / one["xentlab_s"] for one in runs]),
                            "bare_samples_per_s": spread([n * k / one["bare_s"] for one in runs]),
                            "xentlab/bare": spread([1 / one["xentlab/own"] for one in runs])}
            if precision != first:
                base = rounds_of[(first, k)]
                rows[str(k)]["speedup_over_" + first] = spread([b["xentlab/fp32"] / one["xentlab/fp32"]
                                                                for b, one in zip(base, runs)])
                rows[str(k)]["bare_speedup_over_" + first] = spread([one["fp32/own"] for one in runs])
    return out


def eval_epoch(data_root: str, k: int, rounds: int, hidden: tuple[int, ...] = (256, 128)) -> dict[str, dict]:
    """Seconds of one validation epoch of a K-member model (members cycling through sparse_cce/softmax,
    bce/sigmoid, mse/softmax and mse/none; ``select_on=acc``) on MNIST's test images, one thread,
    ``logger=False``: ``trainer.validate`` whole, its epoch end, and the forward pass alone."""
    from torch import nn

    from xentlab import losses
    from xentlab.data import TensorBatches
    from xentlab.module import Classifier, MemberSettings
    from xentlab.tasks.idx_files import MNIST

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x, y = MNIST.load(data_root, train=False)
    x = (x.float() / 255).unsqueeze(1)
    kinds = [("sparse_cce", "softmax"), ("bce", "sigmoid"), ("mse", "softmax"), ("mse", "none")]
    torch.manual_seed(0)
    sizes = [784, *hidden, 10]
    nets = [nn.Sequential(nn.Flatten(),
                          *[m for i, o in zip(sizes, sizes[1:]) for m in (nn.Linear(i, o), nn.ReLU())][:-1])
            for _ in range(k)]
    module = Classifier(nets, [MemberSettings(*kinds[i % len(kinds)]) for i in range(k)], kind="multiclass",
                        num_classes=10, optimizer="adam", check_every=50, select_on="acc", higher=True)
    batches = TensorBatches((x, y, *(losses.encode_targets(loss, y, 10) for loss in module.target_losses)), 1000)
    ends: list[float] = []
    epoch_end = module._eval_epoch_end

    def timed(stage: str) -> None:
        t0 = time.perf_counter()
        epoch_end(stage)
        ends.append(time.perf_counter() - t0)

    module._eval_epoch_end = timed
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    walls, forward = [], []
    for _ in range(rounds + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        trainer.validate(module, dataloaders=batches, verbose=False)
        walls.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.no_grad():
            for xb, *_ in batches:
                module(xb)
        forward.append(time.perf_counter() - t0)
    torch.set_num_threads(threads)
    return {"validate_s": spread(walls[1:]), "epoch_end_s": spread(ends[1:]), "forward_s": spread(forward[1:]),
            "keys": len(trainer.callback_metrics)}


def eval_markdown(result: dict) -> str:
    lines = ["| members K | mlp | validation epoch s | of which its end s | forward pass alone s | keys logged |",
             "|---|---|---|---|---|---|"]
    for name, m in result.items():
        k, hidden = name.split(" ", 1)
        lines.append(f"| {k} | {hidden} | {cell(m['validate_s'])} | {cell(m['epoch_end_s'])} | {cell(m['forward_s'])} "
                     f"| {m['keys']} |")
    return "\n".join(lines)


def sweep_mode(a) -> dict:
    """``--mode sweep``: the same sweeps under each launcher, per-job overhead, K-member throughput."""
    device = "gpu" if torch.cuda.is_available() else "cpu"
    tmp = tempfile.mkdtemp()
    result = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                          "device": (torch.cuda.get_device_name(0) if device == "gpu"
                                     else platform.processor() or "cpu")},
              "rounds": a.rounds, "sweeps": {}}
    for name, (overrides, launchers) in SWEEPS.items():
        part = {"loss_grid": "preset", "fair_grid": "fair_grid"}.get(name[len("experiment="):][:9], "launchers")
        if part in a.skip:
            continue
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in launchers}
        for r in range(a.rounds):  # launchers interleaved within a round
            for launcher in launchers:
                print(f"{name}: {launcher}, round {r + 1}/{a.rounds}", flush=True)
                runs[launcher].append(sweep_wall(overrides, LAUNCHERS[launcher], a.data_root, tmp))
        walls = {k: [one["wall_s"] for one in v] for k, v in runs.items()}
        result["sweeps"][name] = {
            "command": "python run.py -m " + " ".join(overrides), "rounds": a.rounds,
            "wall_s": {k: spread(v) for k, v in walls.items()},
            "first_step_s": {k: spread([one["first_step_s"] for one in v]) for k, v in runs.items()},
            "speedup": {k: spread([d / w for d, w in zip(walls["default"], v)])
                        for k, v in walls.items() if k != "default"}}
        a.json.write_text(json.dumps(result, indent=2))  # each part as it ends: a later one may fail
    if "overhead" not in a.skip:
        print("per-job overhead of a sequential sweep", flush=True)
        result["job_overhead"] = job_overhead(a.data_root, f"sqlite:///{tmp}/overhead.db", jobs=a.rounds + 3)
    if "members" not in a.skip:
        result["members"] = members_throughput(a.data_root, device, a.members, a.rounds, tuple(a.precisions))
        a.json.write_text(json.dumps(result, indent=2))
    if "compaction" not in a.skip:
        result["compaction"] = compaction_steps(a.data_root, device, a.compact_k, a.stopped, a.rounds)
    return result


def patience_mode(a) -> dict:
    """``--mode patience``: the compute early stopping saves, on a grid of small real data that
    overfits early (``experiment=fair_grid_breast_cancer``, 40 epochs), with and without
    ``trainer.patience``, in interleaved rounds."""
    path = ROOT / "data" / "examples" / "breast_cancer.npz"
    if not path.is_file():
        from xentlab.tasks import examples

        examples.write(path.parent)
    base = ("experiment=fair_grid_breast_cancer", f"task.path={path}")
    variants = {"all 40 epochs": (), f"trainer.patience={a.patience}": (f"trainer.patience={a.patience}",)}
    tmp = tempfile.mkdtemp()
    walls: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(a.rounds):
        for name, extra in variants.items():
            print(f"patience: {name}, round {r + 1}/{a.rounds}", flush=True)
            walls[name].append(sweep_wall((*base, *extra), (), a.data_root, tmp)["wall_s"])
    full, stopped = walls.values()
    return {"command": "python run.py -m " + " ".join(base[:1]), "rounds": a.rounds,
            "wall_s": {k: spread(v) for k, v in walls.items()},
            "saved_share": spread([1 - s / f for f, s in zip(full, stopped)])}


def patience_markdown(result: dict) -> str:
    lines = ["| variant | wall s |", "|---|---|"]
    lines += [f"| {name} | {cell(w, '{:.1f}')} |" for name, w in result["wall_s"].items()]
    return "\n".join(lines + ["", f"saved: {cell(result['saved_share'], '{:.0%}')} of the wall time "
                                   f"(`{result['command']}`, {result['rounds']} rounds)"])


def sweep_markdown(result: dict) -> str:
    lines = []
    if result["sweeps"]:
        lines += ["| sweep | launcher | wall s | to first step s | default / launcher |", "|---|---|---|---|---|"]
    for name, s in result["sweeps"].items():
        for launcher, w in s["wall_s"].items():
            ratio = cell(s["speedup"][launcher], "{:.2f}") if launcher in s["speedup"] else "1"
            lines.append(f"| {name} | {launcher} | {cell(w, '{:.1f}')} | {cell(s['first_step_s'][launcher], '{:.1f}')} "
                         f"| {ratio} |")
    if "job_overhead" in result:
        o = result["job_overhead"]
        lines += ["", "Sequential sweep, 1-epoch jobs on data.subset=5000 with MLflow: first job "
                  f"{o['first_job_s']['wall']:.2f} s "
                  f"({o['first_job_s']['outside_steps']:.2f} s outside its steps); later jobs "
                  f"{cell(o['later_jobs_wall_s'], '{:.2f}')} s, of which "
                  f"{cell(o['later_jobs_outside_steps_s'], '{:.2f}')} s "
                  "outside their training, validation and test steps."]
    for precision, rows in result.get("members", {}).items():
        speedup = next((key for key in next(iter(rows.values())) if key.startswith("speedup_over_")), None)
        head = "| members K | bare stacked loop samples/s | xentlab samples/s | xentlab / bare |"
        if speedup:
            head += f" xentlab speed-up over {speedup.removeprefix('speedup_over_')} | bare speed-up |"
        lines += ["", f"Training samples per second, all members together, {precision}:", "", head,
                  "|---" * head.count(" | ") + "|---|"]
        for k, m in rows.items():
            row = (f"| {k} | {cell(m['bare_samples_per_s'], '{:,.0f}')} | {cell(m['xentlab_samples_per_s'], '{:,.0f}')}"
                   f" | {cell(m['xentlab/bare'], '{:.2f}')} |")
            if speedup:
                row += f" {cell(m[speedup], '{:.2f}')} | {cell(m['bare_' + speedup], '{:.2f}')} |"
            lines.append(row)
    if "compaction" in result:
        lines += ["", "Stopped members stop costing: step time of a model of members with some stopped, next to the "
                  "bare stacked loop of the members left (32-true):", "",
                  "| members stopped | members left | bare stacked loop ms/step | xentlab ms/step | xentlab / bare "
                  "| xentlab step time / none stopped |", "|---|---|---|---|---|---|"]
        for s, m in result["compaction"].items():
            share = cell(m["of_none_stopped"], "{:.2f}") if "of_none_stopped" in m else ""
            lines.append(f"| {s} | {m['live']} | {cell(m['bare_ms'], '{:.1f}')} | {cell(m['xentlab_ms'], '{:.1f}')} "
                         f"| {cell(m['xentlab/bare'], '{:.2f}')} | {share} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["training", "sweep", "patience", "eval"], default="training",
                    help="training: one run's path against a bare loop; sweep: launchers, per-job overhead, "
                         "members; patience: the compute early stopping saves; eval: a K-member validation epoch")
    ap.add_argument("--patience", type=int, default=5, help="patience mode: trainer.patience")
    ap.add_argument("--members", type=int, nargs="+", default=[1, 8, 32, 64], help="sweep and eval modes: K per model")
    ap.add_argument("--compact-k", type=int, default=32, help="sweep mode: K of the model whose members stop")
    ap.add_argument("--stopped", type=int, nargs="+", default=[0, 8, 16, 24],
                    help="sweep mode: how many of its members are stopped (compaction row)")
    ap.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"],
                    help="sweep mode: trainer.precision of the K-member rows (speed-ups over the first)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--epochs", type=int, default=1, help="timed epochs per call (one more runs as warm-up)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every variant")
    ap.add_argument("--seeds", type=int, default=8, help="K for the seed-batched variant (e)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for (c)")
    ap.add_argument("--data-root", default=str(ROOT / "data"))
    ap.add_argument("--json", type=Path, default=Path("bench.json"))
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["dataloader", "mlflow", "startup", "sparse", "seeds", "preset", "launchers", "fair_grid",
                             "overhead", "members", "compaction"],
                    help="parts to leave out; sweep mode: preset (loss_grid_mnist), launchers (the acceptance "
                         "grid), fair_grid (experiment=fair_grid_mnist, minutes), overhead (per-job cost), members "
                         "(K-member throughput), compaction (step time with members stopped)")
    a = ap.parse_args(argv)
    if a.mode == "eval":
        result = {f"{k} {list(hidden)}": eval_epoch(a.data_root, k, a.rounds, hidden)
                  for hidden in ((256, 128), (16, 8)) for k in a.members}
        print("\n" + eval_markdown(result))
        a.json.write_text(json.dumps(result, indent=2))
        print(f"written {a.json}")
        return result
    if a.mode in ("sweep", "patience"):
        result = sweep_mode(a) if a.mode == "sweep" else patience_mode(a)
        print("\n" + (sweep_markdown if a.mode == "sweep" else patience_markdown)(result))
        a.json.write_text(json.dumps(result, indent=2))
        print(f"written {a.json}")
        return result
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    cfg = make_cfg(f"data.root={a.data_root}")
    splits = mnist_task.build(cfg.task, cfg.data)
    x, y = splits.train.x, splits.train.y
    n = len(x)
    tmp = tempfile.mkdtemp()
    result = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "pl": pl.__version__,
                          "device": (torch.cuda.get_device_name(0) if device.type == "cuda"
                                     else platform.processor() or "cpu"),
                          "threads": torch.get_num_threads(), "cpus": os.cpu_count()},
              "n_train": n, "epochs": a.epochs, "rounds": a.rounds, "seeds": a.seeds, "batches": {}}
    seeds = "[" + ",".join(map(str, range(a.seeds))) + "]"
    for bs in a.batch_sizes:
        # Every variant once per round, rounds interleaved, so that load from elsewhere hits them
        # alike; each call's first epoch is a warm-up and is not timed. A round's figure is the
        # median of its timed epochs; ratios are taken within a round.
        t: dict[str, list[float]] = {}
        share: list[float] = []
        for r in range(a.rounds):
            print(f"batch {bs}, round {r + 1}/{a.rounds}", flush=True)
            t.setdefault("a_bare", []).append(median(bare_loop(x, y, bs, a.epochs + 1, device, seed=r)[1:]))
            t.setdefault("b_xentlab", []).append(median(xentlab_path(
                bs, a.epochs + 1, a.data_root, accelerator, "none", extra=(f"seed={r}",))[1:]))
            if "dataloader" not in a.skip:
                t.setdefault("c_dataloader", []).append(median(
                    dataloader_path(bs, a.epochs + 1, a.data_root, accelerator, a.workers)[1:]))
            if "mlflow" not in a.skip:
                timer = tracking.WriteTimer()
                epochs = xentlab_path(bs, a.epochs + 1, a.data_root, accelerator, "mlflow",
                                      f"sqlite:///{tmp}/bench-{bs}.db", extra=(f"seed={r}",))
                # time inside MLflow's writes (end-of-run writes included) / training time of that run
                share.append(timer.close() / sum(epochs))
                t.setdefault("d_xentlab_mlflow", []).append(median(epochs[1:]))
            if "seeds" not in a.skip:
                t.setdefault("e_seed_batched_per_model", []).append(median(xentlab_path(
                    bs, a.epochs + 1, a.data_root, accelerator, "none", extra=(f"seeds={seeds}",))[1:]) / a.seeds)
        res = {k: {**spread(v), "samples_per_s": n / median(v)} for k, v in t.items()}
        a_, b_ = t["a_bare"], t["b_xentlab"]
        steps = math.ceil(n / bs)
        per_round = {"b/a": [b / x_ for b, x_ in zip(b_, a_)],
                     "b-a ms/step": [1000 * (b - x_) / steps for b, x_ in zip(b_, a_)]}
        if "c_dataloader" in t:
            per_round["c/b"] = [c / b for c, b in zip(t["c_dataloader"], b_)]
        if "d_xentlab_mlflow" in t:
            per_round["d/b-1"] = [d / b - 1 for d, b in zip(t["d_xentlab_mlflow"], b_)]
            per_round["mlflow_write_share"] = share
        if "e_seed_batched_per_model" in t:
            per_round["b/e"] = [b / e for b, e in zip(b_, t["e_seed_batched_per_model"])]
        res["ratios"] = {k: spread(v) for k, v in per_round.items()}
        result["batches"][str(bs)] = res
    if "startup" not in a.skip:
        runs = [startup(a.data_root, f"sqlite:///{tmp}/startup-{r}.db") for r in range(a.rounds)]
        result["startup"] = {k: spread([s[k] for s in runs]) for k in runs[0]}
    if "sparse" not in a.skip:
        result["sparse_vs_one_hot"] = sparse_vs_one_hot(device, rounds=a.rounds)

    print(f"\nxentlab benchmark on {result['machine']['device']} ({device.type}, {result['machine']['threads']} "
          f"threads), MNIST {n} examples; seconds per epoch, median (min–max) of {a.rounds} interleaved rounds")
    print("b/e: speed-up per model of the seeds batched over one run at a time; MLflow write share: time inside "
          "MLflow writes / training time of the same run (d/b − 1 is the noisier difference)")
    if "startup" in result:
        s = result["startup"]
        print(f"start-up: run.py to first step {cell(s['run_py_to_first_step_s'], '{:.2f}')} s; bare imports "
              f"{cell(s['imports_s'], '{:.2f}')} s; beyond imports {cell(s['beyond_imports_s'], '{:.2f}')} s")
    for row in result.get("sparse_vs_one_hot", []):
        if "cce_peak_mib" in row:
            print(f"classes {row['classes']}: peak memory sparse {row['sparse_cce_peak_mib']:.2f} MiB, "
                  f"cce {row['cce_peak_mib']:.2f} MiB")
    print("\n" + markdown(result))
    a.json.write_text(json.dumps(result, indent=2))
    print(f"written {a.json}")
    return result

