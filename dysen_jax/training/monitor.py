"""What the train loop watches between log lines: throughput (steps/s, examples/s, MFU) and
non-finite steps (each is skipped by the step itself; too many in a row stop the run)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from dysen_jax.training.flops import mfu


class ThroughputMeter:
    """Collects per-step metrics; `flush()` returns their means plus the rates since the last flush."""

    def __init__(self, examples_per_step: int, flops_per_step: float, peak_flops: float):
        self.examples_per_step = examples_per_step
        self.flops_per_step = flops_per_step
        self.peak_flops = peak_flops
        self._metrics: list[dict[str, float]] = []
        self._start = time.perf_counter()

    def add(self, metrics: dict[str, Any]) -> None:
        self._metrics.append({k: float(v) for k, v in metrics.items()})

    def flush(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        steps = len(self._metrics)
        finite = [m for m in self._metrics if m.get("finite", 1.0) > 0] or self._metrics
        values = {k: float(np.mean([m[k] for m in finite])) for k in self._metrics[0]} if steps else {}
        values["steps_per_sec"] = steps / elapsed
        values["examples_per_sec"] = values["steps_per_sec"] * self.examples_per_step
        if self.flops_per_step and self.peak_flops:
            values["mfu"] = mfu(self.flops_per_step, values["steps_per_sec"], self.peak_flops)
        self._metrics, self._start = [], time.perf_counter()
        return values


class NonFiniteGuard:
    """Counts steps whose loss or gradient was not finite (`metrics["finite"] == 0`); after
    `max_in_a_row` consecutive ones it saves the (unharmed) state and raises."""

    def __init__(self, max_in_a_row: int):
        if max_in_a_row < 1:
            raise ValueError(f"train.max_nonfinite_steps={max_in_a_row} must be >= 1")
        self.max_in_a_row = max_in_a_row
        self.in_a_row = 0
        self.skipped = 0

    def check(self, metrics: dict[str, Any], step: int, manager: Any, state: Any) -> dict[str, Any]:
        if float(metrics.get("finite", 1.0)) > 0:
            self.in_a_row = 0
            return metrics
        self.in_a_row += 1
        self.skipped += 1
        if self.in_a_row >= self.max_in_a_row:
            from dysen_jax.training import checkpoint

            checkpoint.save(manager, int(step), state, force=True)
            manager.wait_until_finished()
            raise FloatingPointError(
                f"{self.in_a_row} train steps in a row had a non-finite loss or gradient (up to step {step}; each "
                f"was skipped, the params are unharmed and saved). Lower train.learning_rate, check the data, or "
                f"use model.dtype=float32; raise train.max_nonfinite_steps to tolerate more")
        return metrics
