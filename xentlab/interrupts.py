"""How a run is stopped from outside (Ctrl-C, SIGTERM), in one place.

The entry point turns SIGTERM into :class:`Terminated` and ends the process with
:data:`EXIT_CODE` when :func:`interrupted` says so, whatever the logger; tracking marks the
runs it owns KILLED for the same exceptions. Calls that must not be cut short hold both
signals back with :func:`deferred`.
"""

from __future__ import annotations

import signal
import threading
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

from xentlab import cluster

EXIT_CODE = 130  # the shell's code for "stopped by a signal"


class Terminated(BaseException):
    """SIGTERM: unwinds like Ctrl-C, so every run on the way is marked KILLED."""


def interrupted(exc: BaseException) -> bool:
    """Ctrl-C, SIGTERM, or Lightning's own report of a SIGTERM it caught inside its loops."""
    return isinstance(exc, (KeyboardInterrupt, Terminated)) or type(exc).__name__ == "SIGTERMException"


_job_ending = False  # a SIGTERM ends this SLURM job: the next ones are ignored


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` (in the main thread; elsewhere nothing changes).
    Inside a SLURM job it names the job, and the signals that follow it (srun passes one on at a
    time limit) are ignored: the job is ending, and its run and record must be written. Ignored
    by a flag, not by SIG_IGN: Lightning puts back this handler as it unwinds."""
    global _job_ending
    _job_ending = False

    def on_sigterm(signum, frame):
        global _job_ending
        if not cluster.in_job():
            raise Terminated("SIGTERM")
        if _job_ending:
            return
        _job_ending = True
        raise Terminated(f"SIGTERM in SLURM job {cluster.job_id()} (scancel, time limit or preemption)")

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_deferring = False  # a deferred() block is open in the main thread


@contextmanager
def deferred() -> Iterator[None]:
    """While inside, SIGINT and SIGTERM are only noted; on leaving, the previous handlers are back
    and get each noted signal (Ctrl-C raises KeyboardInterrupt there, SIGTERM :class:`Terminated`
    under :func:`sigterm_raises`). For calls into MLflow that take a lock: an exception raised
    between a lock's acquire and its ``with`` block leaves the lock held, and MLflow's async queue
    then hangs the process when it is flushed. A second Ctrl-C is not held: a write that does not
    return (a store that stopped answering) can always be interrupted. Re-entrant; elsewhere
    than in the main thread, where no handler can be set, nothing changes."""
    global _deferring
    if _deferring or threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    previous: dict[int, Any] = {}

    def note(signum: int, frame) -> None:
        if signum == signal.SIGINT and signal.SIGINT in noted:  # asked twice: stop waiting on the write
            signal.signal(signal.SIGINT, previous[signal.SIGINT])
            noted.remove(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            return
        noted.append(signum)

    _deferring = True
    try:
        with ExitStack() as restore:  # every handler comes back, even if a signal lands in between
            for signum in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(signum) is not None:  # None: set outside Python, it could not be restored
                    previous[signum] = signal.signal(signum, note)
                    restore.callback(signal.signal, signum, previous[signum])
            yield
    finally:
        _deferring = False
        for signum in noted:  # also when the body raised: the interrupt wins, as it would have
            signal.raise_signal(signum)  # the restored handler runs now, in this thread
