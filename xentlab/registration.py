"""Everything Hydra must know before it composes a run config; the entry points call :func:`register`.

Kept apart from ``xentlab.config`` so that the schema stays a leaf: registering imports the
tasks (each registers its typed options as the choice ``task=<name>``) and the batched
launcher's config.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from xentlab.config import Config


def register() -> None:
    """Register the schema (``conf/config.yaml`` names it), the tasks and ``hydra/launcher=batched``."""
    ConfigStore.instance().store(name="xentlab_schema", node=Config)
    # Hydra finds the launcher plugin itself where hydra_plugins/ is on sys.path (run.py's folder, a regular
    # install); an editable install's import hook hides it from that scan, so composing a config that names it
    # from elsewhere (the tests, a notebook) needs its config registered here.
    import hydra_plugins.xentlab_batched_launcher.batched_launcher  # noqa: F401
    import xentlab.tasks  # noqa: F401  (each task registers its typed options)
