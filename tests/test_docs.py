"""The README says what the code does."""

from xentlab import compat

from conftest import ROOT


def readme() -> str:
    return (ROOT / "README.md").read_text()


def test_readme_embeds_the_current_compatibility_table():
    assert compat.markdown() in readme()


def test_ci_runs_exactly_the_readme_test_command():
    command = next(line.strip() for line in readme().splitlines() if "pytest -m" in line and "pip install" in line)
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_main_command_is_the_one_the_issue_names():
    assert any("pip install" in line and line.strip().endswith("run.py task=mnist loss=sparse_cce")
               for line in readme().splitlines())
