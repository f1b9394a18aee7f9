"""DDIM and DDPM ancestral sampling with compositional classifier-free guidance (text, DSG), pure JAX.

The denoiser is any pure function of arrays

    denoise_fn(x: [B, ...], t: [B] int32, use_text: [B] bool, use_dsg: [B] bool) -> model output [B, ...]

where ``use_text[i] = False`` asks for the unconditional text (the learned null, or a negative prompt
when the denoiser holds one) and ``use_dsg[i] = False`` for the null scene graph: the switches that
condition dropout uses in training. It may close over params, or be a `jax.tree_util.Partial`
(``Partial(apply_fn, params, conditions)``): then params and conditions are arguments of the compiled
step rather than constants, so a new prompt (same shapes) reuses the compiled step.

Guidance is compositional (Liu et al. 2022, "Compositional visual generation"), text first, then the
scene graph given the text:

    ε̂ = ε(∅,∅) + s_text·(ε(y,∅) − ε(∅,∅)) + s_dsg·(ε(y,G) − ε(y,∅))

so (1, 1) is the conditional prediction ε(y,G), and s_text = s_dsg = s is classic guidance with both
conditions dropped together. Only the branches a setting needs are computed, in ONE denoiser call on
the stacked batch. Timesteps follow `schedules`: t in [0, T-1], t = 0 least noisy; t_prev = -1 is clean.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial
from tqdm.auto import tqdm

from dysen_jax.diffusion.losses import check_prediction, predict_x0_and_eps
from dysen_jax.diffusion.noise import check_frame_noise_share, frame_noise
from dysen_jax.diffusion.schedules import NoiseSchedule

DenoiseFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
SAMPLER_KINDS = ("ddim", "ddpm")
Branch = tuple[bool, bool]  # (use_text, use_dsg)
UNCOND, TEXT, FULL = (False, False), (True, False), (True, True)


def _as_float(value: object) -> float | None:
    """A Python number as float; None for traced / array values (their pattern is unknown statically)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def guidance_branches(text_scale: float | jax.Array, dsg_scale: float | jax.Array) -> tuple[Branch, ...]:
    """The (use_text, use_dsg) denoiser branches that guidance with these scales needs.

    (1, 1): only ε(y,G). s_text = s_dsg: ε(∅,∅), ε(y,G). s_text = 1: ε(y,∅), ε(y,G). Else all three
    (also whenever a scale is a traced array, whose value is unknown when compiling).
    """
    s_text, s_dsg = _as_float(text_scale), _as_float(dsg_scale)
    if s_text is None or s_dsg is None:
        return (FULL, TEXT, UNCOND)
    if s_text == 1.0 and s_dsg == 1.0:
        return (FULL,)
    if s_text == s_dsg:
        return (FULL, UNCOND)
    if s_text == 1.0:
        return (FULL, TEXT)
    return (FULL, TEXT, UNCOND)


def combine_guidance(outputs: dict[Branch, jax.Array], text_scale: jax.Array, dsg_scale: jax.Array) -> jax.Array:
    """ε(∅,∅) + s_text·(ε(y,∅) − ε(∅,∅)) + s_dsg·(ε(y,G) − ε(y,∅)) from the branches `guidance_branches`
    chose (a missing ε(y,∅) or ε(∅,∅) is one the formula does not need for those scales)."""
    full = outputs[FULL]
    s_text = jnp.asarray(text_scale, full.dtype)
    s_dsg = jnp.asarray(dsg_scale, full.dtype)
    if len(outputs) == 1:
        return full
    if TEXT not in outputs:      # s_text == s_dsg
        uncond = outputs[UNCOND]
        return uncond + s_dsg * (full - uncond)
    text = outputs[TEXT]
    if UNCOND not in outputs:    # s_text == 1
        return text + s_dsg * (full - text)
    uncond = outputs[UNCOND]
    return uncond + s_text * (text - uncond) + s_dsg * (full - text)


def guided_output(denoise_fn: DenoiseFn, x_t: jax.Array, t: jax.Array, text_scale: float | jax.Array,
                  dsg_scale: float | jax.Array, branches: tuple[Branch, ...] | None = None) -> jax.Array:
    """Compositional classifier-free guidance (module docstring) with one denoiser call on the batch of
    the needed branches stacked, branch-major: [x_t; x_t; ...] (a single pass over the weights)."""
    b = x_t.shape[0]
    branches = branches or guidance_branches(text_scale, dsg_scale)
    k = len(branches)
    t = jnp.broadcast_to(jnp.asarray(t, dtype=jnp.int32), (b,))
    use_text = jnp.repeat(jnp.asarray([br[0] for br in branches]), b)
    use_dsg = jnp.repeat(jnp.asarray([br[1] for br in branches]), b)
    stacked = x_t if k == 1 else jnp.concatenate([x_t] * k, axis=0)
    out = denoise_fn(stacked, jnp.tile(t, k), use_text, use_dsg)
    outputs = {br: out[i * b:(i + 1) * b] for i, br in enumerate(branches)}
    return combine_guidance(outputs, text_scale, dsg_scale)


