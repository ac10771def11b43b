"""``task=file``: the user's own .npz/.csv data, its inferred kind, and one clear line for bad input."""

from pathlib import Path

import numpy as np
import pytest
import torch

from xentlab import tasks, train
from xentlab.errors import ConfigError

from conftest import ROOT, make_config, run_xentlab, runs_in


def make(*overrides):
    return make_config("task=file", *overrides)


def npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def blobs(n=120, classes=2, features=4, seed=0):
    """Separable Gaussian blobs with labels 10, 20, ... (not 0..C-1, to test the encoding)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, features)) + 3 * y[:, None]
    return x * 5 + 100, (y + 1) * 10


@pytest.fixture
def good(tmp_path):
    x, y = blobs()
    xt, yt = blobs(40, seed=1)
    return npz(tmp_path / "good.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)


def spec_and_splits(*overrides):
    cfg = make(*overrides)
    p = train.plan(cfg)
    return p, tasks.build(p.task, cfg.task, cfg.data)


def test_binary_npz_kind_classes_validation_rows_and_standardisation_match_sklearn(good):
    from sklearn.preprocessing import StandardScaler

    p, s = spec_and_splits(f"task.path={good}", "data.val_size=20", "loss=bce")
    assert (p.task.kind, p.task.num_classes, p.task.class_names,
            p.task.input_shape) == ("binary", 2, ("10", "20"), (4,))
    assert (len(s.train), len(s.val), len(s.test)) == (100, 20, 40)
    raw = np.load(good)
    scaler = StandardScaler().fit(raw["x_train"][:100])  # training rows only: the last 20 are validation
    np.testing.assert_allclose(s.val.x.numpy(), scaler.transform(raw["x_train"][100:]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s.test.x.numpy(), scaler.transform(raw["x_test"]), rtol=1e-4, atol=1e-4)
    assert torch.equal(s.test.y, torch.as_tensor(raw["y_test"] // 10 - 1))
    _, raw_splits = spec_and_splits(f"task.path={good}", "data.val_size=20", "data.normalize=false")
    np.testing.assert_allclose(raw_splits.test.x.numpy(), raw["x_test"], rtol=1e-6)


def test_kind_can_be_given_and_a_two_class_problem_is_then_a_softmax_multiclass_one(good):
    p, _ = spec_and_splits(f"task.path={good}", "data.val_size=20", "task.kind=multiclass")
    assert (p.task.kind, p.num_outputs, p.activation) == ("multiclass", 2, "softmax")


def test_csv_string_classes_multiclass_and_its_own_test_fraction(tmp_path):
    x, y = blobs(200, classes=3)
    names = np.array(["cat", "dog", "eel"])[y // 10 - 1]
    lines = ["a,b,c,d,animal"] + [",".join(map(str, r)) + f",{n}" for r, n in zip(x, names)]
    (tmp_path / "pets.csv").write_text("\n".join(lines))
    p, s = spec_and_splits(f"task.path={tmp_path / 'pets.csv'}", "data.val_size=10", "task.test_fraction=0.25")
    assert (p.task.kind, p.task.class_names) == ("multiclass", ("cat", "dog", "eel"))
    assert (len(s.train), len(s.val), len(s.test)) == (140, 10, 50)


def test_csv_several_01_columns_is_multilabel_with_the_columns_as_tag_names(tmp_path):
    rng = np.random.default_rng(0)
    x, tags = rng.normal(size=(60, 3)), rng.integers(0, 2, size=(60, 2))
    lines = ["f1,f2,f3,red,round"] + [",".join(map(str, [*a, *b])) for a, b in zip(x, tags)]
    (tmp_path / "t.csv").write_text("\n".join(lines))
    p, s = spec_and_splits(f"task.path={tmp_path / 't.csv'}", "task.label_columns=[red,round]", "data.val_size=8",
                           "loss=bce", "data.batch_size=16")
    assert (p.task.kind, p.task.class_names, p.activation) == ("multilabel", ("red", "round"), "sigmoid")
    assert s.train.y.dtype == torch.float32 and s.train.y.shape[1] == 2


def test_digits_images_train_with_the_cnn_and_flat_features_are_refused_for_it(tmp_path, good):
    import subprocess
    import sys

    subprocess.run([sys.executable, str(ROOT / "scripts/make_example_data.py"), "--out", str(tmp_path)], check=True)
    p = train.plan(make(f"task.path={tmp_path / 'digits.npz'}", "model=cnn"))
    assert (p.task.kind, p.task.num_classes, p.task.input_shape) == ("multiclass", 10, (1, 8, 8))
    with pytest.raises(ConfigError, match=r"model=cnn needs inputs of 3 dimensions .* use model=mlp"):
        train.plan(make(f"task.path={good}", "data.val_size=20", "model=cnn"))


def _bad_files(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (overrides, the message's key phrase)."""
    x, y = blobs()
    xt, yt = blobs(40, seed=1)
    nan = x.copy()
    nan[7, 2] = np.nan
    inf = xt.copy()
    inf[3, 0] = np.inf
    (tmp_path / "ragged.csv").write_text("a,b,label\n1,2,0\n3,4,5,1\n5,6,0\n")
    (tmp_path / "text.csv").write_text("a,b,label\n1,x,0\n3,y,1\n5,z,0\n")
    (tmp_path / "unlabelled.csv").write_text("a,b,label\n1,2,cat\n3,4,\n5,6,dog\n")
    cases = {
        "missing file": ([f"task.path={tmp_path / 'nope.npz'}"], "no such file"),
        "missing array": ([f"task.path={npz(tmp_path / 'a.npz', x_train=x, y_train=y, x_test=xt)}"], "no array y_test"),
        "ragged csv": ([f"task.path={tmp_path / 'ragged.csv'}"], "not a well-formed CSV"),
        "non-numeric csv": ([f"task.path={tmp_path / 'text.csv'}"], "'b' are not numeric"),
        "row without a label": ([f"task.path={tmp_path / 'unlabelled.csv'}"],
                                "1 row(s) have no label (the first is data row 2)"),
        "non-numeric npz": (
            [f"task.path={npz(tmp_path / 's.npz', x_train=x.astype(str), y_train=y, x_test=xt, y_test=yt)}"],
            "x_train is not numeric"),
        "nan": ([f"task.path={npz(tmp_path / 'n.npz', x_train=nan, y_train=y, x_test=xt, y_test=yt)}"],
                "x_train has 1 NaN or infinite value(s), the first in row 7"),
        "inf": ([f"task.path={npz(tmp_path / 'i.npz', x_train=x, y_train=y, x_test=inf, y_test=yt)}"],
                "x_test has 1 NaN or infinite value(s), the first in row 3"),
        "float labels": ([f"task.path={npz(tmp_path / 'f.npz', x_train=x, y_train=y + 0.5, x_test=xt, y_test=yt)}"],
                         "labels fit no kind"),
        "one class": ([f"task.path={npz(tmp_path / 'o.npz', x_train=x, y_train=y * 0, x_test=xt, y_test=yt * 0)}"],
                      "one class only"),
        "tags not 0/1": (["task.path=" + npz(tmp_path / "m.npz", x_train=x, y_train=np.stack([y, y], 1), x_test=xt,
                                             y_test=np.stack([yt, yt], 1))],
                         "labels fit no kind"),
        "class only in test": (
            [f"task.path={npz(tmp_path / 'c.npz', x_train=x, y_train=y, x_test=xt, y_test=yt + 100)}"],
            "is in y_test but not in y_train"),
        "too few rows for the batch": (
            [f"task.path={npz(tmp_path / 'b.npz', x_train=x, y_train=y, x_test=xt, y_test=yt)}",
             "data.batch_size=128"], "larger than the 20 training examples"),
        "kind does not fit": (["task.path=" + npz(tmp_path / "k.npz", x_train=x, y_train=np.arange(120) % 3, x_test=xt,
                                                  y_test=np.arange(40) % 3),
                               "task.kind=binary"], "task.kind=binary, but the training labels hold 3 classes"),
    }
    return {k: (ov + ["data.val_size=100"], msg) for k, (ov, msg) in cases.items()}


