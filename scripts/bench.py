"""Benchmark: xentlab's training path against a bare PyTorch loop, in one process, one run.

    python scripts/bench.py                       # CPU here, the GPU where there is one
    python scripts/bench.py --batch-sizes 128 512 --epochs 3 --json bench.json

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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from xentlab import config as xconfig  # noqa: E402
from xentlab import models, tasks  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from costs import sparse_vs_one_hot  # noqa: E402

xconfig.register()


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
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
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


class LogBatchTimer:
    """Adds up the wall time spent in MLflow's ``log_batch`` (all of xentlab's metric writes)."""

    def __init__(self):
        from mlflow import MlflowClient

        self.cls, self.original, self.seconds = MlflowClient, MlflowClient.log_batch, 0.0
        timer = self

        def timed(client, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return timer.original(client, *args, **kwargs)
            finally:
                timer.seconds += time.perf_counter() - t0

        self.cls.log_batch = timed

    def close(self) -> float:
        self.cls.log_batch = self.original
        return self.seconds


def dataloader_path(batch_size: int, epochs: int, data_root: str, accelerator: str, workers: int) -> list[float]:
    """(c) torchvision MNIST, per-item ToTensor/Normalize, DataLoader workers, same module."""
    from torch.utils.data import DataLoader, Dataset
    from torchvision import datasets, transforms

    from xentlab.module import Classifier

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
    module = Classifier(models.build(cfg.model, (1, 28, 28), 10), kind="multiclass", num_classes=10,
                        loss="sparse_cce", activation="softmax", label_smoothing=0.0, numerics="stable",
                        optimizer=cfg.optimizer, check_every=50)
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


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--epochs", type=int, default=1, help="timed epochs per call (one more runs as warm-up)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of (a), (b), (d)")
    ap.add_argument("--seeds", type=int, default=8, help="K for the seed-batched variant (e)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for (c)")
    ap.add_argument("--data-root", default=str(ROOT / "data"))
    ap.add_argument("--json", type=Path, default=Path("bench.json"))
    ap.add_argument("--skip", nargs="*", default=[], choices=["dataloader", "mlflow", "startup", "sparse", "seeds"])
    a = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    splits = tasks.build_mnist(None, make_cfg(f"data.root={a.data_root}").data)
    x, y = splits.train.x, splits.train.y
    n = len(x)
    tmp = tempfile.mkdtemp()
    result = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "pl": pl.__version__,
                          "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
                          "threads": torch.get_num_threads(), "cpus": os.cpu_count()},
              "n_train": n, "epochs": a.epochs, "rounds": a.rounds, "seeds": a.seeds, "batches": {}}
    def summary(times, per=1):
        best = min(times) / per  # best of the timed epochs: the least disturbed by other load
        return {"s_per_epoch": best, "samples_per_s": n / best, "all": times}

    for bs in a.batch_sizes:
        # Interleave the variants round by round so that load from elsewhere hits them alike;
        # each call's first epoch is a warm-up and is not timed.
        t: dict[str, list[float]] = {"a_bare": [], "b_xentlab": [], "d_xentlab_mlflow": []}
        mlflow_seconds: list[float] = []
        mlflow_train: list[float] = []
        for r in range(a.rounds):
            t["a_bare"] += bare_loop(x, y, bs, a.epochs + 1, device, seed=r)[1:]
            t["b_xentlab"] += xentlab_path(bs, a.epochs + 1, a.data_root, accelerator, "none", extra=(f"seed={r}",))[1:]
            if "mlflow" not in a.skip:
                timer = LogBatchTimer()
                epochs = xentlab_path(bs, a.epochs + 1, a.data_root, accelerator, "mlflow",
                                      f"sqlite:///{tmp}/bench-{bs}.db", extra=(f"seed={r}",))
                mlflow_seconds.append(timer.close())
                mlflow_train.append(sum(epochs))
                t["d_xentlab_mlflow"] += epochs[1:]
        res = {k: summary(v) for k, v in t.items() if v}
        if "dataloader" not in a.skip:
            res["c_dataloader"] = summary(dataloader_path(bs, a.epochs + 1, a.data_root, accelerator, a.workers)[1:])
        if "seeds" not in a.skip:
            seeds = "[" + ",".join(map(str, range(a.seeds))) + "]"
            res["e_seed_batched_per_model"] = summary(
                xentlab_path(bs, a.epochs + 1, a.data_root, accelerator, "none", extra=(f"seeds={seeds}",))[1:],
                per=a.seeds)
        b = res["b_xentlab"]["s_per_epoch"]
        res["ratios"] = {"b/a": b / res["a_bare"]["s_per_epoch"]}
        if "c_dataloader" in res:
            res["ratios"]["c/b"] = res["c_dataloader"]["s_per_epoch"] / b
        if "d_xentlab_mlflow" in res:
            res["ratios"]["mlflow_overhead"] = res["d_xentlab_mlflow"]["s_per_epoch"] / b - 1
            # the direct measure: time inside MLflow writes over the training time of those runs
            # (it includes the end-of-run writes: test metrics, timing)
            res["ratios"]["mlflow_write_share"] = sum(mlflow_seconds) / sum(mlflow_train)
        if "e_seed_batched_per_model" in res:
            res["ratios"]["seed_batched_speedup"] = b / res["e_seed_batched_per_model"]["s_per_epoch"]
        result["batches"][str(bs)] = res
    if "startup" not in a.skip:
        result["startup"] = startup(a.data_root, f"sqlite:///{tmp}/startup.db")
    if "sparse" not in a.skip:
        result["sparse_vs_one_hot"] = sparse_vs_one_hot(device)

    print(f"\nxentlab benchmark on {result['machine']['device']} ({device.type}, {result['machine']['threads']} threads), "
          f"MNIST {n} examples; seconds per epoch, best of {a.rounds} interleaved rounds x {a.epochs} epoch(s)")
    print(f"{'batch':>6} {'a bare':>8} {'b xentlab':>10} {'c DataLoader':>13} {'d +mlflow':>10} {'e K-seed/model':>15} "
          f"{'b/a':>6} {'c/b':>6} {'d/b-1':>7} {'mlflow**':>8} {'b/e*':>6}")
    for bs, r in result["batches"].items():
        g = lambda k: f"{r[k]['s_per_epoch']:.3f}" if k in r else "-"  # noqa: E731
        q = r["ratios"]
        print(f"{bs:>6} {g('a_bare'):>8} {g('b_xentlab'):>10} {g('c_dataloader'):>13} {g('d_xentlab_mlflow'):>10} "
              f"{g('e_seed_batched_per_model'):>15} {q['b/a']:>6.2f} {q.get('c/b', float('nan')):>6.2f} "
              f"{100 * q.get('mlflow_overhead', float('nan')):>6.1f}% {100 * q.get('mlflow_write_share', float('nan')):>7.1f}% "
              f"{q.get('seed_batched_speedup', float('nan')):>6.2f}")
    print(f"* b/e: the speed-up per model of {a.seeds} seeds batched over one xentlab run at a time")
    print("** time spent inside MLflow writes / training time of the same runs (d/b-1 is the noisier difference)")
    if "startup" in result:
        s = result["startup"]
        print(f"start-up: run.py to first step {s['run_py_to_first_step_s']:.2f} s; bare imports {s['imports_s']:.2f} s; "
              f"beyond imports {s['beyond_imports_s']:.2f} s")
    for row in result.get("sparse_vs_one_hot", []):
        mem = "peak_mib" if device.type == "cuda" else "target_mib"
        print(f"classes {row['classes']:>6}: sparse_cce {row['sparse_cce_ms_per_step']:.2f} ms/step, "
              f"cce {row['cce_ms_per_step']:.2f} ms/step; {mem}: sparse {row[f'sparse_cce_{mem}']:.3f}, "
              f"cce {row[f'cce_{mem}']:.3f}")
    a.json.write_text(json.dumps(result, indent=2))
    print(f"written {a.json}")
    return result


if __name__ == "__main__":
    main()
