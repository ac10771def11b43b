"""Everything Hydra must know before it composes a run config; the entry points call :func:`register`.

Kept apart from ``xentlab.config`` so that the schema stays a leaf: registering imports the
tasks (each registers its typed options as the choice ``task=<name>``) and the batched
launcher's config.
"""

from __future__ import annotations

from typing import Optional, Sequence

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


def check_choices(overrides: Sequence[str], config_dir: str, config_name: str = "config") -> None:
    """Refuse an override that picks a config group's option that does not exist (``loss=nope``),
    sweep values included, with a :class:`ConfigError` that names the valid ones: Hydra itself says
    so in a dozen lines and exit code 1, after its plugins are scanned. The options are those Hydra
    finds for this config and these overrides (``hydra.searchpath`` may add some). Whatever Hydra
    cannot parse or load here is left to Hydra's own message."""
    from hydra import initialize_config_dir

    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            problem = _unknown_choice(list(overrides), config_name)
    except Exception:  # noqa: BLE001 (Hydra reports it in its own words)
        return
    if problem:
        raise ConfigError(problem)


def _unknown_choice(overrides: list[str], config_name: str) -> Optional[str]:
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()

    def options(group: str, kind: ObjectType = ObjectType.CONFIG) -> list[str]:
        return loader.get_group_options(group, kind, config_name=config_name, overrides=overrides)

    for o in OverridesParser.create().parse_overrides(overrides):
        parent, _, name = o.key_or_group.rpartition("/")
        if o.is_delete() or name not in options(parent, ObjectType.GROUP):
            continue
        if o.is_sweep_override():
            if not isinstance(o.value(), ChoiceSweep):  # glob(), range(): Hydra expands them against the options
                continue
            values = list(o.sweep_string_iterator())
        else:
            values = [o.get_value_element_as_str()]
        valid = options(o.key_or_group)
        bad = [v for v in values if v not in valid and v != "null"]
        if bad:
            return f"{o.key_or_group} must be one of {', '.join(valid)}, got {bad[0]!r}"
    return None
