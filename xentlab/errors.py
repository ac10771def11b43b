"""Every error a user may see, with the exit code ``run.py`` ends with when it stops a run.

A :class:`ConfigError` (exit 2) is found before any training or MLflow run starts; in a
sweep its job is *skipped*. Any other :class:`XentlabError` (exit 1) happens while the run
is under way; in a sweep its job *failed* and the sweep goes on (``xentlab.outcome``).
Ctrl-C and SIGTERM are not errors: ``xentlab.interrupts``.
"""

from __future__ import annotations


class XentlabError(Exception):
    """A failure the user can act on; its message is the one line ``run.py`` prints."""

    exit_code = 1


class ConfigError(XentlabError, ValueError):
    """A configuration that cannot run; the message names the bad value and the valid ones."""

    exit_code = 2


class IncompatibleCombination(ConfigError):
    """An activation × loss × task cell the compatibility table marks invalid."""


class TrackingUnavailable(ConfigError):
    """The tracking store cannot be reached or written: said before any training time is spent."""


class ClusterJobFailed(XentlabError, RuntimeError):
    """A SLURM job that returned no result (killed, out of memory, a lost node), or failed outside xentlab."""


class DataUnavailable(XentlabError, RuntimeError):
    """No source could provide verified data files (MNIST)."""


class NonFiniteLoss(XentlabError, FloatingPointError):
    """Training diverged: the loss became NaN or infinite at ``step``."""

    def __init__(self, step: int):
        self.step = step
        super().__init__(f"loss became NaN or infinite at step {step}: training diverged (try a smaller optimizer.lr)")
