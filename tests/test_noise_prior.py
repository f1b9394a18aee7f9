"""The frame-correlated noise prior (diffusion/noise.py) in training, the held-out loss and sampling."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dysen_jax.diffusion import SamplerSettings, initial_noise, item_keys, make_schedule, sample
from dysen_jax.diffusion.noise import frame_noise
from dysen_jax.metrics.heldout_loss import clip_noise
from dysen_jax.training.step import draw_randomness


def frame_correlation(noise: np.ndarray, frame_axis: int) -> tuple[float, float, float]:
    """(variance, correlation of frame 0 with frame 1, correlation of pixel 0 with pixel 1 inside frames)."""
    x = np.moveaxis(np.asarray(noise, np.float64), frame_axis, 0).reshape(noise.shape[frame_axis], -1)
    between = np.corrcoef(x[0], x[1])[0, 1]
    within = np.corrcoef(x[:, 0::2].ravel(), x[:, 1::2].ravel())[0, 1]
    return float(x.var()), float(between), float(within)


def test_share_zero_is_plain_normal_and_share_sets_the_frame_correlation():
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(frame_noise(key, (4, 6, 8, 8, 3), 0.0, 1), jax.random.normal(key, (4, 6, 8, 8, 3)))
    for share in (0.25, 0.5, 0.9):
        variance, between, within = frame_correlation(frame_noise(key, (2, 64, 64, 3, 8), share, 0), 0)
        assert variance == pytest.approx(1.0, abs=0.03)
        assert between == pytest.approx(share, abs=0.03)
        assert abs(within) < 0.03   # only frames share: pixels stay independent


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), 2])
def test_bad_share_names_the_key(bad):
    with pytest.raises(ValueError, match=r"diffusion\.frame_noise_share must be in \[0, 1\)"):
        frame_noise(jax.random.PRNGKey(0), (2, 3), bad, 0)
    with pytest.raises(ValueError, match="frame_noise_share"):
        SamplerSettings(4, "v", frame_noise_share=bad)


def test_training_and_heldout_noise_follow_the_config():
    cfg = ml_collections.ConfigDict({"text_drop_prob": 0.1, "dsg_drop_prob": 0.1, "frame_noise_share": 0.6})
    draws = draw_randomness(jax.random.PRNGKey(0), jnp.zeros((16, 2, 32, 32, 3)), 1000, cfg)
    assert frame_correlation(np.asarray(draws["noise"]), 1)[1] == pytest.approx(0.6, abs=0.05)
    cfg.frame_noise_share = 0.0
    assert abs(frame_correlation(np.asarray(draw_randomness(jax.random.PRNGKey(0), jnp.zeros((16, 2, 32, 32, 3)),
                                                            1000, cfg)["noise"]), 1)[1]) < 0.05
    fixed = clip_noise(0, 1, (2, 48, 48, 3), 0.6)   # [timestep points, F, H, W, C]
    assert frame_correlation(np.asarray(fixed), 1)[1] == pytest.approx(0.6, abs=0.05)
    np.testing.assert_array_equal(fixed, clip_noise(0, 1, (2, 48, 48, 3), 0.6))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_samplers_draw_x_T_and_the_ancestral_noise_from_the_prior(sampler):
    schedule = make_schedule("cosine", 1000)
    zero_eps = lambda x, t, text_on, dsg_on: jnp.zeros_like(x)   # x0-hat and every update are linear in the noise
    keys = item_keys([0, 1, 2, 3])
    for share in (0.0, 0.7):
        settings = SamplerSettings(6, "epsilon", sampler=sampler, frame_noise_share=share)
        x_T = initial_noise(keys, (2, 32, 32, 3), share)
        assert frame_correlation(np.asarray(x_T), 1)[1] == pytest.approx(share, abs=0.04)
        x0 = sample(zero_eps, keys, (2, 32, 32, 3), schedule, settings)
        _, between, _ = frame_correlation(np.asarray(x0), 1)
        assert between == pytest.approx(share, abs=0.04)
    cfg = ml_collections.ConfigDict({"sample": {"steps": 5, "eta": 0.0, "guidance": 1.0},
                                     "diffusion": {"prediction": "v", "frame_noise_share": 0.3},
                                     "model": {"use_dsg": True}})
    assert SamplerSettings.from_config(cfg).frame_noise_share == 0.3


def test_sample_frame_noise_share_overrides_the_trained_prior_and_names_its_key():
    from dysen_jax.diffusion.samplers import sampling_noise_share

    cfg = ml_collections.ConfigDict({"sample": {"steps": 5, "eta": 0.0, "guidance": 1.0, "frame_noise_share": -1.0},
                                     "diffusion": {"prediction": "v", "frame_noise_share": 0.5},
                                     "model": {"use_dsg": True}})
    assert SamplerSettings.from_config(cfg).frame_noise_share == 0.5       # -1: the trained prior
    cfg.sample.frame_noise_share = 0.9
    assert SamplerSettings.from_config(cfg).frame_noise_share == 0.9
    keys = item_keys([0, 1, 2, 3])
    x_T = initial_noise(keys, (2, 32, 32, 3), SamplerSettings.from_config(cfg).frame_noise_share)
    assert frame_correlation(np.asarray(x_T), 1)[1] == pytest.approx(0.9, abs=0.04)
    cfg.sample.frame_noise_share = 0.0                                      # 0 is a value, not "unset"
    assert sampling_noise_share(cfg) == 0.0
    for bad in (1.0, 2.5, float("nan")):
        cfg.sample.frame_noise_share = bad
        with pytest.raises(ValueError, match=r"sample\.frame_noise_share must be in \[0, 1\)"):
            SamplerSettings.from_config(cfg)
