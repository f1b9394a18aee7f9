"""Classifier-free guidance and the DDIM sampler (Song et al. 2021), pure JAX.

The denoiser is any pure function of arrays

    denoise_fn(x: [B, ...] float, t: [B] int32, use_cond: [B] bool) -> model output [B, ...]

where ``use_cond[i] = False`` asks for the unconditional prediction (text and DSG dropped, the
same switch that classifier-free-guidance dropout uses in training). It may close over params,
e.g. ``lambda x, t, c: model.apply(params, x, t, ..., use_text=c, use_dsg=c)``, or be a
`jax.tree_util.Partial` (``Partial(apply_fn, params)``): then the params are passed to the
compiled step as arguments rather than baked in as constants, and the compiled step is reused by
every `ddim_sample` call with the same ``apply_fn`` (a fresh lambda per call recompiles once).

Timesteps follow `schedules`: t in [0, T-1], t = 0 least noisy; ``t_prev = -1`` is clean data.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial
from tqdm.auto import tqdm

from dysen_jax.diffusion.losses import check_prediction, predict_x0_and_eps
from dysen_jax.diffusion.schedules import NoiseSchedule

DenoiseFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def _is_static_value(value: object, target: float) -> bool:
    """True when ``value`` is a Python number (not a traced array) equal to ``target``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value) == target


def guided_output(denoise_fn: DenoiseFn, x_t: jax.Array, t: jax.Array,
                  guidance_scale: float | jax.Array) -> jax.Array:
    """Classifier-free guidance: uncond + s·(cond − uncond).

    Conditional and unconditional predictions come from ONE denoiser call on the batch
    [x_t; x_t] with use_cond = [True; False] (one pass over the weights, full device use).
    A Python scale of exactly 1 is the conditional prediction alone, so only that is computed.
    """
    b = x_t.shape[0]
    t = jnp.broadcast_to(jnp.asarray(t, dtype=jnp.int32), (b,))
    if _is_static_value(guidance_scale, 1.0):
        return denoise_fn(x_t, t, jnp.ones((b,), dtype=bool))
    out = denoise_fn(jnp.concatenate([x_t, x_t], axis=0), jnp.concatenate([t, t], axis=0),
                     jnp.concatenate([jnp.ones((b,), bool), jnp.zeros((b,), bool)], axis=0))
    cond, uncond = out[:b], out[b:]
    return uncond + jnp.asarray(guidance_scale, dtype=out.dtype) * (cond - uncond)


def ddim_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
    """The DDIM timesteps, int32 [num_steps], strictly descending, "trailing" spacing.

    t_i = round(T - i·T/num_steps) - 1, so the first step is always T - 1 (the noisiest
    step, the one whose ā is closest to the pure-noise x_T ~ N(0, I) the sampler starts from)
    and the last is T/num_steps - 1 (Lin et al. 2024, "Common diffusion noise schedules and
    sample steps are flawed", Table 2). With num_steps = T it is every step T-1 … 0.
    """
    if not 1 <= int(num_steps) <= int(num_timesteps):
        raise ValueError(
            f"sample.steps must be in [1, diffusion.num_timesteps={num_timesteps}], got {num_steps!r}")
    i = np.arange(num_steps, dtype=np.float64)
    return (np.floor(num_timesteps - i * num_timesteps / num_steps + 0.5) - 1).astype(np.int32)


def _alpha_bar(schedule: NoiseSchedule, t: jax.Array, ndim: int) -> jax.Array:
    """ā_t reshaped to broadcast over a rank-``ndim`` array; ā = 1 (clean data) for t < 0."""
    t = jnp.asarray(t, dtype=jnp.int32)
    a = jnp.where(t >= 0, schedule.alphas_cumprod[jnp.maximum(t, 0)], 1.0)
    return a.reshape(a.shape + (1,) * (ndim - a.ndim))


