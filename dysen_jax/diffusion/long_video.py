"""VidRD long videos (Gu et al., "Reuse and Diffuse", §4.3, eq. 5-8): clip by clip with one video model.

Clip i has N frames z^{i,0..N-1}; the last M frames of clip i-1 prompt the first M of clip i:

- eq. 5, clip 0: z_T^{0,j} ~ N(0, I).
- eq. 6, Frame-level Noise Reversion (FNR): z_T^{i,j} = z_T^{i-1,N-j-1}, the previous clip's initial
  noise in reversed frame order.
- eq. 7, Past-dependent Noise Sampling (PNS): for j >= M the reversed noise is mixed with fresh noise,
  α/sqrt(1+α²)·z_T^{i-1,N-j-1} + ε, ε ~ N(0, 1/(1+α²)·I) (unit variance kept; α = 0 is fresh noise,
  α -> ∞ is FNR alone). Frames j < M keep the reversed noise.
- eq. 8, Denoising with Staged Guidance: for j < M, the step that produces z_{t-1}^{i,j} copies
  z_{t-1}^{i-1,N-j-1} (the previous clip's latent after the same DDIM step) while
  t > (1-β)T + βTj/M, and is an ordinary DDIM step afterwards. The paper's t runs over 1..T; ours over
  0..T-1, so the test is `t_ours + 1 > ...`. β = 0 never copies; β = 1 copies frame 0 at every step.

The video is the concatenation of the clips, num_clips·N frames: the paper calls z_0^{i,N-1} and
z_0^{i+1,0} "continuous frames", i.e. clip i+1's first frame follows clip i's last one (its first M
frames are *guided by*, not copies of, clip i's last M frames). Each clip costs one ordinary sampling
run (the copy is a `where` inside the same compiled step), so the cost is linear in the clips, and each
clip gets its own denoiser (e.g. the scene graphs of its own time span). Clip 0 is exactly
`samplers.sample` with the same keys.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from dysen_jax.diffusion.samplers import (DenoiseFn, FrameGuide, SamplerSettings, initial_noise, run_sampler,
                                          step_noise_keys)
from dysen_jax.diffusion.schedules import NoiseSchedule


@dataclasses.dataclass(frozen=True)
class VidRDSettings:
    """`num_clips`, M = `prompt_frames`, α = `pns_alpha` (math.inf: FNR alone), β = `staged_beta`;
    `reuse_noise=False` draws every clip's noise afresh (the naive baseline of the benchmark)."""

    num_clips: int = 1
    prompt_frames: int = 4
    pns_alpha: float = 4.0
    staged_beta: float = 0.4
    reuse_noise: bool = True

    def check(self, clip_frames: int) -> None:
        """Clear errors naming the config key for settings that cannot work with N = `clip_frames`."""
        if int(self.num_clips) < 1:
            raise ValueError(f"sample.num_clips must be >= 1, got {self.num_clips!r}")
        if not 0 <= int(self.prompt_frames) <= clip_frames:
            raise ValueError(f"sample.prompt_frames (M) must be in [0, N={clip_frames}] (the clip length), "
                             f"got {self.prompt_frames!r}")
        if not (float(self.pns_alpha) >= 0):
            raise ValueError(f"sample.pns_alpha must be >= 0 (inf = noise reversion only), got {self.pns_alpha!r}")
        if not 0.0 <= float(self.staged_beta) <= 1.0:
            raise ValueError(f"sample.staged_beta must be in [0, 1], got {self.staged_beta!r}")


def reverse_frames(x: jax.Array) -> jax.Array:
    """[B, F, ...] with the frame axis reversed: frame j <- frame F-1-j."""
    return x[:, ::-1]


def pns_coefficients(alpha: float) -> tuple[float, float]:
    """(weight of the reversed noise α/sqrt(1+α²), std of the fresh noise 1/sqrt(1+α²)); their squares
    sum to 1, so unit-variance inputs give a unit-variance mix. α = inf gives (1, 0): FNR alone."""
    if math.isinf(alpha):
        return 1.0, 0.0
    return alpha / math.sqrt(1.0 + alpha * alpha), 1.0 / math.sqrt(1.0 + alpha * alpha)