BAD = ["missing file", "missing array", "ragged csv", "non-numeric csv", "row without a label", "non-numeric npz",
       "nan", "inf", "float labels", "one class", "tags not 0/1", "class only in test", "too few rows for the batch",
       "kind does not fit"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_config_error_and_no_mlflow_run(tmp_path, store, case):
    overrides, message = _bad_files(tmp_path)[case]
    with pytest.raises(ConfigError) as err:
        train.run(make(*overrides, f"logger.tracking_uri={store}"))
    assert message in str(err.value) and "\n" not in str(err.value)
    if case == "too few rows for the batch":  # found once the data is built: the store is open, no run in it
        assert runs_in(store)[1] == []
    else:  # found while planning: not even the store was opened
        assert not (tmp_path / "mlflow.db").exists()


def test_bad_file_exits_2_with_one_line_before_any_mlflow_run(tmp_path, store):
    overrides, message = _bad_files(tmp_path)["class only in test"]
    r = run_xentlab(*overrides, "task=file", f"logger.tracking_uri={store}", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("xentlab: error:")]
    assert message in line
    assert runs_in(store)[1] == []


@pytest.mark.slow
def test_example_data_trains_through_run_py_as_sigmoid_bce_and_two_class_softmax(tmp_path, store):
    """The acceptance commands: make_example_data.py, then task=file with loss=bce and with
    loss=sparse_cce (softmax over two outputs), as one sweep; the report makes the file a table."""
    import subprocess
    import sys

    subprocess.run([sys.executable, str(ROOT / "scripts/make_example_data.py"), "--out", str(tmp_path / "ex")],
                   check=True)
    path = tmp_path / "ex" / "breast_cancer.npz"
    r = run_xentlab("-m", "task=file", f"task.path={path}", "loss=bce,sparse_cce", f"logger.tracking_uri={store}",
                    "logger.experiment=mine", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert ("task=file breast_cancer.npz: binary, 2 classes (malignant, benign), "
            "positive class 'benign'" in r.stdout + r.stderr)
    _, runs = runs_in(store)
    children = {x.data.tags["loss"]: x for x in runs if x.data.tags.get("sweep") != "parent"}
    assert set(children) == {"bce", "sparse_cce"}
    for loss, outputs, activation in (("bce", "1", "sigmoid"), ("sparse_cce", "2", "softmax")):
        run = children[loss]
        assert run.info.status == "FINISHED"
        assert (run.data.tags["num_outputs"], run.data.tags["activation"]) == (outputs, activation)
        assert run.data.tags["class_names"] == "malignant,benign" and run.data.params["task.path"] == str(path)
        assert run.data.metrics["test/acc"] > 0.9  # 63% is the majority class
    from xentlab.report.compare import compare

    tables = compare(tracking_uri=store, experiment="mine", out=tmp_path / "report", attach=False)
    assert list(tables) == ["file breast_cancer"] and len(tables["file breast_cancer"]["rows"]) == 2


def test_tune_ranks_a_file_task_by_the_yardstick_of_its_inferred_kind(good):
    from xentlab import tune

    assert tune.task_kind(["task=file", f"task.path={good}", "data.val_size=20"]) == "binary"
    assert tune.task_kind(["task=file", f"task.path={good}", "data.val_size=20",
                           "task.kind=multiclass"]) == "multiclass"
