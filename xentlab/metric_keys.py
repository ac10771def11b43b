"""Metric keys of a model's members: ``member<k>/<key>`` is member k's ``<key>`` (a single run is member 0).

Made by the batched module, parsed by the logger that routes each member's values to its
own MLflow run, and stripped again for a member's result: here only.
"""

from __future__ import annotations

from typing import Mapping, Optional, TypeVar

V = TypeVar("V")
PREFIX = "member"


def key(member: int, name: str) -> str:
    """Member ``member``'s name for the metric ``name``."""
    return f"{PREFIX}{member}/{name}"


def parse(full: str) -> Optional[tuple[int, str]]:
    """(member, metric name) of a member's key; None for any other key."""
    head, _, rest = full.partition("/")
    index = head.removeprefix(PREFIX)
    return (int(index), rest) if head.startswith(PREFIX) and index.isdigit() and rest else None


def of(values: Mapping[str, V], member: int) -> dict[str, V]:
    """Member ``member``'s values, under their plain names."""
    return {p[1]: v for k, v in values.items() if (p := parse(k)) is not None and p[0] == member}
