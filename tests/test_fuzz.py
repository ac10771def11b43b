"""Fuzz the command line: random mixes of valid and invalid overrides either run or stop
with a clean one-line error, never a traceback. The seed is fixed (XENTLAB_FUZZ_SEED
changes it); a failure prints the overrides that caused it."""

import os
import random

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from xentlab import train
from xentlab.errors import ConfigError
from xentlab.registration import register

from conftest import ROOT, run_xentlab

SEED = int(os.environ.get("XENTLAB_FUZZ_SEED", "0"))
# key: (valid values, invalid values); a valid value may still make an invalid combination
CHOICES = {
    "task": (["mnist", "binary", "multilabel"], ["imagenet"]),
    "loss": (["bce", "cce", "sparse_cce", "mse"], ["hinge"]),
    "activation": (["auto", "sigmoid", "softmax", "none"], ["relu"]),
    "model": (["mlp", "cnn"], ["resnet"]),
    "optimizer.name": (["adam", "sgd"], ["rmsprop"]),
    "optimizer.lr": (["0.001", "0.1", "1e9"], ["0", "-1", "abc"]),
    "optimizer.momentum": (["0.9"], ["-0.1"]),
    "loss.label_smoothing": (["0.1", "0.0"], ["1.0", "-0.5", "x"]),
    "loss.numerics": (["stable", "keras"], ["fast"]),
    "seed": (["0", "7"], ["-1", "seven"]),
    "seeds": (["[0,1]", "null"], ["[1,1]", "[-1]", "[]"]),
    "model.hidden": (["[32]", "[]"], ["[0]", "[a]"]),
    "model.hidden_activation": (["relu", "tanh"], ["gelu"]),
    "trainer.compile": (["false"], ["maybe"]),
    "trainer.log_every_n_steps": (["1"], ["0"]),
    "resume": (["null", "auto"], ["no/such/checkpoint"]),
    "logger": (["none", "mlflow"], ["wandb"]),
}
SIZE = {  # not in the subprocess pool: there the data stays tiny
    "trainer.max_epochs": (["1"], ["0", "-3", "two"]),
    "data.batch_size": (["64"], ["0", "100000", "1.5"]),
    "data.subset": (["256", "null"], ["0", "-5"]),
    "data.val_size": (["100"], ["0"]),
}
TYPOS = ["trainer.epochs=3", "+extra=1", "optimiser.lr=0.1", "data.bacth_size=2", "task.train_size=300"]
CLEAN = (HydraException, OmegaConfBaseException, ConfigError)  # Hydra prints the first two as one message


def draw(rng: random.Random, pool: dict[str, tuple[list[str], list[str]]], k: int, p_bad: float) -> list[str]:
    keys = rng.sample(sorted(pool), k)
    overrides = [f"{key}={rng.choice(pool[key][rng.random() < p_bad])}" for key in keys]
    if rng.random() < p_bad / 2:
        overrides.append(rng.choice(TYPOS))
    return overrides


def test_random_overrides_fail_cleanly_or_pass_every_check():
    register()
    rng = random.Random(SEED)
    outcomes = {"passed": 0, "refused": 0}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for _ in range(120):
            overrides = draw(rng, {**CHOICES, **SIZE}, rng.randint(1, 6), p_bad=0.2)
            try:
                train.plan(compose("config", overrides=overrides))
                outcomes["passed"] += 1
            except CLEAN as exc:
                assert str(exc).strip(), overrides  # an error with nothing to say is not clean
                outcomes["refused"] += 1
            except Exception as exc:  # anything else would reach the user as a traceback
                pytest.fail(f"overrides {overrides} raised {type(exc).__name__}: {exc}")
    assert outcomes["passed"] > 10 and outcomes["refused"] > 10, outcomes  # the pool hits both sides


@pytest.mark.slow
@pytest.mark.parametrize("case", range(4))
def test_random_command_lines_run_or_exit_with_one_clean_line(mnist_root, tmp_path, case):
    rng = random.Random(f"{SEED}-{case}")
    overrides = draw(rng, CHOICES, rng.randint(2, 6), p_bad=0.0 if case % 2 else 0.2)
    tiny = ["data.subset=256", "data.val_size=200", "trainer.max_epochs=1", "logger.tracking_uri="
            f"sqlite:///{tmp_path / 'mlflow.db'}"]
    if "task=multilabel" in overrides:
        tiny += ["task.train_size=256", "task.test_size=200"]
    out = run_xentlab(*overrides, *tiny, cwd=tmp_path, timeout=300)
    shown = f"overrides {overrides}: exit {out.returncode}\n{out.stderr[-3000:]}"
    assert "Traceback" not in out.stderr + out.stdout, shown
    assert out.returncode in (0, 1, 2), shown  # ran; diverged or data missing; refused
    if out.returncode != 0:
        # ours: one "xentlab: error: ..." line; Hydra's: its message and the HYDRA_FULL_ERROR hint
        assert "xentlab: error: " in out.stderr or "HYDRA_FULL_ERROR=1" in out.stderr, shown
