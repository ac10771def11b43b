"""Everything Hydra must know before it composes a run config; the entry points call :func:`register`.

Kept apart from ``xentlab.config`` so that the schema stays a leaf: registering imports the
tasks (each registers its typed options as the choice ``task=<name>``) and the batched
launcher's config.
"""

from __future__ import annotations

from typing import Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.types import ChoiceSweep

from xentlab.config import Config
from xentlab.errors import ConfigError


def register() -> None:
    """Register the schema (``conf/config.yaml`` names it), the tasks and ``hydra/launcher=batched``."""
    ConfigStore.instance().store(name="xentlab_schema", node=Config)
    # Hydra finds the launcher plugin itself where hydra_plugins/ is on sys.path (run.py's folder, a regular
    # install); an editable install's import hook hides it from that scan, so composing a config that names it
    # from elsewhere (the tests, a notebook) needs its config registered here.
    import hydra_plugins.xentlab_batched_launcher.batched_launcher  # noqa: F401
    import xentlab.tasks  # noqa: F401  (each task registers its typed options)


def check_choices(overrides: Sequence[str], config_dir: str) -> None:
    """Refuse an override that picks a config group's option that does not exist (``loss=nope``),
    sweep values included, with a :class:`ConfigError` that names the valid ones: Hydra itself says
    so in a dozen lines and exit code 1, after its plugins are scanned. Overrides Hydra cannot parse
    are left to Hydra's own message."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # noqa: BLE001 (Hydra reports it in its own words)
        return
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        for o in parsed:
            parent, _, name = o.key_or_group.rpartition("/")
            if o.is_delete() or name not in loader.list_groups(parent):
                continue
            if o.is_sweep_override():
                if not isinstance(o.value(), ChoiceSweep):  # glob(), range(): Hydra expands them against the options
                    continue
                values = list(o.sweep_string_iterator())
            else:
                values = [o.get_value_element_as_str()]
            options = loader.get_group_options(o.key_or_group)
            bad = [v for v in values if v not in options and v != "null"]
            if bad:
                raise ConfigError(f"{o.key_or_group} must be one of {', '.join(options)}, got {bad[0]!r}")
