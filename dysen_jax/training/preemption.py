"""Preemption: a SIGTERM (what TPU VMs, SLURM and Kubernetes send before they take the machine)
makes the train loop save a checkpoint at the next step and stop.

One process: our own SIGTERM handler sets a flag. Several processes: they must all save at the
same step, so we use jax's preemption sync point (`jax.distributed.initialize` installs its own
SIGTERM notifier), through orbax's `CheckpointManager.reached_preemption`.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax


class PreemptionWatch:
    """`should_stop(step)` is True once a SIGTERM arrived (all processes agree on the step)."""

    def __init__(self, manager: Any):
        self._manager = manager
        self._signalled = threading.Event()
        self._previous = None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, lambda signum, frame: self._signalled.set())

    def should_stop(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self._signalled.is_set()
        return bool(self._manager.reached_preemption(step))

    def close(self) -> None:
        """Restores the SIGTERM handler that was there before."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
