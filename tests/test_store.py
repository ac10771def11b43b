"""Tracking store trouble fails fast; a team server (mlflow server on PostgreSQL) takes a
parallel sweep whole."""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import run_xentlab, runs_in


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_fails_fast_naming_the_uri(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.perf_counter()
    out = run_xentlab("task=binary", f"logger.tracking_uri={uri}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"xentlab: error: cannot reach the MLflow tracking server at {uri}" in out.stderr
    assert "Traceback" not in out.stderr and "training started" not in out.stdout + out.stderr
    assert time.perf_counter() - start < 60  # MLflow's own client would retry for minutes


@pytest.mark.slow
def test_unreachable_server_stops_a_sweep_before_any_job(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    out = run_xentlab("-m", "task=binary", "loss=bce,mse", f"logger.tracking_uri={uri}", cwd=tmp_path)
    assert out.returncode == 2 and f"cannot reach the MLflow tracking server at {uri}" in out.stderr
    assert "#0 :" not in out.stdout + out.stderr  # no job was launched


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write to: a read-only tmpfs for root (who ignores permissions), else chmod."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:  # no mount privilege: sysfs refuses new files even to root
            yield Path("/sys/kernel")
            return
        yield path
        subprocess.run(["umount", str(path)], check=True)
    else:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)


@pytest.mark.slow
def test_store_on_a_read_only_path_fails_before_training(read_only_dir, tmp_path):
    uri = f"sqlite:///{read_only_dir / 'mlflow.db'}"
    out = run_xentlab("task=binary", f"logger.tracking_uri={uri}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"xentlab: error: the MLflow tracking store {uri} is not writable" in out.stderr
    assert "training started" not in out.stdout + out.stderr and "Traceback" not in out.stderr


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    if shutil.which("initdb"):
        return Path(shutil.which("initdb")).resolve().parent
    if os.environ.get("CI"):
        pytest.fail("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
    pytest.skip("PostgreSQL is not installed")


@pytest.fixture
def postgres():
    """A throw-away PostgreSQL on a loopback port; yields its SQLAlchemy URI, stops it by PID."""
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="xentlab-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as Debian's postgres user
        shutil.chown(root, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = root / "data"
    subprocess.run([*as_owner, bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "mlflow", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run([*as_owner, bin_dir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True)
    pid = int((data / "postmaster.pid").read_text().split()[0])
    try:
        subprocess.run([bin_dir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast shutdown"
        for _ in range(300):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def mlflow_server(postgres, tmp_path):
    """``mlflow server`` on that database, artifacts proxied to a local folder; stopped by PID."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "mlflow-server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres, "--artifacts-destination",
         str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("mlflow server did not start:\n" + (tmp_path / "mlflow-server.log").read_text()[-3000:])
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.mark.slow
def test_parallel_sweep_lands_whole_on_a_postgres_backed_server(mnist_root, mlflow_server, tmp_path):
    losses = ["bce", "cce", "sparse_cce", "mse"]
    out = run_xentlab("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "task=binary",
                      f"loss={','.join(losses)}", "data.subset=1000", "trainer.max_epochs=2",
                      f"logger.tracking_uri={mlflow_server}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "xentlab sweep: 4 ran, 0 skipped, 0 failed" in out.stdout
    client, runs = runs_in(mlflow_server)
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(runs) == 5
    assert sorted(r.data.tags["loss"] for r in jobs) == sorted(losses)
    for r in jobs:
        assert r.info.status == "FINISHED" and r.data.metrics["test/acc"] > 0.5
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val/acc")] == [0, 1]
        assert "config.yaml" in [a.path for a in client.list_artifacts(r.info.run_id)]
