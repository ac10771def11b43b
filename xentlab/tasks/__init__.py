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
from typing import Any

from omegaconf import OmegaConf

from xentlab.tasks import conditions
from xentlab.tasks.base import TASKS, Split, Splits, TaskSpec, get, task  # noqa: F401  (the package's face)


def resolve(task_cfg: Any, data_cfg: Any) -> TaskSpec:
    """The spec of the task ``task_cfg`` names, its options checked and, for a task that reads
    a user's data, its kind and shape inferred; raises ConfigError/ValueError on bad options."""
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
    values = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True) if OmegaConf.is_config(cfg) else vars(cfg)
    return {k: v for k, v in values.items() if k not in ignore}


# the built-in tasks register themselves, in this order
from xentlab.tasks import mnist, binary, multilabel, file, fashion  # noqa: E402,F401,I001
