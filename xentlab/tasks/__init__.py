"""Tasks: what the data is, what a label looks like, how many outputs a model needs.

A task is one module of this package: its options (a dataclass, if it has any beyond
``name``), its data builder, and the :func:`task` decorator that registers both, here
and as the Hydra choice ``task=<name>``. The builder returns train/val/test tensors with
labels in the task's own format (integer classes, or multi-hot rows for multi-label
tagging). Tasks know nothing of losses' target formats (see ``losses.encode_targets``)
or of tracking.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Optional

from hydra.core.config_store import ConfigStore
from torch import Tensor

from xentlab.config import TaskConfig


@dataclass
class Split:
    x: Tensor  # float (N, *input_shape)
    y: Tensor  # int (N,) class labels, or float (N, C) multi-hot tags

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: Optional[str]  # "binary" | "multiclass" | "multilabel"; None until ``infer`` reads the data
    input_shape: Optional[tuple[int, ...]]
    num_classes: Optional[int]  # classes, or tags for multilabel
    build: Callable[[Any, Any], Splits]
    check: Optional[Callable[[Any], None]] = None  # raises ConfigError on bad task options, before any data
    infer: Optional[Callable[[Any, Any], "TaskSpec"]] = None  # the spec of the data the options name (task=file)
    class_names: tuple[str, ...] = ()

    def num_outputs(self, activation: str) -> int:
        """Binary tasks use one output (sigmoid/none) or two (softmax); others one per class."""
        if self.kind == "binary":
            return 2 if activation == "softmax" else 1
        return self.num_classes

    @property
    def metrics(self) -> tuple[str, ...]:
        from xentlab.metrics import YARDSTICKS

        return YARDSTICKS[self.kind]


TASKS: dict[str, TaskSpec] = {}


def task(name: str, *, kind: Optional[str] = None, input_shape: Optional[tuple[int, ...]] = None,
         num_classes: Optional[int] = None, options: type[TaskConfig] = TaskConfig,
         check: Optional[Callable[[Any], None]] = None, infer: Optional[Callable[[Any, Any], TaskSpec]] = None):
    """Register ``fn(task_cfg, data_cfg) -> Splits`` as the task ``name``, with ``options``
    (a :class:`TaskConfig` dataclass) as its typed Hydra config ``task=<name>``. A task whose
    kind and shape depend on its options (a user's file) gives ``infer`` instead of them."""
    if infer is None and None in (kind, input_shape, num_classes):
        raise TypeError(f"task {name!r} needs kind, input_shape and num_classes, or infer")

    def register(fn: Callable[[Any, Any], Splits]) -> Callable[[Any, Any], Splits]:
        TASKS[name] = TaskSpec(name, kind, input_shape, num_classes, fn, check, infer)
        ConfigStore.instance().store(group="task", name=name, node=options(name=name))
        return fn

    return register


def get(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid choices are: {', '.join(TASKS)}")
    return TASKS[name]


def resolve(task_cfg: Any, data_cfg: Any) -> TaskSpec:
    """The spec of the task ``task_cfg`` names, its options checked and, for a task that reads
    a user's data, its kind and shape inferred; raises ConfigError/ValueError on bad options."""
    from xentlab.tasks import conditions

    spec = get(task_cfg.name)
    if spec.check is not None:
        spec.check(task_cfg)
    if spec.infer is not None:
        spec = spec.infer(task_cfg, data_cfg)
    conditions.check(spec.kind, task_cfg)
    return spec


_BUILT: dict[str, Splits] = {}
_KEEP = 2  # data sets kept per process (full MNIST as float tensors: about 220 MB)


def build(spec: TaskSpec, task_cfg: Any, data_cfg: Any) -> Splits:
    """The task's splits with the conditions of ``task_cfg`` (noise, imbalance) applied to training.

    The splits before the conditions are built once per process for each set of options that
    changes them, so a sequential sweep does not read and convert its data again for every
    job. A task that reads a user's file (``infer``) caches the file itself, keyed by its
    modification time."""
    from xentlab.tasks import conditions

    if TASKS.get(spec.name, spec).infer is not None:
        splits = spec.build(task_cfg, data_cfg)
    else:
        key = json.dumps([_options(task_cfg, ("label_noise", "imbalance")),
                          _options(data_cfg, ("batch_size", "eval_batch_size"))], sort_keys=True, default=str)
        if key not in _BUILT:
            while len(_BUILT) >= _KEEP:
                _BUILT.pop(next(iter(_BUILT)))
            _BUILT[key] = spec.build(task_cfg, data_cfg)
        splits = _BUILT[key]
    return conditions.apply(splits, spec.kind, spec.num_classes, task_cfg)


def _options(cfg: Any, ignore: tuple[str, ...]) -> dict[str, Any]:
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True) if OmegaConf.is_config(cfg) else vars(cfg)
    return {k: v for k, v in values.items() if k not in ignore}


from xentlab.tasks import mnist, binary, multilabel, file  # noqa: E402,F401  (the built-in tasks register themselves)
