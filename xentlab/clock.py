"""How long a user has waited: seconds since this process started, and the start-up phases
logged against it (``docs/benchmarks.md``, "Start-up"). A leaf: Hydra's launcher plugin uses it
before anything heavy is imported."""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)
_IMPORTED = time.time()  # the fallback start where /proc is missing


def process_age() -> float:
    """Seconds since this process started (Linux: its start in /proc/self/stat, so imports count
    too); elsewhere since this module was imported."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time() - _IMPORTED


def phase(what: str, *args) -> None:
    """Log that a start-up phase is done: ``<what> after N.N s`` (since the process started)."""
    log.info(f"{what} after %.1f s", *args, process_age())
