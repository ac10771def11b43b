"""``task=file task.path=PATH``: the user's own data, from a ``.npz`` or ``.csv`` file.

``.npz``: arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``, optionally ``x_val``,
``y_val`` (else the last ``data.val_size`` training rows; with ``data.folds`` > 1 a fold of the
training and validation rows together) and ``class_names``. ``.csv``: one
row per example, ``task.label_columns`` (default: the last column) hold the labels, every
other column is a numeric feature; the test split is ``task.test_path`` or a
``task.test_fraction`` of the rows drawn with ``task.data_seed``.

The kind is inferred from the training labels unless ``task.kind`` names it: one label
column with two classes is binary, with more multiclass; several 0/1 columns (or a 2-D
``y``) multilabel. Class labels may be any integers or strings; they become 0..C-1 in
sorted order and their names are kept (for a binary task the second one is positive).
Features are standardised with the training split's mean and std (``data.normalize=false``
keeps them as they are). Every problem with the file is a ConfigError naming it, raised
while planning: before any MLflow run exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Optional

import numpy as np

from xentlab.config import TaskConfig
from xentlab.errors import ConfigError
from xentlab.tasks.base import Split, Splits, TaskSpec, get, task
from xentlab.tasks.folds import validation_rows

log = logging.getLogger(__name__)


class TaskKind(str, Enum):
    binary = "binary"
    multiclass = "multiclass"
    multilabel = "multilabel"


@dataclass
class FileOptions(TaskConfig):
    path: Optional[str] = None  # a .npz or .csv file
    kind: Optional[TaskKind] = None  # inferred from the labels when null
    label_columns: list[str] = field(default_factory=list)  # .csv: the label column(s); default the last one
    test_path: Optional[str] = None  # .csv: a second file with the test rows
    test_fraction: float = 0.2  # .csv without test_path: this share of the rows, drawn with data_seed


@dataclass(frozen=True)
class Loaded:
    """The file's data as tensors (features float (N, *shape); labels int (N,) or float (N, C) tags)
    and the spec inferred from it."""

    spec: TaskSpec
    splits: Splits


def check(t) -> None:
    if not t.path:
        raise ConfigError("task=file needs task.path=<a .npz or .csv file>")
    suffix = Path(t.path).suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise ConfigError(f"task.path={t.path}: unsupported file type {suffix or '(none)'!r}; "
                          "valid types are: .npz, .csv")
    if not Path(t.path).is_file():
        raise ConfigError(f"task.path={t.path}: no such file")
    if t.test_path and not Path(t.test_path).is_file():
        raise ConfigError(f"task.test_path={t.test_path}: no such file")
    if not 0 < t.test_fraction < 1:
        raise ConfigError(f"task.test_fraction must be in (0, 1), got {t.test_fraction}")


def _features(name: str, x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ConfigError(f"{name} is not numeric (dtype {x.dtype}): "
                          "features must be numbers, every row the same shape")
    if x.ndim < 2:
        raise ConfigError(f"{name} has shape {x.shape}: it needs one row per example, (N, features...)")
    bad = ~np.isfinite(x.astype(np.float64))
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ConfigError(f"{name} has {int(bad.sum())} NaN or infinite value(s), the first in row {row}")
    return x.astype(np.float32)


def _npz(path: Path) -> tuple[dict[str, np.ndarray], Optional[list[str]]]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            data = {k: arrays[k] for k in arrays.files}
    except ValueError as exc:  # object arrays: ragged rows or Python objects
        raise ConfigError(f"task.path={path} holds an array that is not numeric or has ragged rows ({exc})") from None
    except Exception as exc:
        raise ConfigError(f"task.path={path} is not a readable .npz file ({type(exc).__name__}: {exc})") from None
    missing = [a for a in ("x_train", "y_train", "x_test", "y_test") if a not in data]
    if missing:
        raise ConfigError(f"task.path={path} has no array {', '.join(missing)} (it has: {', '.join(sorted(data))})")
    if ("x_val" in data) != ("y_val" in data):
        raise ConfigError(f"task.path={path} has only one of x_val and y_val; give both or neither")
    class_names = [str(c) for c in data.pop("class_names")] if "class_names" in data else None
    for split in ("train", "test", "val"):
        if f"x_{split}" in data and len(data[f"x_{split}"]) != len(data[f"y_{split}"]):
            raise ConfigError(f"x_{split} has {len(data[f'x_{split}'])} rows "
                              f"but y_{split} has {len(data[f'y_{split}'])}")
    return data, class_names


def _csv_frame(path: Path, label_columns: list[str]):
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not a well-formed CSV file: {str(exc).strip()}") from None
    labels = list(label_columns) or [frame.columns[-1]]
    unknown = [c for c in labels if c not in frame.columns]
    if unknown:
        raise ConfigError(f"task.label_columns: no column {', '.join(map(repr, unknown))} in {path}; "
                          f"columns are: {', '.join(map(str, frame.columns))}")
    features = [c for c in frame.columns if c not in labels]
    if not features:
        raise ConfigError(f"{path} has no feature columns besides the labels {labels}")
    text = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        raise ConfigError(f"{path}: feature column(s) {', '.join(map(repr, text[:5]))} are not numeric "
                          f"(e.g. {frame[text[0]].iloc[0]!r}); features must be numbers")
    empty = frame[labels].isna().any(axis=1)
    if empty.any():
        raise ConfigError(f"{path}: {int(empty.sum())} row(s) have no label "
                          f"(the first is data row {int(empty.argmax()) + 1})")
    y = frame[labels].to_numpy()
    return frame[features].to_numpy(), (y[:, 0] if len(labels) == 1 else y), labels


def _csv(t) -> tuple[dict[str, np.ndarray], Optional[list[str]]]:
    x, y, labels = _csv_frame(Path(t.path), t.label_columns)
    if t.test_path:
        xt, yt, _ = _csv_frame(Path(t.test_path), labels)
    else:
        order = np.random.default_rng(t.data_seed).permutation(len(x))
        n_test = round(t.test_fraction * len(x))
        x, y, xt, yt = x[order[n_test:]], y[order[n_test:]], x[order[:n_test]], y[order[:n_test]]
    return {"x_train": x, "y_train": y, "x_test": xt, "y_test": yt}, (labels if len(labels) > 1 else None)


def _labels(y: dict[str, np.ndarray], requested: Optional[str], names: Optional[list[str]]):
    """(kind, class names, encoded labels per split): classes 0..C-1 in sorted order, or 0/1 tag columns."""
    import torch

    train = y["train"]
    if train.ndim == 2 and train.shape[1] == 1:
        y = {k: v[:, 0] for k, v in y.items()}
        train = y["train"]
    if train.ndim == 2:
        for k, v in y.items():
            if v.ndim != 2 or v.shape[1] != train.shape[1]:
                raise ConfigError(f"y_{k} has shape {v.shape}; y_train has {train.shape[1]} tag columns")
            if not np.issubdtype(v.dtype, np.number) or not np.isin(v, (0, 1)).all():
                raise ConfigError(f"labels fit no kind: y_{k} has several columns but values other than 0 and 1 "
                                  f"(multilabel tags must be 0/1)")
        if requested not in (None, "multilabel"):
            raise ConfigError(f"task.kind={requested}, but the labels have {train.shape[1]} columns: "
                              "that is multilabel")
        tags = names if names and len(names) == train.shape[1] else [str(i) for i in range(train.shape[1])]
        return "multilabel", tags, {k: torch.as_tensor(v.astype(np.float32)) for k, v in y.items()}
    if train.ndim != 1:
        raise ConfigError(f"labels fit no kind: y_train has shape {train.shape}; give (N,) classes or (N, C) 0/1 tags")
    numeric = np.issubdtype(train.dtype, np.number) or train.dtype == bool
    for k, v in y.items():
        if numeric and not np.issubdtype(v.dtype, np.number) and v.dtype != bool:
            raise ConfigError(f"y_{k} holds {v.dtype} labels but y_train holds numbers")
        if numeric and not np.array_equal(v, np.round(v)):
            raise ConfigError(f"labels fit no kind: y_{k} holds non-integer numbers (e.g. {v[v != np.round(v)][0]}); "
                              f"classification needs class labels")
    classes = np.unique(train)
    if len(classes) < 2:
        raise ConfigError("labels fit no kind: the training labels hold one class only "
                          f"({classes[0] if len(classes) else 'none'})")
    for k, v in y.items():
        unseen = np.setdiff1d(np.unique(v), classes)
        if len(unseen):
            raise ConfigError(f"class {unseen[0]!r} is in y_{k} but not in y_train: "
                              "a model cannot learn a class it never sees")
    kind = requested or ("binary" if len(classes) == 2 else "multiclass")
    if kind == "binary" and len(classes) != 2:
        raise ConfigError(f"task.kind=binary, but the training labels hold {len(classes)} classes")
    if kind == "multilabel":
        raise ConfigError("task.kind=multilabel needs several 0/1 label columns; "
                          "these labels are one class per example")
    integers = numeric and np.array_equal(classes, np.arange(len(classes)))
    class_names = (names if integers and names and len(names) == len(classes)
                   else [str(c.item() if numeric else c) for c in classes])
    return kind, class_names, {k: torch.as_tensor(np.searchsorted(classes, v)).long() for k, v in y.items()}


_CACHE: dict[tuple, Loaded] = {}


def load(t, data_cfg) -> Loaded:
    """Read, check and convert the file once per process (keyed by the options that change it)."""
    import torch

    path = Path(t.path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, t.test_path, tuple(t.label_columns),
           t.test_fraction, t.data_seed, getattr(t.kind, "value", t.kind), data_cfg.val_size, data_cfg.folds,
           data_cfg.fold, data_cfg.normalize)
    if key in _CACHE:
        return _CACHE[key]
    arrays, names = _npz(path) if path.suffix.lower() == ".npz" else _csv(t)
    x = {s: _features(f"x_{s}", arrays[f"x_{s}"]) for s in ("train", "val", "test") if f"x_{s}" in arrays}
    shapes = {s: v.shape[1:] for s, v in x.items()}
    if len(set(shapes.values())) > 1:
        raise ConfigError(f"features differ in shape between splits: {shapes}")
    kind, class_names, y = _labels({s: np.asarray(arrays[f"y_{s}"]) for s in x},
                                   getattr(t.kind, "value", t.kind), names)
    if "val" not in x or data_cfg.folds > 1:  # folds: of the training rows, then the file's validation rows
        xs = np.concatenate([x.pop(s) for s in ("train", "val") if s in x])
        ys = torch.cat([y.pop(s) for s in ("train", "val") if s in y])
        rows = validation_rows(ys, data_cfg, t.data_seed, f"training rows of {path.name}")
        for s, r in zip(("train", "val"), rows):
            x[s], y[s] = xs[r], ys[torch.as_tensor(r)]
    if data_cfg.normalize:
        mean, std = x["train"].mean(0), x["train"].std(0)
        std[std == 0] = 1.0  # a constant feature stays constant (zero) instead of dividing by zero
        x = {s: (v - mean) / std for s, v in x.items()}
    splits = Splits(*(Split(torch.as_tensor(x[s]), y[s]) for s in ("train", "val", "test")))
    spec = replace(get("file"), kind=kind, input_shape=tuple(shapes["train"]),
                   num_classes=len(class_names), class_names=tuple(class_names), infer=None)
    log.info("task=file %s: %s, %d %s (%s)%s; inputs of shape %s; %d train / %d val / %d test rows; features %s",
             path.name, kind, len(class_names), "tags" if kind == "multilabel" else "classes", ", ".join(class_names),
             f", positive class {class_names[1]!r}" if kind == "binary" else "", tuple(shapes["train"]),
             len(splits.train), len(splits.val), len(splits.test),
             "standardised with the training mean and std (data.normalize=false keeps them raw)"
             if data_cfg.normalize else "as they are (data.normalize=false)")
    _CACHE[key] = Loaded(spec, splits)
    return _CACHE[key]


def infer(t, data_cfg) -> TaskSpec:
    return load(t, data_cfg).spec


@task("file", options=FileOptions, check=check, infer=infer)
def build(task_cfg, data_cfg) -> Splits:
    """The file's splits; ``data.subset`` keeps the first training rows."""
    s = load(task_cfg, data_cfg).splits
    return Splits(s.train.subset(data_cfg.subset), s.val, s.test)
