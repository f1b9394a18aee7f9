"""Runs a jitted feature extractor over a large array in fixed-size batches (one compile, a progress bar)."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from tqdm.auto import tqdm


def map_batches(fn: Callable[[jax.Array], jax.Array], inputs: np.ndarray, batch_size: int,
                desc: str = "features", progress: bool = True) -> np.ndarray:
    """fn over inputs[i:i + batch_size] -> concatenated numpy outputs (float32).

    The last batch is padded with copies of its first item to the full batch size, so `fn` is
    compiled for one shape only; the padded rows are dropped.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(inputs)
    outputs = []
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress or len(starts) < 2, leave=False):
        batch = np.asarray(inputs[start:start + batch_size])
        real = len(batch)
        if real < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[:1], batch_size - real, axis=0)])
        outputs.append(np.asarray(jax.device_get(fn(batch)), np.float32)[:real])
    return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)
