"""Write small real data sets as files ``task=file`` reads: scikit-learn's own copies, offline.

    python scripts/make_example_data.py            # into data/examples/
    python run.py task=file task.path=data/examples/breast_cancer.npz loss=bce

- ``breast_cancer.npz``: 569 tumours, 30 features, binary (malignant / benign);
- ``breast_cancer.csv``: the same rows as one CSV, label column ``diagnosis``
  (``task.label_columns=[diagnosis]``, test rows drawn by ``task.test_fraction``);
- ``digits.npz``: 1,797 8x8 images of handwritten digits, 10 classes, as (N, 1, 8, 8), so
  ``model=cnn`` works as well as ``model=mlp``.

The .npz files carry their own validation split (x_val, y_val), so the defaults run as they are.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def split_three(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """70% train, 10% validation, 20% test, stratified, from a fixed seed."""
    from sklearn.model_selection import train_test_split

    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.125, stratify=y_rest,
                                                      random_state=seed)
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val, "x_test": x_test, "y_test": y_test}


def write(out: Path) -> list[Path]:
    from sklearn.datasets import load_breast_cancer, load_digits

    out.mkdir(parents=True, exist_ok=True)
    cancer, digits = load_breast_cancer(), load_digits()
    files = [out / "breast_cancer.npz", out / "breast_cancer.csv", out / "digits.npz"]
    np.savez(files[0], **split_three(cancer.data, cancer.target), class_names=cancer.target_names)
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "diagnosis"})
    frame["diagnosis"] = cancer.target_names[cancer.target]
    frame.to_csv(files[1], index=False)
    np.savez(files[2], **split_three(digits.images[:, None].astype(np.float32), digits.target),
             class_names=np.array([str(d) for d in range(10)]))
    return files


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("data/examples"), help="output folder (default data/examples)")
    for f in write(ap.parse_args(argv).out):
        print(f"wrote {f}")

