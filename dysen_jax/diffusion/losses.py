"""Forward process, prediction targets and the denoising loss (Dysen-VDM eq. 1).

All functions take per-example integer timesteps ``t`` of shape [B] (or a scalar, shared by
the batch) and broadcast the schedule coefficients over any trailing shape, so the same code
serves images [B, H, W, C] and videos [B, F, H, W, C]. Timestep convention: see `schedules`.

Two parameterisations of the model output are supported (``config.diffusion.prediction``):

    "epsilon":  the noise ε                             (DDPM, Stable Diffusion 1.x)
    "v":        v = sqrt(ā_t) ε - sqrt(1 - ā_t) x0      (Salimans & Ho 2022, SD 2.x)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dysen_jax.diffusion.schedules import NoiseSchedule

PREDICTION_KINDS = ("epsilon", "v")


def check_prediction(prediction: str) -> str:
    """Return ``prediction`` if valid, else raise a ValueError naming the config field."""
    if prediction not in PREDICTION_KINDS:
        raise ValueError(
            f"diffusion.prediction must be one of {list(PREDICTION_KINDS)}, got {prediction!r}")
    return prediction


def _coef(values: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
    """values[t] reshaped to [B, 1, ..., 1] so it broadcasts against a rank-``ndim`` array."""
    c = values[jnp.asarray(t, dtype=jnp.int32)]
    return c.reshape(c.shape + (1,) * (ndim - c.ndim))


def check_timestep_shift(shift: float) -> float:
    """Return ``shift`` as a float if it is a finite number > 0, else a ValueError naming the config key."""
    value = float(shift)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"diffusion.timestep_shift must be a finite number > 0 (1 = uniform timesteps), got {shift!r}")
    return value


def shifted_fraction(u: jax.Array | float, shift: float) -> jax.Array:
    """u in [0, 1] -> s·u / (1 + (s - 1)·u) (SD3's timestep shift, Esser et al. 2024 §5.3.2): s > 1 moves
    mass toward 1 (more noise), s = 1 is the identity."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def sample_timesteps(key: jax.Array, batch_size: int, num_timesteps: int, shift: float = 1.0) -> jax.Array:
    """Training timesteps int32 [B] in [0, T-1]: uniform for shift = 1 (`diffusion.timestep_shift`);
    shift s > 1 draws u ~ U(0, 1) and takes t = floor(T·s·u / (1 + (s-1)·u)), so more training goes to
    the noisy steps where a sample's layout and colours are decided (its objects are a few percent of
    the frame, so they are readable in x_t long before single pixels are). s = 3: P(t > 0.8 T) = 43%, not 20%."""
    shift = check_timestep_shift(shift)
    if shift == 1.0:
        return jax.random.randint(key, (batch_size,), 0, num_timesteps, dtype=jnp.int32)
    u = shifted_fraction(jax.random.uniform(key, (batch_size,)), shift)
    return jnp.clip(jnp.floor(u * num_timesteps), 0, num_timesteps - 1).astype(jnp.int32)


def q_sample(schedule: NoiseSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """Sample the forward process: x_t = sqrt(ā_t) x0 + sqrt(1 - ā_t) ε."""
    a = _coef(schedule.sqrt_alphas_cumprod, t, x0.ndim)
    s = _coef(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim)
    return a * x0 + s * noise


def prediction_target(schedule: NoiseSchedule, x0: jax.Array, noise: jax.Array, t: jax.Array,
                      prediction: str) -> jax.Array:
    """What the model is trained to output: ε, or v = sqrt(ā_t) ε - sqrt(1 - ā_t) x0."""
    if check_prediction(prediction) == "epsilon":
        return noise
    a = _coef(schedule.sqrt_alphas_cumprod, t, x0.ndim)
    s = _coef(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim)
    return a * noise - s * x0


def predict_x0_and_eps(schedule: NoiseSchedule, x_t: jax.Array, t: jax.Array,
                       model_output: jax.Array, prediction: str) -> tuple[jax.Array, jax.Array]:
    """Invert the parameterisation: (x̂0, ε̂) from x_t and the model output.

    epsilon: x̂0 = (x_t - sqrt(1-ā) ε̂) / sqrt(ā)
    v:       x̂0 = sqrt(ā) x_t - sqrt(1-ā) v̂,   ε̂ = sqrt(1-ā) x_t + sqrt(ā) v̂
    (v needs no division, which is why it stays well conditioned at ā ≈ 0).
    """
    check_prediction(prediction)
    a = _coef(schedule.sqrt_alphas_cumprod, t, x_t.ndim)
    s = _coef(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)
    if prediction == "epsilon":
        return (x_t - s * model_output) / a, model_output
    return a * x_t - s * model_output, s * x_t + a * model_output


def diffusion_loss(model_output: jax.Array, target: jax.Array,
                   mask: jax.Array | None = None) -> jax.Array:
    """Eq. 1: mean squared error between model output and target, a float32 scalar.

    Without a mask: the mean over all elements. A mask (e.g. [B] valid examples or [B, F] valid
    frames) is aligned with the *leading* axes and broadcast over the rest; the loss is then the
    mean over the selected elements (0 if none is selected).
    """
    sq = jnp.square(model_output.astype(jnp.float32) - target.astype(jnp.float32))
    if mask is None:
        return jnp.mean(sq)
    m = jnp.asarray(mask, dtype=jnp.float32)
    m = jnp.broadcast_to(m.reshape(m.shape + (1,) * (sq.ndim - m.ndim)), sq.shape)
    return jnp.sum(sq * m) / jnp.maximum(jnp.sum(m), 1.0)
