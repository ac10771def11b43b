"""Typed configuration: the schema behind ``conf/`` and the checks Hydra cannot express.

The dataclasses are registered with Hydra's ConfigStore (``xentlab.registration``), so a
misspelt key or a value of the wrong type fails at start-up with Hydra's own message, and
a name from a fixed set (optimizer, numerics, hidden activation, logger) lists the valid
values; the registries behind those sets are keyed by these enums. :func:`validate` adds
the range and cross-field checks, all before any data is loaded or a model is built.
Imports no other part of xentlab but its errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import MISSING

from xentlab.errors import ConfigError

# What makes two runs the same experiment (dotted config keys): a resumed run must match them,
# ``resume=auto`` finds an earlier run by them, and the reports count one run per identity.
IDENTITY = ("task", "activation", "loss", "model", "optimizer", "seed", "seeds", "data.batch_size", "data.subset",
            "data.val_size", "data.folds", "data.fold", "trainer.compile", "trainer.precision", "trainer.select",
            "trainer.select_on", "trainer.patience")
# What may differ between the members of one batched model (dotted config keys, with what lies
# under them); everything else they share (``xentlab.batching``).
MEMBER_VARY = ("activation", "loss", "seed", "seeds", "optimizer.lr", "optimizer.momentum", "optimizer.weight_decay",
               "model.init_scale", "logger.run_name")
# What runs and checkpoints from before a key existed did, for the keys added since.
BEFORE = {"trainer.select": "last", "trainer.select_on": None, "trainer.patience": None, "data.folds": 1,
          "data.fold": 0}


class OptimizerName(str, Enum):
    adam = "adam"
    sgd = "sgd"


class Numerics(str, Enum):
    stable = "stable"
    keras = "keras"


class HiddenActivation(str, Enum):
    relu = "relu"
    sigmoid = "sigmoid"
    tanh = "tanh"


class Select(str, Enum):
    best = "best"  # the weights of the best validation epoch (Keras' restore_best_weights)
    last = "last"  # the weights after the last epoch


class LoggerName(str, Enum):
    mlflow = "mlflow"
    none = "none"


@dataclass
class TaskConfig:
    """What every task's options have; a task with more subclasses it (see ``xentlab.tasks``).

    ``label_noise`` and ``imbalance`` are conditions that stress the choice of loss; they
    change the training split only (``xentlab.tasks.conditions``), drawn from ``data_seed``.
    """

    name: str = MISSING
    data_seed: int = 0
    label_noise: float = 0.0  # fraction of training labels replaced by another class (tags flipped)
    imbalance: Optional[float] = None  # binary: fraction of positives kept; multiclass: smallest class ratio


@dataclass
class ActivationConfig:
    name: str = "auto"


@dataclass
class LossConfig:
    name: str = MISSING
    label_smoothing: float = 0.0
    numerics: Numerics = Numerics.stable


@dataclass
class ModelConfig:
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [256, 128])
    hidden_activation: HiddenActivation = HiddenActivation.relu
    channels: list[int] = field(default_factory=lambda: [32, 64])
    init_scale: float = 1.0  # multiplies the default initial weights


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.adam
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass
class DataConfig:
    root: str = "data"
    batch_size: int = 128
    eval_batch_size: int = 1000
    subset: Optional[int] = None
    val_size: int = 5000
    normalize: bool = True  # standardise inputs (MNIST: its mean/std; task=file: training mean/std)
    folds: int = 1  # K > 1: K train/validation folds of the training rows, a run each (xentlab.tasks.folds)
    fold: Optional[int] = None  # the fold a run trains on; None: a job trains every fold, one run each


@dataclass
class TrainerConfig:
    max_epochs: int = 5
    accelerator: str = "auto"
    devices: Any = "auto"
    precision: str = "32-true"
    log_every_n_steps: int = 50
    progress_bar: bool = True
    checkpoint: bool = True
    deterministic: bool = False
    compile: bool = False  # torch.compile the network (pays a compile at start-up)
    strategy: str = "auto"  # Lightning's: auto, ddp (conf/trainer/ddp.yaml), ...
    select: Select = Select.best  # which epoch's weights are tested (and reported)
    select_on: Optional[str] = None  # the val/ yardstick that picks the best epoch (None: the task's primary)
    patience: Optional[int] = None  # early stopping: epochs without improvement before a member stops


@dataclass
class LoggerConfig:
    name: LoggerName = LoggerName.mlflow
    tracking_uri: Optional[str] = None
    experiment: str = "xentlab-${task.name}"
    run_name: Optional[str] = None
    stale_after: float = 600.0  # seconds without a heartbeat before a RUNNING run on another host is stale


@dataclass
class Config:
    task: TaskConfig = MISSING
    activation: ActivationConfig = MISSING
    loss: LossConfig = MISSING
    model: ModelConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0
    seeds: Optional[list[int]] = None  # train these seeds together as one batched model
    optimized_metric: Optional[str] = None  # what run.py returns to a hyperparameter sweeper
    resume: Optional[str] = None  # auto, an MLflow run id, a checkpoint file or a run's output directory


def batching_conflict(cfg: Any, by: str, *, looks_up_members: bool = False) -> Optional[str]:
    """Why ``cfg`` cannot train as a member of a model of several runs (``by``: ``seeds=[...]``
    or the batched launcher); None when it can. ``looks_up_members``: ``by`` finds each member's
    earlier run itself, so ``resume=auto`` works (a checkpoint or run id names one run)."""
    if cfg.resume and looks_up_members and cfg.resume != "auto":
        return (f"resume={cfg.resume} names one run, and {by} trains several runs as one model: use resume=auto, "
                f"which looks up each member's earlier run")
    if cfg.resume and not looks_up_members:
        return f"resume works for one run at a time, and {by} trains several runs as one model: drop one of them"
    if cfg.trainer.compile:
        return f"trainer.compile=true compiles one network, and {by} trains several as one model: drop one of them"
    if "ddp" in str(cfg.trainer.strategy):
        return f"{by} trains its members on one device; it does not combine with trainer=ddp"
    return None


def validate(cfg: Any) -> None:
    """Range and cross-field checks; raises ConfigError with one clear line. The loss's own
    options are checked by its registry entry (``losses.check_options``, called by ``train.plan``)."""
    checks = [
        (cfg.optimizer.lr > 0, f"optimizer.lr must be > 0, got {cfg.optimizer.lr}"),
        (cfg.optimizer.momentum >= 0, f"optimizer.momentum must be >= 0, got {cfg.optimizer.momentum}"),
        (cfg.optimizer.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {cfg.optimizer.weight_decay}"),
        (cfg.trainer.max_epochs >= 1, f"trainer.max_epochs must be >= 1, got {cfg.trainer.max_epochs}"),
        (cfg.trainer.log_every_n_steps >= 1,
         f"trainer.log_every_n_steps must be >= 1, got {cfg.trainer.log_every_n_steps}"),
        (cfg.data.batch_size >= 1, f"data.batch_size must be >= 1, got {cfg.data.batch_size}"),
        (cfg.data.eval_batch_size >= 1, f"data.eval_batch_size must be >= 1, got {cfg.data.eval_batch_size}"),
        (cfg.data.subset is None or cfg.data.subset >= 1,
         f"data.subset must be >= 1 (or null for all), got {cfg.data.subset}"),
        (cfg.data.val_size >= 1, f"data.val_size must be >= 1, got {cfg.data.val_size}"),
        (cfg.data.folds >= 1, f"data.folds must be >= 1, got {cfg.data.folds}"),
        (cfg.data.fold is None or 0 <= cfg.data.fold < cfg.data.folds,
         f"data.fold must be in [0, data.folds={cfg.data.folds}) (or null for every fold), got {cfg.data.fold}"),
        (cfg.data.folds == 1 or cfg.data.fold is not None or not cfg.resume or cfg.resume == "auto",
         f"resume={cfg.resume} names one run, and data.folds={cfg.data.folds} trains a run per fold: use "
         f"resume=auto, or give data.fold=<fold>"),
        (cfg.data.folds == 1 or cfg.data.fold is not None or "ddp" not in str(cfg.trainer.strategy),
         f"data.folds={cfg.data.folds} trains its folds one after another in one process, which trainer=ddp does "
         f"not combine with: give data.fold=<fold> (e.g. data.fold=0,1,2 as a sweep)"),
        (
            cfg.data.subset is None or cfg.data.batch_size <= cfg.data.subset,
            f"data.batch_size={cfg.data.batch_size} is larger than data.subset={cfg.data.subset}: "
            f"not one full batch to train on",
        ),
        (cfg.seeds is None or (len(cfg.seeds) >= 1 and len(set(cfg.seeds)) == len(cfg.seeds)
                               and all(s >= 0 for s in cfg.seeds)),
         f"seeds must be distinct non-negative integers, got {cfg.seeds}"),
        (not (cfg.resume == "auto" and cfg.logger.name == "none"),
         "resume=auto finds the earlier run in MLflow, so it needs logger=mlflow; with logger=none give "
         "resume=<checkpoint file or run directory>"),
        (not (cfg.resume == "auto" and "ddp" in str(cfg.trainer.strategy)),
         "resume=auto works with one process per run; with trainer=ddp give resume=<MLflow run id or checkpoint>"),
        (cfg.logger.stale_after > 0, f"logger.stale_after must be > 0 seconds, got {cfg.logger.stale_after}"),
        (cfg.trainer.patience is None or cfg.trainer.patience >= 1,
         f"trainer.patience must be >= 1 (or null for none), got {cfg.trainer.patience}"),
        (cfg.trainer.patience is None or cfg.trainer.select == Select.best,
         "trainer.patience stops at the best validation epoch, so it needs trainer.select=best"),
        (0 <= cfg.task.label_noise < 1, f"task.label_noise must be in [0, 1), got {cfg.task.label_noise}"),
        (cfg.task.imbalance is None or 0 < cfg.task.imbalance <= 1,
         f"task.imbalance must be in (0, 1] (or null for none), got {cfg.task.imbalance}"),
        (cfg.model.init_scale > 0, f"model.init_scale must be > 0, got {cfg.model.init_scale}"),
        (all(h >= 1 for h in cfg.model.hidden), f"model.hidden sizes must be >= 1, got {list(cfg.model.hidden)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if cfg.seeds and (why := batching_conflict(cfg, "seeds=[...]")):
        raise ConfigError(why)
