"""diffusion.timestep_shift: the training timestep distribution (SD3's shift of u ~ U(0, 1))."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dysen_jax.diffusion.losses import sample_timesteps, shifted_fraction
from dysen_jax.training.step import draw_randomness


def test_shift_one_is_the_uniform_draw_of_before():
    key = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(sample_timesteps(key, 64, 1000),
                                  jax.random.randint(key, (64,), 0, 1000, dtype=jnp.int32))


@pytest.mark.parametrize("shift", [0.5, 3.0])
def test_shifted_timesteps_follow_the_shifted_cdf(shift):
    t = np.asarray(sample_timesteps(jax.random.PRNGKey(0), 200_000, 1000, shift))
    assert t.dtype == np.int32 and t.min() >= 0 and t.max() <= 999
    # P(t >= T·x) = 1 - u(x) where x = s·u / (1 + (s-1)·u)  <=>  u = x / (s - (s-1)·x)
    for x in (0.2, 0.5, 0.8):
        expected = 1.0 - x / (shift - (shift - 1.0) * x)
        assert np.mean(t >= 1000 * x) == pytest.approx(expected, abs=0.01)
    assert float(shifted_fraction(0.0, shift)) == 0.0 and float(shifted_fraction(1.0, shift)) == 1.0


def test_shift_three_trains_the_noisy_steps_twice_as_often():
    t = np.asarray(sample_timesteps(jax.random.PRNGKey(1), 100_000, 1000, 3.0))
    assert np.mean(t >= 800) == pytest.approx(1 - 0.8 / 1.4, abs=0.01)   # 43% instead of 20%


def test_training_draws_follow_the_config():
    cfg = ml_collections.ConfigDict({"text_drop_prob": 0.1, "dsg_drop_prob": 0.1, "timestep_shift": 4.0})
    draws = draw_randomness(jax.random.PRNGKey(0), jnp.zeros((4096, 1, 2, 2, 1)), 1000, cfg)
    assert np.mean(np.asarray(draws["t"]) >= 500) == pytest.approx(0.8, abs=0.02)   # uniform: 0.5


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_shift_names_the_key(bad):
    with pytest.raises(ValueError, match=r"diffusion\.timestep_shift must be a finite number > 0"):
        sample_timesteps(jax.random.PRNGKey(0), 4, 1000, bad)
