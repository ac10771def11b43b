"""Start-up: what a command that trains nothing imports, and when a run's first training step is done."""

import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT, run_xentlab

HEAVY = ("torch", "torchvision", "pytorch_lightning", "lightning", "lightning_fabric", "mlflow")


def heavy_imports_at_exit(script: str, *argv: str, cwd) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run ``script argv`` in a fresh interpreter; the heavy packages it had imported when it ended."""
    code = textwrap.dedent(f"""
        import atexit, runpy, sys
        atexit.register(lambda: print("HEAVY", sorted({{m.split(".")[0] for m in sys.modules}} & {set(HEAVY)!r}),
                                      file=sys.stderr))
        sys.argv = [{script!r}, *{list(argv)!r}]
        runpy.run_path({script!r}, run_name="__main__")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("HEAVY ")]
    return out, eval(line.removeprefix("HEAVY "))


@pytest.mark.parametrize("argv, line", [
    (["task=mnist", "loss=nope"], "loss must be one of bce, cce, mse, sparse_cce, got 'nope'"),
    (["-m", "task=mnist", "loss=bce,nope"], "loss must be one of bce, cce, mse, sparse_cce, got 'nope'"),
    (["task=mnsit"], "task must be one of binary, fashion, file, mnist, multilabel, got 'mnsit'"),
])
def test_a_bad_choice_is_refused_with_one_line_before_torch_lightning_or_mlflow_is_imported(tmp_path, argv, line):
    """The valid choices are the files of conf/<group>/ and the options the tasks register (listed by hand here)."""
    out, heavy = heavy_imports_at_exit(str(ROOT / "run.py"), *argv, cwd=tmp_path)
    assert out.returncode == 2
    assert [x for x in out.stderr.splitlines() if not x.startswith("HEAVY ")] == [f"xentlab: error: {line}"]
    assert heavy == []


def test_a_bad_value_is_refused_with_one_line_before_lightning_or_mlflow_is_imported(tmp_path):
    """The plan's checks still import torch (the loss registry and the models are torch modules)."""
    out, heavy = heavy_imports_at_exit(str(ROOT / "run.py"), "task=mnist", "optimizer.lr=-1", cwd=tmp_path)
    assert out.returncode == 2
    assert [x for x in out.stderr.splitlines() if not x.startswith("HEAVY ")] == [
        "xentlab: error: optimizer.lr must be > 0, got -1.0"]
    assert not set(heavy) - {"torch"}, heavy


@pytest.mark.parametrize("script, argv", [("run.py", ["--help"]), ("run.py", ["--cfg", "job"]),
                                          ("scripts/compare.py", ["--help"])])
def test_help_and_the_config_import_no_training(tmp_path, script, argv):
    out, heavy = heavy_imports_at_exit(str(ROOT / script), *argv, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert heavy == []


def test_the_first_training_step_is_logged_once_with_the_time_since_the_process_started(mnist_root, tmp_path):
    start = time.time()
    out = run_xentlab("task=binary", "data.subset=200", "trainer.max_epochs=2", "logger=none", cwd=tmp_path)
    wall = time.time() - start
    assert out.returncode == 0, out.stderr[-3000:]
    seconds = [float(s) for s in re.findall(r"first training step after (\d+\.\d) s", out.stdout + out.stderr)]
    assert len(seconds) == 1 and 0 < seconds[0] < wall, (seconds, wall)
