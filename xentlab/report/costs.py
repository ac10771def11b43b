"""What sparse targets save: shared by the benchmark (``xentlab.bench``) and the claims report.

Pure torch plus xentlab's loss layer; no training stack.
"""

from __future__ import annotations

import time

import torch

from xentlab import losses
from xentlab.analysis import spread


def sparse_vs_one_hot(device, classes=(10, 1000, 10000), n: int = 512, features: int = 256, steps: int = 20,
                      rounds: int = 5, warmup: int = 3):
    """Time per step of cce (one-hot targets built each step, as a user would) vs sparse_cce,
    and the size of their targets (peak memory too on a GPU).

    Each round times sparse, cce, sparse again, after ``warmup`` untimed steps of each; the two
    sparse timings of a round differ only by noise, so the largest relative gap between them
    over the rounds is the stated noise band of the cce/sparse ratio.
    """
    out = []
    for c in classes:
        setups = {}
        for loss in ("sparse_cce", "cce"):
            torch.manual_seed(0)
            head = torch.nn.Linear(features, c).to(device)
            setups[loss] = (head, torch.optim.SGD(head.parameters(), lr=0.1))
        x = torch.randn(n, features, device=device)
        labels = torch.randint(0, c, (n,), device=device)

        def step(loss: str) -> torch.Tensor:
            head, opt = setups[loss]
            targets = losses.encode_targets(loss, labels, c)
            value = losses.compute(loss, "softmax", head(x), targets, check_values=False)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            return targets

        def timed(loss: str, k: int) -> float:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(k):
                step(loss)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return 1000 * (time.perf_counter() - t0) / k

        row = {"classes": c}
        for loss in ("sparse_cce", "cce"):
            timed(loss, warmup)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                step(loss)
                torch.cuda.synchronize()
                row[f"{loss}_peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
            targets = losses.encode_targets(loss, labels, c)
            row[f"{loss}_target_mib"] = targets.element_size() * targets.nelement() / 2**20
        first, dense, second = [], [], []
        for _ in range(rounds):
            first.append(timed("sparse_cce", steps))
            dense.append(timed("cce", steps))
            second.append(timed("sparse_cce", steps))
        sparse = [(p + q) / 2 for p, q in zip(first, second)]
        row["sparse_cce_ms_per_step"], row["cce_ms_per_step"] = spread(sparse), spread(dense)
        row["cce/sparse"] = spread([d / s for d, s in zip(dense, sparse)])
        row["noise_band"] = max(abs(q / p - 1) for p, q in zip(first, second))
        out.append(row)
    return out
