"""How a run is stopped from outside (Ctrl-C, SIGTERM), in one place.

The entry point turns SIGTERM into :class:`Terminated` and ends the process with
:data:`EXIT_CODE` when :func:`interrupted` says so, whatever the logger; tracking marks the
runs it owns KILLED for the same exceptions.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

EXIT_CODE = 130  # the shell's code for "stopped by a signal"


class Terminated(BaseException):
    """SIGTERM: unwinds like Ctrl-C, so every run on the way is marked KILLED."""


def interrupted(exc: BaseException) -> bool:
    """Ctrl-C, SIGTERM, or Lightning's own report of a SIGTERM it caught inside its loops."""
    return isinstance(exc, (KeyboardInterrupt, Terminated)) or type(exc).__name__ == "SIGTERMException"


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` (in the main thread; elsewhere nothing changes)."""

    def on_sigterm(signum, frame):
        raise Terminated("SIGTERM")

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
