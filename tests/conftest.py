import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = ROOT / "data"


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """Real MNIST under the repo's data/ (fetched once, from whichever source works)."""
    from xentlab.tasks.idx_files import MNIST

    MNIST.ensure(DATA_ROOT)
    return DATA_ROOT


@pytest.fixture
def store(tmp_path) -> str:
    """A brand-new SQLite MLflow store for one test."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def ctrl_c_enabled() -> None:
    """``preexec_fn`` for a child that the test will Ctrl-C: a shell's background job (``cmd &``
    without job control) starts with SIGINT ignored, and its children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_xentlab(*overrides: str, cwd: Path, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
    """``python run.py <overrides>`` as a user would run it, with Hydra's outputs in ``cwd``."""
    cmd = [sys.executable, str(ROOT / "run.py"), *overrides, f"data.root={DATA_ROOT}",
           "trainer.progress_bar=false", f"hydra.run.dir={cwd}/outputs", f"hydra.sweep.dir={cwd}/multirun"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    Path(cwd).mkdir(parents=True, exist_ok=True)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, **popen)


def runs_in(store_uri: str):
    """(client, every run in the store), through xentlab's tracking package."""
    from xentlab import tracking

    client = tracking.client(store_uri)
    exps = tracking.experiment_ids(client)
    return client, (tracking.search_all(client, exps) if exps else [])


def configs(*override_lists) -> list:
    """The run configs ``conf/config.yaml`` composes with each list of overrides (one Hydra
    initialisation for all of them)."""
    from hydra import compose, initialize_config_dir

    from xentlab import registration

    registration.register()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return [compose(config_name="config", overrides=list(o)) for o in override_lists]


def make_config(*overrides):
    """One run config, as ``python run.py <overrides>`` would see it."""
    return configs(overrides)[0]


def preset_jobs(preset: str) -> list[list[str]]:
    """The jobs (override lists) of a ``conf/experiment`` preset's sweep, as Hydra composes the
    preset (its defaults included) and expands it with its own override parser and basic sweeper."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.utils import create_config_search_path
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from xentlab import registration

    registration.register()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        params = compose(config_name="config", overrides=[f"experiment={preset}"],
                         return_hydra_config=True).hydra.sweeper.params
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(ROOT / "conf")))
    parsed = OverridesParser.create(config_loader=loader).parse_overrides([f"{k}={v}" for k, v in params.items()])
    (jobs,) = BasicSweeper.split_arguments(parsed, None)
    return jobs
