"""What sparse targets save: shared by the benchmark (scripts/bench.py) and the claims report.

Pure torch plus xentlab's loss layer; no training stack.
"""

from __future__ import annotations

import time

import torch

from xentlab import losses


def sparse_vs_one_hot(device, classes=(10, 1000, 10000), n: int = 512, features: int = 256, steps: int = 20):
    """Peak memory and time per step of cce (one-hot targets materialised) vs sparse_cce."""
    out = []
    for c in classes:
        row = {"classes": c}
        for loss in ("sparse_cce", "cce"):
            torch.manual_seed(0)
            head = torch.nn.Linear(features, c).to(device)
            opt = torch.optim.SGD(head.parameters(), lr=0.1)
            x = torch.randn(n, features, device=device)
            labels = torch.randint(0, c, (n,), device=device)
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            for _ in range(steps):
                targets = losses.encode_targets(loss, labels, c)  # one-hot built each step, as a user would
                value = losses.compute(loss, "softmax", head(x), targets, check_values=False)
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
                row[f"{loss}_peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
            else:
                row[f"{loss}_target_mib"] = targets.element_size() * targets.nelement() / 2**20
            row[f"{loss}_ms_per_step"] = 1000 * (time.perf_counter() - t0) / steps
        out.append(row)
    return out
