"""VidRD long videos (diffusion/long_video.py): eq. 6-8 checked numerically, and clip-by-clip sampling."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from dysen_jax.diffusion import (SamplerSettings, VidRDSettings, item_keys, long_video, make_schedule,
                                 next_clip_noise, pns_coefficients, reverse_frames, sample, staged_copy_mask)

N, M = 8, 4
CLIP = (N, 3, 3, 2)  # [F, H, W, C] per item


def _normal(seed, shape):
    return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


def test_reverse_frames_order():
    x = jnp.arange(2 * N).reshape(2, N)
    np.testing.assert_array_equal(np.asarray(reverse_frames(x))[1], np.arange(2 * N - 1, N - 1, -1))


def test_pns_alpha_zero_fresh_noise_large_alpha_reversed_noise():
    prev, fresh = _normal(0, (2, *CLIP)), _normal(1, (2, *CLIP))
    rev = np.asarray(prev)[:, ::-1]
    z = np.asarray(next_clip_noise(prev, fresh, M, 0.0))
    np.testing.assert_array_equal(z[:, :M], rev[:, :M])              # prompt frames: reversed noise (eq. 7, j < M)
    np.testing.assert_allclose(z[:, M:], np.asarray(fresh)[:, M:])    # alpha 0: fresh noise for j >= M
    z = np.asarray(next_clip_noise(prev, fresh, M, 1e4))
    np.testing.assert_allclose(z, rev, atol=1e-3)                      # large alpha -> reversed noise
    np.testing.assert_array_equal(np.asarray(next_clip_noise(prev, fresh, M, math.inf)), rev)  # FNR, eq. 6


def test_pns_mix_keeps_unit_variance():
    w, s = pns_coefficients(4.0)
    assert w == pytest.approx(4 / math.sqrt(17)) and s == pytest.approx(1 / math.sqrt(17))
    assert w * w + s * s == pytest.approx(1.0)
    prev, fresh = _normal(2, (1, N, 64, 64, 4)), _normal(3, (1, N, 64, 64, 4))
    z = np.asarray(next_clip_noise(prev, fresh, M, 4.0))[:, M:]
    assert abs(z.std() - 1.0) < 0.02 and abs(z.mean()) < 0.02
    corr = np.corrcoef(z.ravel(), np.asarray(prev)[:, ::-1][:, M:].ravel())[0, 1]
    assert corr == pytest.approx(w, abs=0.02)


def test_staged_guidance_mask_is_eq8():
    T = 1000
    for t in (0, 499, 999):
        assert not staged_copy_mask(t, T, N, M, 0.0).any()            # beta 0 never copies
    for t in range(T):
        mask = staged_copy_mask(t, T, N, M, 1.0)
        assert not mask[M:].any()                                     # only prompt frames j < M
        np.testing.assert_array_equal(mask[:M], [t + 1 > T * j / M for j in range(M)])  # paper t = ours + 1
    beta = 0.4
    mask = staged_copy_mask(799, T, N, M, beta)                       # paper t = 800 > 600 + 100 j
    np.testing.assert_array_equal(mask, [True, True, False, False] + [False] * (N - M))
    assert staged_copy_mask(600, T, N, M, beta)[0] and not staged_copy_mask(599, T, N, M, beta)[0]


def _scaled(scale, x, t, use_text, use_dsg):
    return scale * x + 0.02 * use_text[:, None, None, None, None]


def _per_frame_denoiser(clip):
    """ε̂ = a per-frame map of x (no mixing across frames), different per clip (one compiled step for all)."""
    return Partial(_scaled, jnp.float32(0.3 + 0.05 * clip))


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("cosine", 1000)


SETTINGS = SamplerSettings(6, "epsilon", text_guidance=2.0, dsg_guidance=2.0)


def test_three_clips_length_and_first_clip_is_the_single_clip_sample(schedule):
    keys = item_keys([5, 6])
    video = long_video(_per_frame_denoiser, keys, CLIP, schedule, SETTINGS, VidRDSettings(num_clips=3))
    assert video.shape == (2, 3 * N, *CLIP[1:])
    single = sample(_per_frame_denoiser(0), keys, CLIP, schedule, SETTINGS)
    np.testing.assert_array_equal(np.asarray(video[:, :N]), np.asarray(single))
    assert not np.allclose(video[:, N:2 * N], video[:, 2 * N:])


def test_noise_reversion_alone_replays_the_clip_backwards(schedule):
    """FNR (alpha inf, beta 0) with a per-frame denoiser: clip 1 is clip 0 in reverse frame order."""
    same = lambda clip: _per_frame_denoiser(0)  # noqa: E731  (the same denoiser for every clip)
    fnr = VidRDSettings(num_clips=2, pns_alpha=math.inf, staged_beta=0.0)
    video = np.asarray(long_video(same, item_keys([1, 2]), CLIP, schedule, SETTINGS, fnr))
    np.testing.assert_allclose(video[:, N:], video[:, :N][:, ::-1], rtol=1e-6, atol=1e-6)
    naive = np.asarray(long_video(same, item_keys([1, 2]), CLIP, schedule, SETTINGS,
                                  VidRDSettings(num_clips=2, staged_beta=0.0, reuse_noise=False)))
    np.testing.assert_array_equal(naive[:, :N], video[:, :N])
    assert not np.allclose(naive[:, N:], video[:, N:], atol=1e-3)   # fresh noise: another clip


def test_staged_guidance_beta_one_copies_frame_zero_beta_zero_never(schedule):
    """beta 1: frame 0 of clip i copies frame N-1 of clip i-1 at every step, so the joins are equal;
    frame j < M copies only while paper t > T j / M, so frames 1..M-1 differ from their reference."""
    fresh = VidRDSettings(num_clips=3, pns_alpha=0.0, staged_beta=1.0)
    video = np.asarray(long_video(_per_frame_denoiser, item_keys([3, 4]), CLIP, schedule, SETTINGS, fresh))
    for i in (1, 2):
        np.testing.assert_array_equal(video[:, i * N], video[:, i * N - 1])
        assert not np.allclose(video[:, i * N + 1], video[:, i * N - 2])
    no_copy = np.asarray(long_video(_per_frame_denoiser, item_keys([3, 4]), CLIP, schedule, SETTINGS,
                                    VidRDSettings(num_clips=3, pns_alpha=0.0, staged_beta=0.0)))
    assert not np.allclose(no_copy[:, N], no_copy[:, N - 1])
    # Without copying, clip 1 is a plain sample from eq. 7's noise (prompt frames = reversed noise of clip 0).
    np.testing.assert_array_equal(no_copy[:, :N], video[:, :N])


def test_bad_settings_name_the_config_key(schedule):
    for bad, key in ((VidRDSettings(num_clips=0), "num_clips"), (VidRDSettings(prompt_frames=N + 1), "prompt_frames"),
                     (VidRDSettings(pns_alpha=-1.0), "pns_alpha"), (VidRDSettings(staged_beta=1.5), "staged_beta")):
        with pytest.raises(ValueError, match=rf"sample\.{key}"):
            long_video(_per_frame_denoiser, item_keys([0]), CLIP, schedule, SETTINGS, bad)
