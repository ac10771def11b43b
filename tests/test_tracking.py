"""The tracking package in process, against a brand-new SQLite store per test."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xentlab import interrupts, metric_keys, tracking
from xentlab.tracking import lifecycle

DESCRIPTION = lifecycle.RunDescription(
    "r", {"task": "mnist", "seed": 3}, {"seed": 3, "optimizer": {"lr": 0.01, "name": "adam"}}, "seed: 3\n")


@pytest.fixture
def client(store):
    return tracking.client(store)


def test_create_run_records_code_and_process_and_reuses_or_restores_the_experiment(client, store):
    first = tracking.create_run(client, "e", "one", {"k": 1})
    exp = client.get_run(first).info.experiment_id
    client.delete_experiment(exp)
    second = tracking.create_run(client, "e", "two", {})
    assert client.get_run(second).info.experiment_id == exp  # restored, not a new experiment
    tags = client.get_run(first).data.tags
    assert tags["k"] == "1" and tags["pid"].isdigit() and "host" in tags and "mlflow.source.git.commit" in tags


def test_params_are_flattened_and_written_past_the_batch_limit(client):
    run = tracking.create_run(client, "e", "p", {})
    params = {"group": {f"p{i}": i for i in range(250)}, "top": "x"}
    tracking.log_params(client, run, params)
    got = client.get_run(run).data.params
    assert len(got) == 251 and got["group.p249"] == "249" and got["top"] == "x"


def test_values_and_newest_sweep_under_a_parent(client):
    outer = tracking.create_run(client, "e", "claims", {})
    older = tracking.create_run(client, "e", "s1", {"sweep": "parent", "mlflow.parentRunId": outer})
    tracking.create_run(client, "e", "elsewhere", {"sweep": "parent"})
    assert tracking.newest_sweep(client, under=outer) == older
    newer = tracking.create_run(client, "e", "s2", {"sweep": "parent", "mlflow.parentRunId": outer})
    assert tracking.newest_sweep(client, under=outer) == newer
    tracking.log_values(client, outer, {f"m{i}": i / 2 for i in range(300)}, {"verdict": "holds"})
    data = client.get_run(outer).data
    assert len(data.metrics) == 300 and data.metrics["m299"] == 149.5 and data.tags["verdict"] == "holds"


def test_a_run_that_returns_ends_finished_with_its_params_and_config(client, store):
    with lifecycle.tracked_run(tracking.resolve_uri(store), "life", DESCRIPTION) as run:
        run.logger.log_metrics({"val/acc_epoch": 0.5, "epoch": 0})
    r = client.get_run(run.run_id)
    assert r.info.status == "FINISHED" and r.data.params["optimizer.lr"] == "0.01"
    assert r.data.tags["task"] == "mnist" and r.data.metrics["val/acc"] == 0.5
    assert client.get_metric_history(run.run_id, "val/acc")[0].step == 0  # epoch as the step


@pytest.mark.parametrize("exc, status", [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED"),
                                         (interrupts.Terminated("SIGTERM"), "KILLED")])
def test_a_run_that_raises_ends_failed_or_killed_and_the_error_goes_on(client, store, exc, status):
    with pytest.raises(type(exc)) as raised:
        with lifecycle.tracked_run(tracking.resolve_uri(store), "life", DESCRIPTION):
            raise exc
    run_id = raised.value.xentlab_run_id
    r = client.get_run(run_id)
    assert r.info.status == status and r.data.tags["error"].startswith(type(exc).__name__)


def test_a_routed_session_sends_each_members_values_to_its_own_run(client, store):
    tracker = lifecycle.MlflowTracking(store, "members", stale_after=600)
    descriptions = {s: lifecycle.RunDescription(f"s{s}", {"seed": s}, {"seed": s}, "") for s in (3, 4)}
    with tracker.open(descriptions) as session:
        session.logger.log_metrics({metric_keys.key(3, "val/acc_epoch"): 0.3, metric_keys.key(4, "val/acc_epoch"): 0.4,
                                    "epoch": 1})
        session.set_tags({"device": "cpu"})
    for seed, value in ((3, 0.3), (4, 0.4)):
        r = client.get_run(session.run_ids[seed])
        assert r.info.status == "FINISHED" and r.data.metrics == {"val/acc": pytest.approx(value)}
        assert r.data.tags["device"] == "cpu" and r.data.tags["seed"] == str(seed)


def test_no_tracking_is_the_same_interface_with_nothing_recorded(client, store):
    with lifecycle.NoTracking().open({0: DESCRIPTION}) as session:
        session.set_tags({"device": "cpu"})
    assert session.logger is False and session.run_ids == {0: None} and session.callbacks == []
    assert lifecycle.NoTracking().previous({"seed": 0}) is None
    assert tracking.experiment_ids(client) == ["0"]  # only MLflow's Default experiment


@given(st.integers(0, 10**9), st.text(min_size=1))
def test_member_keys_round_trip(member, name):
    assert metric_keys.parse(metric_keys.key(member, name)) == (member, name)
    assert metric_keys.of({metric_keys.key(member, name): 1.0, "other/x": 2.0}, member) == {name: 1.0}


@pytest.mark.parametrize("plain", ["val/acc", "train_seconds", "seedling/acc", "seed/acc", "seed3/"])
def test_other_keys_are_not_members(plain):
    assert metric_keys.parse(plain) is None
