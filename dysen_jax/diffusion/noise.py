"""The diffusion noise prior: i.i.d. N(0, I), or a frame-correlated one whose frames share part of it.

`diffusion.frame_noise_share` = ρ in [0, 1): every element still has unit variance, but the frames of
a clip share the fraction ρ of it, ε_f = √ρ·ε_shared + √(1 − ρ)·ε_f (VideoFusion's base + residual
noise; PYoCo's "mixed" prior with α² = ρ / (1 − ρ)). Why: at high noise a denoiser that barely mixes
frames yet (a small model early in training) still starts every frame from the same layout, so the
frames of a sample agree; the temporal layers only have to learn how frames differ. The prior is a
property of the model: training (q_sample's ε), the held-out loss and every sampler draw (x_T and the
ancestral noise) must use the same ρ, which is why it lives in `config.diffusion`. ρ = 0 draws exactly
`jax.random.normal(key, shape)`, so models trained before the key existed sample as before.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def check_frame_noise_share(share: float, key: str = "diffusion.frame_noise_share", hint: str = "") -> float:
    """`share` as a float, or a ValueError naming the config `key` (and `hint`) when it is not in [0, 1)."""
    value = float(share)
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"{key} must be in [0, 1) (the fraction of the noise variance all frames of a clip "
                         f"share; 0 = independent frames){hint}, got {share!r}")
    return value


def frame_noise(key: jax.Array, shape: tuple[int, ...], share: float, frame_axis: int,
                dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """Unit-variance Gaussian noise of `shape` whose slices along `frame_axis` have correlation `share`."""
    share = check_frame_noise_share(share)
    if share == 0.0:
        return jax.random.normal(key, shape, dtype)
    key_frames, key_shared = jax.random.split(key)
    axis = frame_axis % len(shape)
    shared_shape = tuple(1 if i == axis else n for i, n in enumerate(shape))
    independent = jax.random.normal(key_frames, shape, dtype)
    shared = jax.random.normal(key_shared, shared_shape, dtype)
    return (math.sqrt(share) * shared + math.sqrt(1.0 - share) * independent).astype(dtype)
