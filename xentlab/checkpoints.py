"""Checkpoints that can be resumed: ``python run.py ... resume=<MLflow run id | path>``.

Every checkpoint carries, besides Lightning's own state (weights, optimizer, epoch, the
data order's generator), the run's resolved config and its MLflow run id. Resuming loads
the last end-of-epoch checkpoint, refuses a command whose experiment differs from the
checkpoint's (another loss, seed, model …: that would be a different run, not a resumed
one), and hands the run id back so metrics keep flowing into the same MLflow run.
Knows nothing of MLflow itself: :func:`find` asks the run's tracker for earlier runs and
for the checkpoint of a run id.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback

from xentlab.config import BEFORE, IDENTITY
from xentlab.errors import ConfigError

log = logging.getLogger(__name__)

KEY = "xentlab"
LAST = "last.ckpt"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class RunRecord(Callback):
    """Writes the run's config and MLflow run id into every checkpoint; a batched model's
    (``members``), each member's run id in model order, so its sweep can go on with them."""

    def __init__(self, config: Mapping[str, Any], run_ids: Sequence[Optional[str]]):
        self.record = {"config": dict(config), "run_id": run_ids[0] if len(run_ids) == 1 else None,
                       "members": list(run_ids)}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[KEY] = self.record


def identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that make two runs the same experiment, by dotted name (``resume=auto`` looks
    for an earlier MLflow run whose params match them)."""
    return {key: _get(config, key) for key in IDENTITY}


@dataclass(frozen=True)
class Resume:
    """Where a model goes on: its checkpoint (None: from the start, in earlier runs that left
    none) and the MLflow run each member goes on logging into, in model order (None: a new run)."""

    path: Optional[Path]
    run_ids: tuple[Optional[str], ...]
    epochs_done: int

    @property
    def run_id(self) -> Optional[str]:
        return self.run_ids[0]


def locate(resume: str, checkpoint_of_run: Callable[[str], Optional[str]]) -> Path:
    """A checkpoint file, a run's output directory (its ``checkpoints/last.ckpt``), or an
    MLflow run id (its ``checkpoint`` tag)."""
    path = Path(resume).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path / "checkpoints" / LAST, path / LAST):
            if candidate.is_file():
                return candidate
        raise ConfigError(f"resume={resume}: no {LAST} in that directory or its checkpoints/ folder")
    if RUN_ID.match(resume):
        found = checkpoint_of_run(resume)
        if not found:
            raise ConfigError(f"resume={resume}: that MLflow run has no checkpoint tag "
                              f"(it ran with trainer.checkpoint=false or logger=none)")
        if not Path(found).is_file():
            raise ConfigError(f"resume={resume}: its checkpoint {found} is gone (was the run's output "
                              f"directory deleted?)")
        return Path(found)
    raise ConfigError(f"resume={resume!r} is neither a checkpoint file, a run directory nor an MLflow run id "
                      f"(32 hex characters)")


def load(resume: str, config: Mapping[str, Any], checkpoint_of_run: Callable[[str], Optional[str]]) -> Resume:
    """Find and read the checkpoint; raise ConfigError unless ``config`` describes the same experiment."""
    path = locate(resume, checkpoint_of_run)
    state, record = _read(path, f"resume={resume}")
    if len(record.get("members", ())) > 1:
        raise ConfigError(f"resume={resume}: {path} is the checkpoint of a batched model of "
                          f"{len(record['members'])} runs; rerun its sweep with resume=auto to go on with them")
    differences = [f"{key}: checkpoint has {old!r}, this command has {new!r}" for key in IDENTITY
                   for old, new in [(_get(record["config"], key, BEFORE.get(key)), _get(config, key, BEFORE.get(key)))]
                   if old != new]
    if differences:
        raise ConfigError(f"resume={resume}: the checkpoint belongs to a different experiment; "
                          f"run with its settings. Differences: {'; '.join(differences)}")
    return Resume(path, (record["run_id"],), int(state.get("epoch", -1)) + 1)


def of_model(path: str | Path) -> Optional[Resume]:
    """A model's checkpoint as its members' runs and the epochs done (None: unreadable, or a
    member without a run)."""
    try:
        state, record = _read(Path(path), "resume=auto")
    except ConfigError as exc:
        log.warning("%s", exc)
        return None
    members = tuple(record.get("members") or [record.get("run_id")])
    return Resume(Path(path), members, int(state.get("epoch", -1)) + 1) if None not in members else None


def _read(path: Path, why: str) -> tuple[dict, dict]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ConfigError(f"{why}: cannot read checkpoint {path}: {exc}") from exc
    record = state.get(KEY)
    if record is None:
        raise ConfigError(f"{why}: {path} is not a xentlab checkpoint (no run record in it)")
    return state, record


@dataclass(frozen=True)
class Done:
    """``resume=auto`` found a FINISHED run of this configuration: nothing to train."""

    run_id: str
    metrics: dict[str, float]


def find(cfg: Any, tracker) -> Optional[Resume | Done]:
    """What ``resume=`` asks for: None (train from the start), the checkpoint to go on from,
    or (``resume=auto``) :class:`Done` when the configuration already has a FINISHED run."""
    if not cfg.resume:
        return None
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    where = cfg.resume
    if cfg.resume == "auto":
        found = earlier(config, tracker)
        if isinstance(found, Done):
            return found
        if found is None:
            log.info("resume=auto: no earlier run of this configuration; training from the start")
            return None
        if found.checkpoint is None:
            log.info("resume=auto: MLflow run %s (%s) left no checkpoint; training it again from the start",
                     found.run_id, found.status)
            return Resume(None, (found.run_id,), 0)
        log.info("resume=auto: going on with MLflow run %s (%s)", found.run_id, found.status)
        where = found.checkpoint  # it names its MLflow run
    resume = load(where, config, tracker.checkpoint_of)
    log.info("resuming from %s (%d epochs done)%s", resume.path, resume.epochs_done,
             f", logging into MLflow run {resume.run_id}" if resume.run_id and cfg.logger.name != "none" else "")
    return resume


def earlier(config: Mapping[str, Any], tracker) -> Optional[Done | Any]:
    """``resume=auto``: :class:`Done` when this resolved config has a FINISHED run, else the
    tracker's earlier unfinished run of it (``store.Previous``) or None."""
    found = tracker.previous(identity(config))
    if found is not None and found.status == "FINISHED":
        log.info("already done: MLflow run %s (FINISHED) has this configuration; nothing to train", found.run_id)
        return Done(found.run_id, found.metrics)
    return found


def _get(config: Mapping[str, Any], dotted: str, missing: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return missing
        node = node[part]
    return node
