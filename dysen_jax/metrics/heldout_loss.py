"""Held-out denoising loss: the training objective (eq. 1) on real evaluation clips, conditioned on
their captions and plans, at a fixed grid of timesteps with fixed noise.

Why: sample metrics (TriRec, FVD) need a model good enough to render parseable videos; this number
compares conditioning variants (Table 4's rows) long before that. Lower = the model explains the
held-out clips better given what it is conditioned on. The noise of clip i depends on (seed, i)
only, so every run of a table sees the same x_t: differences between rows are paired, not noise.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dysen_jax.diffusion.losses import diffusion_loss, prediction_target, q_sample
from dysen_jax.diffusion.noise import frame_noise

NUM_TIMESTEPS = 8   # t_k = (k + 1/2) T / K, k < K: the whole noise range, equally weighted


def timestep_grid(num_timesteps: int, points: int = NUM_TIMESTEPS) -> np.ndarray:
    """int32 [points]: the centres of `points` equal slices of [0, num_timesteps)."""
    return ((np.arange(points) + 0.5) * num_timesteps / points).astype(np.int32)


def clip_noise(seed: int, index: int, shape: tuple[int, ...], frame_noise_share: float = 0.0) -> jax.Array:
    """The fixed noise of evaluation clip `index` [points, *shape] (shape = frames first), from the
    model's noise prior (`diffusion.frame_noise_share`)."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), index)
    return frame_noise(key, (NUM_TIMESTEPS, *shape), frame_noise_share, 1)


_CLIP_LOSSES: dict[int, tuple[weakref.ref, Callable]] = {}


def clip_losses_fn(experiment: Any) -> Callable:
    """The jitted losses of one clip at the timestep grid under `experiment`'s model:
    (params, video uint8 [F, H, W, 3], tokens, dsg, noise, use_text, use_dsg, reverse_frames) -> [points].
    Made once per experiment, with the switches as traced booleans, so a benchmark's rows and conditions
    share one trace and one compile instead of paying both per call."""
    cached = _CLIP_LOSSES.get(id(experiment))
    if cached is not None and cached[0]() is experiment:
        return cached[1]
    schedule, model, codec = experiment.schedule, experiment.model, experiment.codec
    prediction = str(experiment.config.diffusion.prediction)
    grid = jnp.asarray(timestep_grid(schedule.num_timesteps))

    @jax.jit
    def clip_losses(params: Any, video: jax.Array, tokens: jax.Array, dsg: dict[str, jax.Array], noise: jax.Array,
                    use_text: jax.Array, use_dsg: jax.Array, reverse_frames: jax.Array) -> jax.Array:
        x0 = video.astype(jnp.float32)[None] / 127.5 - 1.0
        x0 = jnp.where(reverse_frames, x0[:, ::-1], x0)
        if codec is not None:
            x0 = codec.encode(codec.params, x0, None)
        x0 = jnp.repeat(x0, NUM_TIMESTEPS, axis=0)
        x_t = q_sample(schedule, x0, grid, noise)
        tile = lambda a: jnp.repeat(a, NUM_TIMESTEPS, axis=0)
        keep = jnp.ones((NUM_TIMESTEPS,), bool)
        out = model.apply({"params": params}, x_t, grid, tile(tokens), {k: tile(v) for k, v in dsg.items()},
                          use_text=keep & use_text, use_dsg=keep & use_dsg, deterministic=True)
        return jax.vmap(diffusion_loss)(out, prediction_target(schedule, x0, noise, grid, prediction))

    _CLIP_LOSSES.clear()  # one experiment at a time in practice; never keep dead ones' programs alive
    _CLIP_LOSSES[id(experiment)] = (weakref.ref(experiment), clip_losses)
    return clip_losses


def heldout_loss(experiment: Any, params: Any, videos: np.ndarray, prompts: Sequence[str], plans: Sequence[Any],
                 seed: int = 0, use_text: bool = True, use_dsg: bool = True) -> float:
    """Mean eq. 1 loss of uint8 clips [N, F, H, W, 3] over the timestep grid, with the text and the DSG
    kept or replaced by their learned nulls (`use_text`, `use_dsg`: how much the model uses each)."""
    return float(np.mean(heldout_loss_per_timestep(experiment, params, videos, prompts, plans, seed, use_text,
                                                   use_dsg)))


def heldout_loss_per_timestep(experiment: Any, params: Any, videos: np.ndarray, prompts: Sequence[str],
                              plans: Sequence[Any], seed: int = 0, use_text: bool = True, use_dsg: bool = True,
                              reverse_frames: bool = False) -> np.ndarray:
    """float64 [NUM_TIMESTEPS]: heldout_loss at each point of `timestep_grid`, averaged over the clips.
    `reverse_frames` plays every clip backwards (same conditions, same noise): how much the model
    cares which way time runs (benchmarks/temporal_use.py)."""
    from dysen_jax.sample import condition_arrays

    if len(videos) != len(prompts) or len(prompts) != len(plans):
        raise ValueError(f"heldout_loss: {len(videos)} clips, {len(prompts)} prompts and {len(plans)} plans")
    clip_losses = clip_losses_fn(experiment)
    flags = tuple(jnp.asarray(bool(v)) for v in (use_text, use_dsg, reverse_frames))
    losses = []
    for i, (video, prompt, plan) in enumerate(zip(videos, prompts, plans)):
        tokens, dsg = condition_arrays(experiment, [prompt], [plan])
        noise = clip_noise(seed, i, experiment.input_shape,
                           float(experiment.config.diffusion.get("frame_noise_share", 0.0)))
        losses.append(np.asarray(clip_losses(params, jnp.asarray(video), tokens, dsg, noise, *flags), np.float64))
    return np.mean(losses, axis=0)
