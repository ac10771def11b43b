"""A run's plan: every check that needs no training, before Lightning is imported.

A bad config or an invalid activation × loss × task cell fails here with one line, before any
training data is built or any MLflow run exists (``task=file`` reads and checks the user's
file here). Kept apart from ``xentlab.train`` so that ``run.py`` refuses a config without
importing Lightning (``docs/benchmarks.md``, "Imports").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from xentlab import compat, losses, models, tasks, yardsticks
from xentlab.config import Select, validate
from xentlab.errors import ConfigError


@dataclass(frozen=True)
class Plan:
    task: tasks.TaskSpec
    activation: str
    loss: str
    numerics: str
    cell: compat.Cell
    num_outputs: int
    seeds: tuple[int, ...]  # the members' seeds
    batched: bool  # seeds=[...]: the members of one fold train as one model
    run_names: dict[tuple[int, int], str]  # by (seed, fold)
    select_on: Optional[str]  # the validation yardstick whose best epoch is tested; None: the last epoch
    folds: tuple[int, ...] = (0,)  # the members' folds (data.folds): a run for each seed in each

    @property
    def members(self) -> tuple[tuple[int, int], ...]:
        """The job's runs as (seed, fold), fold by fold: each fold's seeds can share one model."""
        return tuple((s, f) for f in self.folds for s in self.seeds)

    @property
    def several(self) -> bool:
        """Whether the job's result lists its runs: ``seeds=[...]`` or several folds."""
        return self.batched or len(self.folds) > 1

    @property
    def selection(self) -> str:
        """The selection rule, as the ``selection`` param and the report state it."""
        return f"best val/{self.select_on}" if self.select_on else "last"

    @property
    def run_name(self) -> str:
        return self.run_names[self.members[0]]


def plan(cfg: Any) -> Plan:
    """Every check that needs no training; raises ConfigError naming the problem and the choices.
    A task that reads the user's data (``task=file``) reads and checks it here."""
    validate(cfg)
    try:
        spec = tasks.resolve(cfg.task, cfg.data)
        activation = compat.resolve_activation(spec.kind, cfg.activation.name, cfg.loss.name)
        cell = compat.check(spec.name, spec.kind, activation, cfg.loss.name)
        losses.check_options(cfg.loss.name, activation, label_smoothing=cfg.loss.label_smoothing,
                             numerics=value_of(cfg.loss.numerics))
        if cfg.model.name not in models.MODELS:
            raise ConfigError(f"unknown model {cfg.model.name!r}; valid choices are: {', '.join(models.MODELS)}")
        models.check_input(cfg.model.name, spec.input_shape, spec.name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    seeds = tuple(cfg.seeds) if cfg.seeds else (cfg.seed,)
    folds = tuple(range(cfg.data.folds)) if cfg.data.fold is None else (cfg.data.fold,)
    names = {(s, f): cfg.logger.run_name or f"{spec.name}-{activation}-{cfg.loss.name}-s{s}"
             + (f"-f{f}" if cfg.data.folds > 1 else "") for s in seeds for f in folds}
    return Plan(spec, activation, cfg.loss.name, value_of(cfg.loss.numerics), cell, spec.num_outputs(activation),
                seeds, bool(cfg.seeds), names, _select_on(cfg, spec.kind, activation), folds)


def _select_on(cfg: Any, kind: str, activation: str) -> Optional[str]:
    """The yardstick ``trainer.select_on`` names (``acc`` or ``val/acc``; None: the task's primary)."""
    if cfg.trainer.select == Select.last:
        return None
    name = (cfg.trainer.select_on or yardsticks.primary(kind)).removeprefix("val/")
    valid = [n for n in yardsticks.available(kind, activation, per_class=cfg.task.imbalance is not None)
             if not yardsticks.TABLE[n].per_class or yardsticks.TABLE[n].in_report]
    if name not in valid:
        raise ConfigError(f"trainer.select_on={cfg.trainer.select_on!r} is not a validation yardstick of this "
                          f"{kind} task with activation={activation}; valid choices are: {', '.join(valid)}")
    return name


def value_of(choice: Any) -> str:
    """An enum choice (or a plain string) as its config value."""
    return str(getattr(choice, "value", choice))
