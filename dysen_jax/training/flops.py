"""Model FLOPs utilisation: the compiled step's FLOPs (XLA cost analysis) against a device peak,
either given (`train.peak_tflops`, e.g. 989 for an H100's bf16 dense) or measured here with a
large matmul (what the benchmarks call "the measured matmul peak of this machine")."""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp


def compiled_flops(compiled: Any) -> float:
    """FLOPs of one call of a compiled (per-device, SPMD-partitioned) program; 0 when XLA gives none."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0))


def measure_matmul_peak(dtype: Any = jnp.float32, size: int = 2048, repeats: int = 5,
                        device: Any = None) -> float:
    """Best-of-`repeats` FLOP/s of a [size, size] x [size, size] matmul on one device."""
    device = device or jax.local_devices()[0]
    a = jax.device_put(jnp.ones((size, size), dtype), device)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best


def peak_flops_per_device(train_cfg: Any) -> float:
    """`train.peak_tflops` in FLOP/s, or the measured float32 matmul peak when it is 0."""
    given = float(train_cfg.get("peak_tflops", 0.0))
    return given * 1e12 if given > 0 else measure_matmul_peak()


def mfu(flops_per_step: float, steps_per_sec: float, peak: float) -> float:
    """Achieved FLOP/s per device over the peak (0 when either is unknown)."""
    return flops_per_step * steps_per_sec / peak if flops_per_step > 0 and peak > 0 else 0.0