def next_clip_noise(previous_noise: jax.Array, fresh: jax.Array, prompt_frames: int, alpha: float) -> jax.Array:
    """Eq. 6-7: z_T^i from the previous clip's initial noise z_T^{i-1} [B, N, ...] and standard normal
    `fresh` noise of the same shape (scaled here to variance 1/(1+α²))."""
    weight, std = pns_coefficients(float(alpha))
    reversed_noise = reverse_frames(previous_noise)
    mixed = weight * reversed_noise + std * fresh
    prompt = (jnp.arange(previous_noise.shape[1]) < prompt_frames).reshape((1, -1) + (1,) * (previous_noise.ndim - 2))
    return jnp.where(prompt, reversed_noise, mixed)


def staged_copy_mask(t: int, num_timesteps: int, clip_frames: int, prompt_frames: int, beta: float) -> np.ndarray:
    """Eq. 8: bool [N], frame j copies the previous clip's reversed latent at the step from our t
    (paper t = ours + 1) iff j < M and t + 1 > (1-β)T + βTj/M."""
    j = np.arange(clip_frames)
    threshold = (1.0 - beta) * num_timesteps + beta * num_timesteps * j / max(prompt_frames, 1)
    return (j < prompt_frames) & (t + 1 > threshold)


def staged_guide(previous: list[jax.Array], num_timesteps: int, prompt_frames: int, beta: float) -> FrameGuide:
    """`run_sampler`'s frame guide for eq. 8: at step i, the previous clip's latents after ITS step i
    (`previous[i]`, same timesteps) in reversed frame order, copied where `staged_copy_mask` says."""

    def guide(step: int, t: int) -> tuple[jax.Array, np.ndarray]:
        reference = reverse_frames(previous[step])
        return reference, staged_copy_mask(t, num_timesteps, reference.shape[1], prompt_frames, beta)

    return guide


def clip_keys(keys: jax.Array, clip: int) -> jax.Array:
    """Clip `clip`'s keys: the items' own keys for clip 0 (so clip 0 == `samplers.sample`), fold_in after."""
    return keys if clip == 0 else jax.vmap(lambda k: jax.random.fold_in(k, clip))(keys)


def long_video(denoiser_for_clip: Callable[[int], DenoiseFn], keys: jax.Array, clip_shape: tuple[int, ...],
               schedule: NoiseSchedule, settings: SamplerSettings, vidrd: VidRDSettings,
               progress: bool = False) -> jax.Array:
    """[B, num_clips·N, ...]: clip i sampled with `denoiser_for_clip(i)` from eq. 5-7's noise under eq. 8.

    `clip_shape` = (N, ...) per item; `keys` one per item (`samplers.item_keys`).
    """
    n = int(clip_shape[0])
    vidrd.check(n)
    m, beta = int(vidrd.prompt_frames), float(vidrd.staged_beta)
    staged = beta > 0.0 and m > 0
    clips, noise, trajectory = [], None, None
    bar = tqdm(range(int(vidrd.num_clips)), desc="clips", disable=not progress or vidrd.num_clips == 1)
    for i in bar:
        ck = clip_keys(keys, i)
        fresh = initial_noise(ck, tuple(clip_shape), settings.frame_noise_share)
        noise = fresh if i == 0 or not vidrd.reuse_noise else next_clip_noise(noise, fresh, m, vidrd.pns_alpha)
        guide = staged_guide(trajectory, schedule.num_timesteps, m, beta) if i > 0 and staged else None
        x0, trajectory = run_sampler(denoiser_for_clip(i), noise, step_noise_keys(ck), schedule, settings,
                                     frame_guide=guide, record=staged and i + 1 < vidrd.num_clips,
                                     progress=progress, desc=f"clip {i + 1}/{vidrd.num_clips}")
        clips.append(x0)
    return jnp.concatenate(clips, axis=1)
