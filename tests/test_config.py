"""The typed config tree: Hydra's own errors for names and types, ours for ranges and cells."""

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from xentlab import config, registration, train
from xentlab.errors import ConfigError

from conftest import make_config as make

registration.register()


def test_defaults_are_the_readme_main_command():
    cfg = make()
    assert (cfg.task.name, cfg.loss.name, cfg.activation.name, cfg.model.name) == ("mnist", "sparse_cce", "auto", "mlp")
    assert cfg.logger.tracking_uri is None and cfg.logger.experiment == "xentlab-mnist"
    assert cfg.trainer.accelerator == "auto"
    p = train.plan(cfg)
    assert (p.activation, p.num_outputs, p.run_name) == ("softmax", 10, "mnist-softmax-sparse_cce-s0")


def test_public_override_names():
    cfg = make("task=binary", "activation=sigmoid", "loss=bce", "model=cnn", "seed=3", "trainer.max_epochs=2",
               "optimizer.name=sgd", "optimizer.lr=0.1", "data.batch_size=64", "data.subset=1000",
               "logger.tracking_uri=http://127.0.0.1:5000", "logger.experiment=mine")
    assert cfg.optimizer.name == config.OptimizerName.sgd and cfg.data.subset == 1000 and cfg.model.channels == [32, 64]
    assert train.plan(cfg).run_name == "binary-sigmoid-bce-s3"


@pytest.mark.parametrize("group, bad, valid", [
    ("task", "cifar", ["binary", "mnist", "multilabel"]),
    ("loss", "hinge", ["bce", "cce", "mse", "sparse_cce"]),
    ("activation", "relu", ["auto", "none", "sigmoid", "softmax"]),
    ("model", "resnet", ["cnn", "mlp"]),
])
def test_unknown_choice_lists_the_valid_ones(group, bad, valid):
    with pytest.raises(MissingConfigException) as err:
        make(f"{group}={bad}")
    assert all(v in str(err.value) for v in valid)


@pytest.mark.parametrize("override, match", [
    ("optimizer.lr=fast", "optimizer.lr"),
    ("optimizer.name=rmsprop", "adam, sgd"),
    ("loss.numerics=exact", "stable, keras"),
    ("model.hidden_activation=gelu", "relu, sigmoid, tanh"),
    ("trainer.max_epoch=3", "max_epoch"),
    ("task.max_digits=2", "max_digits"),  # only the multilabel task has it
])
def test_typos_and_wrong_types_fail_at_startup(override, match):
    with pytest.raises(ConfigCompositionException) as err:
        make(override)
    assert match in str(err.value) + str(err.value.__cause__)


@pytest.mark.parametrize("overrides, match", [
    (["optimizer.lr=-0.1"], "optimizer.lr must be > 0, got -0.1"),
    (["loss.label_smoothing=1.0"], r"label_smoothing must lie in \[0, 1\), got 1.0"),
    (["loss=mse", "loss.label_smoothing=0.1"], "loss=mse has no label smoothing.*bce, cce, sparse_cce"),
    (["trainer.max_epochs=0"], "trainer.max_epochs must be >= 1, got 0"),
    (["data.batch_size=0"], "data.batch_size must be >= 1"),
    (["data.subset=100", "data.batch_size=128"], "larger than data.subset=100"),
    (["seeds=[1,1]"], "seeds must be distinct"),
    (["task=multilabel", "task.max_digits=5"], "max_digits <= 4"),
    (["task=multilabel", "loss=sparse_cce"],
     "several tags cannot be one integer.*with loss=sparse_cce: no activation works; "
     "with activation=softmax: loss=bce"),
    (["activation=none", "loss=bce"],
     "not probabilities.*use sigmoid.*activation=sigmoid \\(questionable\\), softmax \\(valid\\)"),
    (["task=binary", "activation=sigmoid", "loss=cce"], "constant loss, zero gradient"),
    (["resume=auto", "logger=none"], "resume=auto finds the earlier run in MLflow, so it needs logger=mlflow"),
    (["resume=auto", "trainer=ddp"], "resume=auto works with one process per run"),
    (["logger.stale_after=0"], "logger.stale_after must be > 0 seconds, got 0"),
])
def test_bad_values_fail_before_training_with_one_clear_line(overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        train.plan(make(*overrides))
    assert "\n" not in str(err.value)


def test_questionable_cell_plans_with_its_reason():
    p = train.plan(make("task=multilabel", "activation=softmax", "loss=bce"))
    assert p.cell.status.value == "questionable" and "sum to 1" in p.cell.reason


@pytest.mark.parametrize("task, num_outputs", [("binary", 1), ("mnist", 10), ("multilabel", 10)])
def test_binary_picks_outputs_from_activation(task, num_outputs):
    assert train.plan(make(f"task={task}", "loss=mse", "activation=sigmoid")).num_outputs == num_outputs
    assert (train.plan(make(f"task={task}", "loss=mse", "activation=softmax")).num_outputs
            == (2 if task == "binary" else 10))