def ddim_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
    """The sampler's timesteps, int32 [num_steps], strictly descending, "trailing" spacing.

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

    η = 0 is deterministic (``noise`` may then be None). η = 1 is exactly DDPM ancestral sampling
    over the same (possibly strided) timesteps: mean and variance are those of the posterior
    q(x_prev | x_t, x̂0) with β' = 1 - ā_t/ā_prev (DDPM's "fixed small" variance; tested against
    that formula). ``t_prev = -1`` is the final step: ā_prev = 1, so x_prev = x̂0 exactly.
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


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """How to sample: `sampler` ddim | ddpm (ancestral, = DDIM with η = 1), `num_steps` of the
    trailing spacing, `eta` (DDIM only), guidance scales, the x̂0 clip (None = none), and the noise
    prior (`frame_noise_share`, diffusion/noise.py): the one the model was trained with unless
    `sample.frame_noise_share` says otherwise (`sampling_noise_share`)."""

    num_steps: int
    prediction: str
    sampler: str = "ddim"
    eta: float = 0.0
    text_guidance: float = 1.0
    dsg_guidance: float = 1.0
    clip_x0: float | None = None
    frame_noise_share: float = 0.0

    def __post_init__(self) -> None:
        check_frame_noise_share(self.frame_noise_share)
        if self.sampler not in SAMPLER_KINDS:
            raise ValueError(f"sample.sampler must be one of {list(SAMPLER_KINDS)}, got {self.sampler!r}")
        check_prediction(self.prediction)
        for name in ("eta", "text_guidance", "dsg_guidance"):
            value = getattr(self, name)
            if not math.isfinite(float(value)) or float(value) < 0:
                raise ValueError(f"sample.{name} must be a finite number >= 0, got {value!r}")

    @property
    def effective_eta(self) -> float:
        return 1.0 if self.sampler == "ddpm" else float(self.eta)

    @classmethod
    def from_config(cls, config: Any, clip_x0: float | None = None, **overrides: Any) -> "SamplerSettings":
        """From `config.sample` / `config.diffusion`; without a DSG branch the DSG scale is the text
        scale, so guidance needs 2 branches, not 3 (ε(y,G) = ε(y,∅) when no DSG reaches the model)."""
        sample = config.sample
        values = dict(num_steps=int(sample.steps), prediction=str(config.diffusion.prediction),
                      sampler=str(sample.get("sampler", "ddim")), eta=float(sample.eta),
                      text_guidance=float(sample.guidance),
                      dsg_guidance=float(sample.get("dsg_guidance", sample.guidance)), clip_x0=clip_x0,
                      frame_noise_share=sampling_noise_share(config))
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not config.model.use_dsg:
            values["dsg_guidance"] = values["text_guidance"]
        return cls(**values)


def sampling_noise_share(config: Any) -> float:
    """The sampler's noise prior: `sample.frame_noise_share`, or the trained `diffusion.frame_noise_share`
    when that key is negative or absent. More shared noise than the model was trained with is off its
    training distribution, but keeps the frames' layout together when its temporal layers are weak."""
    trained = float(config.diffusion.get("frame_noise_share", 0.0))
    value = config.sample.get("frame_noise_share", -1.0)
    if value is None or float(value) < 0:
        return trained
    return check_frame_noise_share(value, "sample.frame_noise_share",
                                   f", or -1 for the trained diffusion.frame_noise_share={trained}")


@functools.partial(jax.jit, static_argnames=("prediction", "branches", "stochastic", "clip_x0", "staged",
                                             "noise_share"))
