"""``trainer.precision=bf16-mixed``: a run, single or batched, lands where float32 runs land."""

import pytest

from xentlab import train

from conftest import make_config

QUICK = ("task=mnist", "data.subset=5000", "trainer.max_epochs=2", "logger=none", "trainer.progress_bar=false",
         "trainer.checkpoint=false")
SEEDS = (0, 1, 2, 3, 4)


def _accuracies(*overrides: str) -> dict[int, float]:
    result = train.run(make_config(*QUICK, *overrides))
    return {r["seed"]: r["metrics"]["test/acc"] for r in result.get("runs", [result | {"seed": 0}])}


@pytest.mark.slow
def test_bf16_runs_stay_within_the_float32_seed_spread(mnist_root):
    """The yardstick is the spread of test accuracy over five float32 seeds: in bf16 each seed
    (batched, and seed 0 alone) moves less than changing the seed moves a float32 run, and the
    bf16 mean lies inside the float32 range."""
    seeds = f"seeds=[{','.join(map(str, SEEDS))}]"
    fp32 = _accuracies(seeds)
    bf16 = _accuracies(seeds, "trainer.precision=bf16-mixed")
    (alone,) = _accuracies("seed=0", "trainer.precision=bf16-mixed").values()
    low, high = min(fp32.values()), max(fp32.values())
    assert high - low > 0
    for seed in SEEDS:
        assert abs(bf16[seed] - fp32[seed]) <= high - low, (seed, bf16[seed], fp32)
    assert abs(alone - fp32[0]) <= high - low, (alone, fp32)
    assert low <= sum(bf16.values()) / len(bf16) <= high, (bf16, fp32)


def test_training_flushes_subnormal_floats_and_leaves_the_process_as_it_found_it(mnist_root):
    """A saturated member's subnormal gradients take the CPU's slow path for every member stacked
    with it (``train.subnormals_flushed``): while a model trains they are flushed to zero; after, the
    process computes with them again."""
    import pytorch_lightning as pl
    import torch

    tiny = torch.tensor([1e-39])  # below float32's smallest normal, 1.18e-38
    seen = []

    class Probe(pl.Callback):
        def on_train_batch_start(self, *args):
            seen.append((tiny * 1.0).item())

    assert (tiny * 1.0).item() > 0
    train.run(make_config(*QUICK, "data.subset=512", "trainer.max_epochs=1"), callbacks=[Probe()])
    assert seen and set(seen) == {0.0}
    assert (tiny * 1.0).item() > 0
