"""One logger for the entry points: timestamped lines on stdout, only on process 0."""

from __future__ import annotations

import sys
import time


def _is_main_process() -> bool:
    if "jax" not in sys.modules:
        return True
    import jax

    return jax.process_index() == 0


def info(message: str) -> None:
    """Prints `message` with a timestamp (process 0 only), flushed so pipes see progress."""
    if _is_main_process():
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
