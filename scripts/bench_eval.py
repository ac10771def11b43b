"""Time a K-member mnist model's validation epoch (10k test images, eval batch 1000) on CPU, one thread.

usage: python scripts/bench_eval.py K [repeats] [hidden width, default 256: mlp's [256, 128]], from a checkout
with data/; prints the medians of trainer.validate, of _eval_epoch_end and of the forward pass alone."""
import statistics
import sys
import time
import warnings

import pytorch_lightning as pl
import torch
from torch import nn

from xentlab import losses
from xentlab.data import TensorBatches
from xentlab.module import Classifier, MemberSettings
from xentlab.tasks.idx_files import MNIST

warnings.filterwarnings("ignore")
torch.set_num_threads(1)
k, repeats = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 5
x, y = MNIST.load("data", train=False)
x = (x.float() / 255).unsqueeze(1)
kinds = [("sparse_cce", "softmax"), ("bce", "sigmoid"), ("mse", "softmax"), ("mse", "none")]
settings = [MemberSettings(*kinds[i % len(kinds)], lr=1e-3) for i in range(k)]
torch.manual_seed(0)
w = int(sys.argv[3]) if len(sys.argv) > 3 else 256  # hidden width: 256 is mlp's default ([256, 128])
nets = [nn.Sequential(nn.Flatten(), nn.Linear(784, w), nn.ReLU(), nn.Linear(w, w // 2), nn.ReLU(),
                      nn.Linear(w // 2, 10)) for _ in range(k)]
module = Classifier(nets, settings, kind="multiclass", num_classes=10, optimizer="adam", check_every=50,
                    select_on="acc", higher=True)
targets = tuple(losses.encode_targets(loss, y, 10) for loss in module.target_losses)
batches = TensorBatches((x, y, *targets), 1000)
ends = []
original = module._eval_epoch_end


def timed(stage):
    t0 = time.perf_counter()
    original(stage)
    ends.append(time.perf_counter() - t0)


module._eval_epoch_end = timed
trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False)
walls = []
for _ in range(repeats + 1):
    t0 = time.perf_counter()
    trainer.validate(module, dataloaders=batches, verbose=False)
    walls.append(time.perf_counter() - t0)
walls, ends = walls[1:], ends[1:]  # the first is a warm-up
forward = []
with torch.no_grad():
    for _ in range(repeats):
        t0 = time.perf_counter()
        for xb, *_ in batches:
            module(xb)
        forward.append(time.perf_counter() - t0)
print(f"K={k}: validate median {statistics.median(walls):.3f} s, "
      f"_eval_epoch_end median {statistics.median(ends):.4f} s "
      f"forward alone {statistics.median(forward):.3f} s (of {repeats}; keys {len(trainer.callback_metrics)})")
