"""Samplers: compositional text + DSG guidance, DDPM ancestral == the posterior, per-item determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from dysen_jax.diffusion import (SamplerSettings, ddim_step, guidance_branches, guided_output, item_keys,
                                 make_schedule, sample)

VIDEO = (2, 3, 4, 4, 2)  # [B, F, H, W, C]


def _normal(seed, shape=VIDEO):
    return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


def _branch_denoiser(calls):
    """A different affine map per (use_text, use_dsg) branch, so every branch is identifiable."""
    def fn(x, t, use_text, use_dsg):
        calls.append(x.shape[0])
        text = use_text.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
        dsg = use_dsg.reshape(text.shape).astype(x.dtype)
        return (0.5 + 1.5 * text + 0.7 * dsg) * x + 0.3 * text - 0.2 * dsg + 0.001 * t.reshape(text.shape)
    return fn


def _branch(fn, x, t, text, dsg):
    b = x.shape[0]
    return np.asarray(fn(x, t, jnp.full((b,), text), jnp.full((b,), dsg)))


@pytest.mark.parametrize("s_text, s_dsg, n_branches", [(1.0, 1.0, 1), (4.0, 4.0, 2), (1.0, 3.0, 2),
                                                       (5.0, 2.0, 3), (jnp.float32(5.0), 2.0, 3)])
def test_compositional_guidance_formula_in_one_call(s_text, s_dsg, n_branches):
    calls = []
    fn = _branch_denoiser(calls)
    x, t = _normal(1), jnp.array([5, 900])
    got = np.asarray(guided_output(fn, x, t, s_text, s_dsg))
    assert calls == [2 * n_branches], "all needed branches must be ONE denoiser call"
    e00, e10, e11 = (_branch(fn, x, t, *b) for b in ((False, False), (True, False), (True, True)))
    want = e00 + float(s_text) * (e10 - e00) + float(s_dsg) * (e11 - e10)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_guidance_scale_one_is_the_conditional_prediction():
    calls = []
    fn = _branch_denoiser(calls)
    x, t = _normal(2), jnp.array([3, 4])
    assert guidance_branches(1.0, 1.0) == ((True, True),)
    np.testing.assert_array_equal(np.asarray(guided_output(fn, x, t, 1.0, 1.0)), _branch(fn, x, t, True, True))
    # Traced scales of value 1 compute all branches but give the same prediction.
    got = guided_output(fn, x, t, jnp.float32(1.0), jnp.float32(1.0))
    np.testing.assert_allclose(np.asarray(got), _branch(fn, x, t, True, True), rtol=1e-6, atol=1e-6)


def test_ddpm_step_is_the_posterior_of_the_strided_chain():
    s = make_schedule("linear", 1000)
    x_t, eps, noise = _normal(3), _normal(4), _normal(5)
    t, tp = 700, 650
    got = np.asarray(ddim_step(s, x_t, jnp.array([t, t]), jnp.array([tp, tp]), eps, "epsilon", 1.0, noise))
    a, ap = float(s.alphas_cumprod[t]), float(s.alphas_cumprod[tp])
    beta = 1 - a / ap                                     # the strided chain's beta
    x0 = (np.asarray(x_t) - np.sqrt(1 - a) * np.asarray(eps)) / np.sqrt(a)
    mean = np.sqrt(ap) * beta / (1 - a) * x0 + np.sqrt(1 - beta) * (1 - ap) / (1 - a) * np.asarray(x_t)
    var = (1 - ap) / (1 - a) * beta
    np.testing.assert_allclose(got, mean + np.sqrt(var) * np.asarray(noise), rtol=1e-4, atol=1e-4)


def _oracle(alphas_cumprod, x0, x_t, t, use_text, use_dsg):
    """The true ε for a fixed x0 (any conditioning, any guidance-stacked batch)."""
    x0_b = jnp.tile(x0, (x_t.shape[0] // x0.shape[0],) + (1,) * (x0.ndim - 1))
    ab = alphas_cumprod[t].reshape((-1,) + (1,) * (x_t.ndim - 1))
    return (x_t - jnp.sqrt(ab) * x0_b) / jnp.sqrt(1.0 - ab)


def _affine(x, t, use_text, use_dsg):
    return 0.2 * x + 0.1 * use_text[:, None, None, None, None]


def test_ddpm_with_true_eps_recovers_x0_and_items_depend_on_their_own_seed_only():
    """(DDIM's η = 0 determinism and x0 recovery: tests/test_diffusion.py.)"""
    s = make_schedule("cosine", 1000)
    x0 = jnp.tanh(_normal(6))
    settings = SamplerSettings(7, "epsilon", sampler="ddpm", text_guidance=3.0, dsg_guidance=2.0)
    got = sample(Partial(_oracle, s.alphas_cumprod, x0), item_keys([0, 1]), VIDEO[1:], s, settings)
    np.testing.assert_allclose(np.asarray(got), np.asarray(x0), atol=1e-4)
    run = lambda seeds: np.asarray(sample(_affine, item_keys(seeds), VIDEO[1:], s, settings))  # noqa: E731
    first, again, other = run([0, 1]), run([0, 1]), run([2, 1])
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[0], other[0])
    # Item b depends on its own seed only, not on its batch-mates (the per-step noise included).
    np.testing.assert_allclose(first[1], other[1], rtol=1e-6, atol=1e-6)


def test_settings_errors_name_the_config_key():
    with pytest.raises(ValueError, match=r"sample\.sampler"):
        SamplerSettings(10, "v", sampler="euler")
    with pytest.raises(ValueError, match=r"sample\.dsg_guidance"):
        SamplerSettings(10, "v", dsg_guidance=float("nan"))
    with pytest.raises(ValueError, match=r"diffusion\.prediction"):
        SamplerSettings(10, "x0")
    assert SamplerSettings(10, "v", sampler="ddpm", eta=0.0).effective_eta == 1.0
