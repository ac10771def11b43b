"""The fast path (Lightning module on device-resident index batches) computes exactly what
a plain PyTorch loop over the same batches computes."""

import copy

import pytorch_lightning as pl
import torch

from xentlab import losses
from xentlab.config import OptimizerConfig
from xentlab.data import DeviceData, TensorBatches
from xentlab.module import Classifier
from xentlab.tasks import Split, Splits


def test_lightning_path_matches_a_bare_loop_step_for_step():
    torch.manual_seed(0)
    x = torch.randn(256, 1, 4, 4)
    labels = torch.randint(0, 3, (256,))
    targets = losses.encode_targets("cce", labels, 3)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    bare = copy.deepcopy(net)
    opt_cfg = OptimizerConfig(lr=0.01)
    module = Classifier(net, kind="multiclass", num_classes=3, loss="cce", activation="softmax",
                        label_smoothing=0.1, numerics="stable", optimizer=opt_cfg, check_every=1)
    split = Split(x, labels)
    data = DeviceData(Splits(split, split, split), targets, targets, targets, batch_size=32, eval_batch_size=64, seed=5)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=data)

    opt = torch.optim.Adam(bare.parameters(), lr=0.01)
    bare_losses = []
    batches = TensorBatches((x, labels, targets), 32, shuffle=True, seed=5)
    for _ in range(2):
        for batch_x, _, batch_t in batches:
            loss = torch.nn.functional.cross_entropy(bare(batch_x), batch_t * 0.9 + 0.1 / 3)
            opt.zero_grad()
            loss.backward()
            opt.step()
            bare_losses.append(loss.detach())
    assert trainer.global_step == 16
    for p, q in zip(module.net.parameters(), bare.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(module.epoch_loss(), torch.stack(bare_losses[8:]).mean(), rtol=1e-5, atol=1e-6)
