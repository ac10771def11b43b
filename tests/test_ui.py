"""The MLflow UI shows a finished sweep: a real `mlflow ui`, a real headless Chromium."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, run_xentlab, runs_in

pytestmark = pytest.mark.slow
CHROMIUM, CHROMEDRIVER = (shutil.which("chromium") or "/usr/bin/chromium",
                          shutil.which("chromedriver") or "/usr/bin/chromedriver")
SCREENSHOTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("CI"):
            pytest.fail("CI must run the UI test: install Debian's chromium and chromium-driver (see .ci/run)")
        pytest.skip("needs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1600,1000",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


@pytest.fixture
def ui(mnist_root, tmp_path):
    """A store with a finished two-run sweep, served by `mlflow ui` on a free loopback port."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = run_xentlab("-m", "task=binary", "loss=bce,mse", "data.subset=500", "trainer.max_epochs=1",
                      f"logger.tracking_uri={store}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", store,
                               "--host", "127.0.0.1", "--port", str(port)],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow ui did not answer on /health within 60 s")
        yield url, store
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def page_text_with(driver, url: str, wanted: list[str], shot: str, timeout: float = 60) -> str:
    driver.get(url)
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = driver.find_element("tag name", "body").text
        if all(w in text for w in wanted):
            break
        time.sleep(0.5)
    SCREENSHOTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / shot))
    missing = [w for w in wanted if w not in text]
    assert not missing, f"not on the page: {missing}; screenshot {SCREENSHOTS / shot}"
    return text


def test_experiment_and_runs_with_metrics_appear_in_the_ui(ui, browser):
    url, store = ui
    client, runs = runs_in(store)
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    exp_id = parent.info.experiment_id
    page_text_with(browser, f"{url}/#/experiments/{exp_id}/runs?workflowType=machine_learning",
                   ["xentlab-binary", parent.info.run_name, "3 matching runs"], "ui_experiment.png")
    for run in (r for r in runs if r.info.run_id != parent.info.run_id):
        wanted = [run.info.run_name, "test/acc", str(run.data.metrics["test/acc"]), "val/nll", "loss.name"]
        page_text_with(browser, f"{url}/#/experiments/{exp_id}/runs/{run.info.run_id}?workflowType=machine_learning",
                       wanted, f"ui_run_{run.data.tags['loss']}.png")