def ddim_step(schedule: NoiseSchedule, x_t: jax.Array, t: jax.Array, t_prev: jax.Array,
              model_output: jax.Array, prediction: str, eta: float | jax.Array,
              noise: jax.Array | None, clip_x0: float | None = None) -> jax.Array:
    """One DDIM update x_t -> x_{t_prev} (eq. 12 of Song et al.), t and t_prev scalar or [B].

        σ = η·sqrt((1-ā_prev)/(1-ā_t))·sqrt(1-ā_t/ā_prev)
        x_prev = sqrt(ā_prev)·x̂0 + sqrt(1-ā_prev-σ²)·ε̂ + σ·noise

    η = 0 is deterministic (``noise`` may then be None); η = 1 is DDPM-like ancestral
    sampling. ``t_prev = -1`` is the final step: ā_prev = 1, so x_prev = x̂0 exactly.
    With ``clip_x0`` the prediction x̂0 is clipped to [-clip_x0, clip_x0] and ε̂ recomputed
    from it (as guided-diffusion does), so the update stays consistent with x_t.
    """
    x0, eps = predict_x0_and_eps(schedule, x_t, t, model_output, prediction)
    a_t = _alpha_bar(schedule, t, x_t.ndim)
    a_prev = _alpha_bar(schedule, t_prev, x_t.ndim)
    if clip_x0 is not None:
        x0 = jnp.clip(x0, -clip_x0, clip_x0)
        eps = (x_t - jnp.sqrt(a_t) * x0) / jnp.sqrt(1.0 - a_t)
    sigma = eta * jnp.sqrt((1.0 - a_prev) / (1.0 - a_t)) * jnp.sqrt(1.0 - a_t / a_prev)
    x_prev = jnp.sqrt(a_prev) * x0 + jnp.sqrt(jnp.maximum(1.0 - a_prev - sigma**2, 0.0)) * eps
    if noise is not None:
        x_prev = x_prev + sigma * noise
    return x_prev.astype(x_t.dtype)


@functools.partial(jax.jit, static_argnames=("prediction", "guided", "stochastic", "clip_x0"))
def _sample_step(denoise_fn: Partial, schedule: NoiseSchedule, x: jax.Array, t: jax.Array,
                 t_prev: jax.Array, key: jax.Array, guidance_scale: jax.Array, eta: jax.Array, *,
                 prediction: str, guided: bool, stochastic: bool,
                 clip_x0: float | None) -> jax.Array:
    """One compiled sampler step: guided denoiser call + DDIM update (t, t_prev traced)."""
    b = x.shape[0]
    t_b = jnp.full((b,), t, dtype=jnp.int32)
    out = guided_output(denoise_fn, x, t_b, guidance_scale if guided else 1.0)
    noise = jax.random.normal(key, x.shape, x.dtype) if stochastic else None
    return ddim_step(schedule, x, t_b, jnp.full((b,), t_prev, dtype=jnp.int32), out, prediction,
                     eta, noise, clip_x0)


def ddim_sample(denoise_fn: DenoiseFn, shape: tuple[int, ...], key: jax.Array,
                schedule: NoiseSchedule, num_steps: int, prediction: str,
                guidance_scale: float = 1.0, eta: float = 0.0, clip_x0: float | None = None,
                progress: bool = False) -> jax.Array:
    """Sample x0 of ``shape`` (batch first) with DDIM + classifier-free guidance.

    x_T ~ N(0, I) and the per-step noise come from ``key`` only, so a key gives the same result
    every time. The step is jitted once (t, t_prev, scale and η are traced arguments) and a
    Python loop calls it per timestep, which lets ``progress=True`` show a tqdm bar and keeps
    memory flat; a scale of exactly 1.0 skips the unconditional half of the batch.
    """
    check_prediction(prediction)
    timesteps = ddim_timesteps(schedule.num_timesteps, num_steps)
    prev_timesteps = np.append(timesteps[1:], np.int32(-1)).astype(np.int32)
    fn = denoise_fn if isinstance(denoise_fn, Partial) else Partial(denoise_fn)
    static = dict(prediction=prediction, guided=not _is_static_value(guidance_scale, 1.0),
                  stochastic=not _is_static_value(eta, 0.0), clip_x0=clip_x0)
    scale = jnp.asarray(guidance_scale, dtype=jnp.float32)
    eta_arr = jnp.asarray(eta, dtype=jnp.float32)
    init_key, loop_key = jax.random.split(key)
    x = jax.random.normal(init_key, shape, dtype=jnp.float32)
    step_keys = jax.random.split(loop_key, len(timesteps))
    for i in tqdm(range(len(timesteps)), desc="DDIM", disable=not progress):
        x = _sample_step(fn, schedule, x, timesteps[i], prev_timesteps[i], step_keys[i], scale,
                         eta_arr, **static)
    return x