def _sample_step(denoise_fn: Partial, schedule: NoiseSchedule, x: jax.Array, t: jax.Array,
                 t_prev: jax.Array, step: jax.Array, step_keys: jax.Array, text_scale: jax.Array,
                 dsg_scale: jax.Array, eta: jax.Array, reference: jax.Array | None,
                 copy_frames: jax.Array | None, *, prediction: str, branches: tuple[Branch, ...],
                 stochastic: bool, clip_x0: float | None, staged: bool, noise_share: float = 0.0) -> jax.Array:
    """One compiled sampler step: guided denoiser call, DDIM/DDPM update, and (``staged``) the frames
    where ``copy_frames[f]`` is True replaced by ``reference`` (VidRD's staged guidance, eq. 8)."""
    b = x.shape[0]
    t_b = jnp.full((b,), t, dtype=jnp.int32)
    out = guided_output(denoise_fn, x, t_b, text_scale, dsg_scale, branches)
    noise = None
    if stochastic:  # each item's noise from its own key: a result does not depend on its batch-mates
        noise = jax.vmap(lambda k: frame_noise(jax.random.fold_in(k, step), x.shape[1:], noise_share, 0, x.dtype)
                         )(step_keys)
    x_prev = ddim_step(schedule, x, t_b, jnp.full((b,), t_prev, dtype=jnp.int32), out, prediction, eta, noise,
                       clip_x0)
    if staged:
        mask = copy_frames.reshape((1, -1) + (1,) * (x.ndim - 2))
        x_prev = jnp.where(mask, reference.astype(x.dtype), x_prev)
    return x_prev


def item_keys(seeds: list[int] | np.ndarray) -> jax.Array:
    """One PRNG key per batch item from its seed, [B, 2]: item b's sample depends on seeds[b] only."""
    return jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])


def initial_noise(keys: jax.Array, item_shape: tuple[int, ...], frame_noise_share: float = 0.0) -> jax.Array:
    """x_T [B, *item_shape] from the noise prior (N(0, I) for share 0; frames = axis 0 of an item),
    item b drawn from the first half of split(keys[b])."""
    return jax.vmap(lambda k: frame_noise(jax.random.split(k)[0], item_shape, frame_noise_share, 0))(keys)


def step_noise_keys(keys: jax.Array) -> jax.Array:
    """The keys of the per-step noise (ancestral / η > 0): the second half of split(keys[b])."""
    return jax.vmap(lambda k: jax.random.split(k)[1])(keys)


FrameGuide = Callable[[int, int], "tuple[jax.Array, np.ndarray] | None"]


def run_sampler(denoise_fn: DenoiseFn, x_T: jax.Array, noise_keys: jax.Array, schedule: NoiseSchedule,
                settings: SamplerSettings, frame_guide: FrameGuide | None = None, record: bool = False,
                progress: bool = False, desc: str = "denoise") -> tuple[jax.Array, list[jax.Array] | None]:
    """Denoises x_T [B, F, ...] to x0 with `settings`; returns (x0, the x after each step when `record`).

    The step is jitted once per (branches, stochastic, staged) pattern: t, scales, η, params and
    conditions are traced, and a Python loop calls it per timestep (a tqdm bar with `progress`, flat
    memory). ``frame_guide(i, t)`` -> (reference [B, F, ...], copy mask [F] bool) replaces the masked
    frames of the step's result by the reference (long_video.py's staged guidance).
    """
    timesteps = ddim_timesteps(schedule.num_timesteps, settings.num_steps)
    prev_timesteps = np.append(timesteps[1:], np.int32(-1)).astype(np.int32)
    fn = denoise_fn if isinstance(denoise_fn, Partial) else Partial(denoise_fn)
    eta = settings.effective_eta
    static = dict(prediction=settings.prediction,
                  branches=guidance_branches(settings.text_guidance, settings.dsg_guidance),
                  stochastic=eta != 0.0, clip_x0=settings.clip_x0, staged=frame_guide is not None,
                  noise_share=float(settings.frame_noise_share))
    scales = (jnp.float32(settings.text_guidance), jnp.float32(settings.dsg_guidance), jnp.float32(eta))
    x, trajectory = x_T, ([] if record else None)
    for i in tqdm(range(len(timesteps)), desc=desc, disable=not progress, leave=False):
        reference, copy_frames = frame_guide(i, int(timesteps[i])) if frame_guide is not None else (None, None)
        x = _sample_step(fn, schedule, x, timesteps[i], prev_timesteps[i], np.int32(i), noise_keys, *scales,
                         reference, None if copy_frames is None else jnp.asarray(copy_frames), **static)
        if record:
            trajectory.append(x)
    return x, trajectory


def sample(denoise_fn: DenoiseFn, keys: jax.Array, item_shape: tuple[int, ...], schedule: NoiseSchedule,
           settings: SamplerSettings, progress: bool = False) -> jax.Array:
    """x0 [B, *item_shape] for one key per item (`item_keys`): x_T and the per-step noise of item b come
    from keys[b] only, so the same key gives the same result every time, in any batch."""
    x0, _ = run_sampler(denoise_fn, initial_noise(keys, item_shape, settings.frame_noise_share), step_noise_keys(keys),
                        schedule, settings,
                        progress=progress)
    return x0
