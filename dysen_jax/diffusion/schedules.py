"""Noise schedules for the forward diffusion process (DDPM / Stable Diffusion / improved DDPM).

Timestep convention (used everywhere in `dysen_jax.diffusion`): an integer ``t`` in
``[0, T-1]`` indexes the schedule arrays directly, and ``t = 0`` is the *least* noisy step:

    alphas_cumprod[t] = prod_{i <= t} (1 - betas[i])        (ā_t, strictly decreasing in t)
    x_t = sqrt(ā_t) x0 + sqrt(1 - ā_t) ε

so even ``t = 0`` adds a little noise (ā_0 = 1 - β_0 < 1), and "clean data" (ā = 1) is not a
timestep; DDIM reaches it with the sentinel ``t_prev = -1`` (see `samplers.ddim_step`). This is
the convention of the diffusers / CompVis code, so converted Stable Diffusion weights see the
same t they were trained with.

The arrays are computed in float64 numpy (the cumulative product of 1000 factors loses
precision in float32) and stored as float32 jnp arrays.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

SCHEDULE_KINDS = ("linear", "scaled_linear", "cosine")
MAX_BETA = 0.999  # clip as in improved DDPM: a beta of 1 would make ā_{T-1} = 0 exactly.


@struct.dataclass
class NoiseSchedule:
    """Per-timestep diffusion coefficients, each a float32 array of shape [T].

    A pytree (``num_timesteps`` is static metadata), so it can be passed straight into
    `jax.jit`-ed functions as an argument instead of being baked in as constants.
    """

    betas: jax.Array
    alphas_cumprod: jax.Array
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    num_timesteps: int = struct.field(pytree_node=False)


def linear_betas(num_timesteps: int) -> np.ndarray:
    """DDPM linear betas 1e-4 .. 0.02 for T = 1000, rescaled by 1000 / T for other T.

    The rescaling (improved DDPM) keeps the total noise roughly independent of T; betas are
    clipped at `MAX_BETA` so very small T still gives a valid process.
    """
    scale = 1000.0 / num_timesteps
    betas = np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
    return np.clip(betas, 0.0, MAX_BETA)


def scaled_linear_betas(num_timesteps: int) -> np.ndarray:
    """Stable Diffusion betas: linear in sqrt(beta) from sqrt(0.00085) to sqrt(0.012)."""
    return np.linspace(math.sqrt(0.00085), math.sqrt(0.012), num_timesteps, dtype=np.float64) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal cosine schedule: ā(t) = f(t) / f(0), f(t) = cos²(((t/T + s)/(1 + s))·π/2).

    betas[i] = 1 - ā(i+1)/ā(i), clipped at `MAX_BETA` (the last ones would otherwise reach 1).
    """
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    f = np.cos((steps + s) / (1.0 + s) * math.pi / 2.0) ** 2
    return np.clip(1.0 - f[1:] / f[:-1], 0.0, MAX_BETA)


_BETA_FNS = {"linear": linear_betas, "scaled_linear": scaled_linear_betas, "cosine": cosine_betas}


def make_schedule(kind: str, num_timesteps: int) -> NoiseSchedule:
    """Build the `NoiseSchedule` named by ``config.diffusion.schedule`` with T timesteps."""
    if kind not in _BETA_FNS:
        raise ValueError(
            f"diffusion.schedule must be one of {list(SCHEDULE_KINDS)}, got {kind!r}")
    if int(num_timesteps) < 1:
        raise ValueError(f"diffusion.num_timesteps must be >= 1, got {num_timesteps!r}")
    betas = _BETA_FNS[kind](int(num_timesteps))
    alphas_cumprod = np.cumprod(1.0 - betas)
    as32 = lambda a: jnp.asarray(a, dtype=jnp.float32)  # noqa: E731
    return NoiseSchedule(
        betas=as32(betas),
        alphas_cumprod=as32(alphas_cumprod),
        sqrt_alphas_cumprod=as32(np.sqrt(alphas_cumprod)),
        sqrt_one_minus_alphas_cumprod=as32(np.sqrt(1.0 - alphas_cumprod)),
        num_timesteps=int(num_timesteps),
    )
