"""What a task is: its splits, its spec, and the registry that :func:`task` fills.

Apart from the package so that each task module imports these without importing the
other tasks (``xentlab.tasks`` imports the built-in ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from hydra.core.config_store import ConfigStore

from xentlab import yardsticks
from xentlab.config import TaskConfig

if TYPE_CHECKING:  # tasks register without torch: it is imported when data is built
    from torch import Tensor


@dataclass
class Split:
    x: Tensor  # float (N, *input_shape)
    y: Tensor  # int (N,) class labels, or float (N, C) multi-hot tags

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, size: int | None) -> "Split":
        """The first ``size`` examples (all of them for None): ``data.subset`` of a training split."""
        return self if size is None else Split(self.x[:size], self.y[:size])


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
        return yardsticks.of(self.kind)


TASKS: dict[str, TaskSpec] = {}


def task(name: str, *, kind: Optional[str] = None, input_shape: Optional[tuple[int, ...]] = None,
         num_classes: Optional[int] = None, options: type[TaskConfig] = TaskConfig,
         check: Optional[Callable[[Any], None]] = None, infer: Optional[Callable[[Any, Any], TaskSpec]] = None,
         class_names: tuple[str, ...] = ()):
    """Register ``fn(task_cfg, data_cfg) -> Splits`` as the task ``name``, with ``options``
    (a :class:`TaskConfig` dataclass) as its typed Hydra config ``task=<name>``. A task whose
    kind and shape depend on its options (a user's file) gives ``infer`` instead of them."""
    if infer is None and None in (kind, input_shape, num_classes):
        raise TypeError(f"task {name!r} needs kind, input_shape and num_classes, or infer")

    def register(fn: Callable[[Any, Any], Splits]) -> Callable[[Any, Any], Splits]:
        TASKS[name] = TaskSpec(name, kind, input_shape, num_classes, fn, check, infer, class_names)
        ConfigStore.instance().store(group="task", name=name, node=options(name=name))
        return fn

    return register


def get(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid choices are: {', '.join(TASKS)}")
    return TASKS[name]
