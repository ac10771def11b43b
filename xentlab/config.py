"""Typed configuration: the schema behind ``conf/`` and the checks Hydra cannot express.

The dataclasses are registered with Hydra's ConfigStore, so a misspelt key or a value of
the wrong type fails at start-up with Hydra's own message, and a name from a fixed set
(optimizer, numerics, hidden activation) lists the valid values. :func:`validate` adds
the range and cross-field checks, all before any data is loaded or a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


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


@dataclass
class LoggerConfig:
    name: str = "mlflow"
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


def register() -> None:
    """Register the schema (``conf/config.yaml`` names it) and the tasks, which are Hydra
    choices of their own (``task=<name>``, see ``xentlab.tasks``)."""
    ConfigStore.instance().store(name="xentlab_schema", node=Config)
    import xentlab.tasks  # noqa: F401  (each task registers its typed options)
    # hydra/launcher=batched. Hydra finds the plugin itself where hydra_plugins/ is on sys.path (run.py's
    # folder, a regular install); an editable install's import hook hides it from that scan, so composing
    # a config that names it from elsewhere (the tests, a notebook) needs its config registered here.
    import hydra_plugins.xentlab_batched_launcher.batched_launcher  # noqa: F401


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the bad value and the valid ones."""


def validate(cfg: Any) -> None:
    """Range and cross-field checks; raises ConfigError with one clear line. The loss's own
    options are checked by its registry entry (``losses.check_options``, called by ``train.plan``)."""
    checks = [
        (cfg.optimizer.lr > 0, f"optimizer.lr must be > 0, got {cfg.optimizer.lr}"),
        (cfg.optimizer.momentum >= 0, f"optimizer.momentum must be >= 0, got {cfg.optimizer.momentum}"),
        (cfg.optimizer.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {cfg.optimizer.weight_decay}"),
        (cfg.trainer.max_epochs >= 1, f"trainer.max_epochs must be >= 1, got {cfg.trainer.max_epochs}"),
        (cfg.trainer.log_every_n_steps >= 1, f"trainer.log_every_n_steps must be >= 1, got {cfg.trainer.log_every_n_steps}"),
        (cfg.data.batch_size >= 1, f"data.batch_size must be >= 1, got {cfg.data.batch_size}"),
        (cfg.data.eval_batch_size >= 1, f"data.eval_batch_size must be >= 1, got {cfg.data.eval_batch_size}"),
        (cfg.data.subset is None or cfg.data.subset >= 1, f"data.subset must be >= 1 (or null for all), got {cfg.data.subset}"),
        (cfg.data.val_size >= 1, f"data.val_size must be >= 1, got {cfg.data.val_size}"),
        (
            cfg.data.subset is None or cfg.data.batch_size <= cfg.data.subset,
            f"data.batch_size={cfg.data.batch_size} is larger than data.subset={cfg.data.subset}: "
            f"not one full batch to train on",
        ),
        (cfg.seeds is None or (len(cfg.seeds) >= 1 and len(set(cfg.seeds)) == len(cfg.seeds)
                               and all(s >= 0 for s in cfg.seeds)),
         f"seeds must be distinct non-negative integers, got {cfg.seeds}"),
        (not (cfg.trainer.compile and cfg.seeds),
         "trainer.compile=true works with one seed at a time; drop seeds=[...] or the compile flag"),
        (not (cfg.resume and cfg.seeds), "resume works for one run at a time; seed-batched runs (seeds=[...]) "
                                          "cannot be resumed"),
        (not (cfg.resume == "auto" and cfg.logger.name == "none"),
         "resume=auto finds the earlier run in MLflow, so it needs logger=mlflow; with logger=none give "
         "resume=<checkpoint file or run directory>"),
        (not (cfg.resume == "auto" and "ddp" in str(cfg.trainer.strategy)),
         "resume=auto works with one process per run; with trainer=ddp give resume=<MLflow run id or checkpoint>"),
        (cfg.logger.stale_after > 0, f"logger.stale_after must be > 0 seconds, got {cfg.logger.stale_after}"),
        (not (cfg.seeds and "ddp" in str(cfg.trainer.strategy)),
         "seeds=[...] batches seeds on one device; it does not combine with trainer.strategy=ddp"),
        (0 <= cfg.task.label_noise < 1, f"task.label_noise must be in [0, 1), got {cfg.task.label_noise}"),
        (cfg.task.imbalance is None or 0 < cfg.task.imbalance <= 1,
         f"task.imbalance must be in (0, 1] (or null for none), got {cfg.task.imbalance}"),
        (cfg.model.init_scale > 0, f"model.init_scale must be > 0, got {cfg.model.init_scale}"),
        (all(h >= 1 for h in cfg.model.hidden), f"model.hidden sizes must be >= 1, got {list(cfg.model.hidden)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
