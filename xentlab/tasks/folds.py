"""Which training rows are validation, in one place for every task: the last ``data.val_size``
rows (one split, ``data.folds=1``), or fold ``data.fold`` of ``data.folds`` (cross-validation).

The folds are drawn from ``task.data_seed``, not from a run's seed: every cell, learning rate
and seed of a sweep sees the same K folds, so the cells are compared on the same data, and the
members of fold f can share one batched model (its members share their data). Binary and
multiclass labels are stratified (scikit-learn's ``StratifiedKFold``: every fold keeps the
class shares); multi-hot tags, which have no single class to stratify by, use ``KFold``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xentlab.errors import ConfigError


def validation_rows(y: Any, data_cfg: Any, data_seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of a training set whose labels are ``y`` (N,) or tags (N, C);
    ``what`` names the rows in an error. A job's plan, before its folds become runs, reads fold 0."""
    y = np.asarray(y)
    n, folds = len(y), data_cfg.folds
    if folds == 1:
        if data_cfg.val_size >= n:
            raise ConfigError(f"data.val_size={data_cfg.val_size} leaves no {what} to train on ({n} in all); "
                              f"set data.val_size smaller")
        return np.arange(n - data_cfg.val_size), np.arange(n - data_cfg.val_size, n)
    from sklearn.model_selection import KFold, StratifiedKFold

    if folds > n:
        raise ConfigError(f"data.folds={folds} needs at least {folds} {what}; there are {n}")
    splitter = (KFold if y.ndim == 2 else StratifiedKFold)(n_splits=folds, shuffle=True, random_state=data_seed)
    try:
        train, val = list(splitter.split(np.zeros((n, 1)), y if y.ndim == 1 else None))[data_cfg.fold or 0]
    except ValueError as exc:  # a class with fewer rows than folds
        raise ConfigError(f"data.folds={folds} cannot split the {what}: {exc}") from exc
    return train, val
