"""Schedules, forward process / targets / loss, classifier-free guidance and DDIM."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from dysen_jax.diffusion import (SamplerSettings, ddim_step, ddim_timesteps, diffusion_loss,
                                 guided_output, item_keys, make_schedule, predict_x0_and_eps,
                                 prediction_target, q_sample, sample)

T = 1000
VIDEO = (2, 3, 4, 4, 2)  # [B, F, H, W, C]


def ddim_sample(fn, shape, seed, schedule, num_steps, prediction, guidance_scale=1.0, **kwargs):
    """samplers.sample with one guidance scale for text and DSG, batch items seeded seed, seed+1, ..."""
    progress = kwargs.pop("progress", False)
    settings = SamplerSettings(num_steps, prediction, text_guidance=guidance_scale, dsg_guidance=guidance_scale,
                               **kwargs)
    return sample(fn, item_keys(range(seed, seed + shape[0])), shape[1:], schedule, settings, progress)


def _normal(seed, shape=VIDEO):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _bcast(values, t, ndim):
    """values[t] as [B, 1, ..., 1] numpy, computed independently of the library helper."""
    v = np.asarray(values)[np.asarray(t)]
    return v.reshape((-1,) + (1,) * (ndim - 1))


# ---------------------------------------------------------------- schedules

@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine"])
def test_schedule_monotone_and_in_open_unit_interval(kind):
    s = make_schedule(kind, T)
    betas, abar = np.asarray(s.betas), np.asarray(s.alphas_cumprod)
    assert betas.shape == abar.shape == (T,) and s.num_timesteps == T
    assert np.all(betas > 0) and np.all(betas < 1)
    assert np.all(np.diff(abar) < 0), "ā must strictly decrease with t (t=0 least noisy)"
    assert np.all(abar > 0) and np.all(abar < 1)
    np.testing.assert_allclose(np.asarray(s.sqrt_alphas_cumprod) ** 2, abar, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(s.sqrt_one_minus_alphas_cumprod) ** 2, 1 - abar,
                               rtol=1e-5, atol=1e-7)


def test_linear_endpoints_scale_with_T():
    np.testing.assert_allclose(np.asarray(make_schedule("linear", 1000).betas)[[0, -1]],
                               [1e-4, 0.02], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(make_schedule("linear", 500).betas)[[0, -1]],
                               [2e-4, 0.04], rtol=1e-6)


def test_scaled_linear_matches_stable_diffusion_formula():
    s = make_schedule("scaled_linear", T)
    ref_betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, T, dtype=np.float64) ** 2
    ref_abar = np.cumprod(1.0 - ref_betas)
    idx = [0, 1, 500, 999]
    np.testing.assert_allclose(np.asarray(s.betas)[idx], ref_betas[idx], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(s.alphas_cumprod)[idx], ref_abar[idx], rtol=1e-5)
    assert abs(float(s.betas[0]) - 0.00085) < 1e-9 and abs(float(s.betas[-1]) - 0.012) < 1e-8


def test_cosine_formula_and_terminal_near_zero():
    s = make_schedule("cosine", T)
    f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    # ā at index t is f(t + 1) / f(0) (one beta applied per index) where no beta is clipped.
    np.testing.assert_allclose(float(s.alphas_cumprod[500]), f(501) / f(0), rtol=1e-5)
    assert float(s.alphas_cumprod[-1]) < 1e-6
    assert float(s.betas[-1]) == pytest.approx(0.999)


def test_unknown_schedule_names_config_field():
    with pytest.raises(ValueError, match=r"diffusion\.schedule.*cosine"):
        make_schedule("quadratic", T)


# ---------------------------------------------------------------- forward process / targets / loss

def test_q_sample_broadcasts_per_example_t():
    s = make_schedule("linear", T)
    x0, eps, t = _normal(0), _normal(1), jnp.array([3, 700])
    got = np.asarray(q_sample(s, x0, t, eps))
    ab = _bcast(s.alphas_cumprod, t, x0.ndim)
    want = np.sqrt(ab) * np.asarray(x0) + np.sqrt(1 - ab) * np.asarray(eps)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_v_target_formula():
    s = make_schedule("cosine", T)
    x0, eps, t = _normal(2), _normal(3), jnp.array([10, 900])
    ab = _bcast(s.alphas_cumprod, t, x0.ndim)
    want = np.sqrt(ab) * np.asarray(eps) - np.sqrt(1 - ab) * np.asarray(x0)
    np.testing.assert_allclose(np.asarray(prediction_target(s, x0, eps, t, "v")), want,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(prediction_target(s, x0, eps, t, "epsilon")),
                                  np.asarray(eps))


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("t", [[0, 250], [500, 999]])
def test_round_trip_recovers_x0_and_eps(prediction, t):
    s = make_schedule("scaled_linear", T)
    x0, eps, t = _normal(4), _normal(5), jnp.array(t)
    x_t = q_sample(s, x0, t, eps)
    x0_hat, eps_hat = predict_x0_and_eps(s, x_t, t, prediction_target(s, x0, eps, t, prediction),
                                         prediction)
    np.testing.assert_allclose(np.asarray(x0_hat), np.asarray(x0), atol=1e-5)
    np.testing.assert_allclose(np.asarray(eps_hat), np.asarray(eps), atol=1e-5)


def test_diffusion_loss_mean_and_mask():
    a, b = _normal(6), _normal(7)
    sq = (np.asarray(a) - np.asarray(b)) ** 2
    assert float(diffusion_loss(a, b)) == pytest.approx(sq.mean(), rel=1e-5)
    mask = jnp.array([True, False])
    assert float(diffusion_loss(a, b, mask)) == pytest.approx(sq[0].mean(), rel=1e-5)
    assert float(diffusion_loss(a, b, jnp.zeros((2,), bool))) == 0.0


def test_unknown_prediction_names_config_field():
    s = make_schedule("linear", 10)
    x, t = jnp.zeros((1, 2)), jnp.array([0])
    with pytest.raises(ValueError, match=r"diffusion\.prediction"):
        prediction_target(s, x, x, t, "x0")
    with pytest.raises(ValueError, match=r"diffusion\.prediction"):
        predict_x0_and_eps(s, x, t, x, "sample")
    with pytest.raises(ValueError, match=r"diffusion\.prediction"):
        ddim_sample(lambda x, t, c, g: x, (1, 2), 0, s, 2, "x0")


# ---------------------------------------------------------------- classifier-free guidance

def _recording_denoiser(calls):
    def fn(x, t, use_cond, use_dsg):
        calls.append(x.shape[0])
        c = use_cond.reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.where(c, 2.0 * x + 1.0, 0.5 * x) + t.reshape(c.shape) * 0.01
    return fn


def test_cfg_scale_one_is_conditional_only():
    calls = []
    fn = _recording_denoiser(calls)
    x, t = _normal(8), jnp.array([5, 6])
    got = guided_output(fn, x, t, 1.0, 1.0)
    want = fn(x, t, jnp.ones((2,), bool), jnp.ones((2,), bool))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert calls[0] == 2, "scale 1 must not run the unconditional branch"


@pytest.mark.parametrize("scale", [3.0, jnp.float32(7.5)])
def test_cfg_matches_manual_formula_in_one_batched_call(scale):
    calls = []
    fn = _recording_denoiser(calls)
    x, t = _normal(9), jnp.array([5, 6])
    got = guided_output(fn, x, t, scale, 3.0)
    assert calls == [4 if isinstance(scale, float) else 6], "the branches must be one call on a stacked batch"
    cond, uncond = fn(x, t, jnp.ones((2,), bool), None), fn(x, t, jnp.zeros((2,), bool), None)
    want = np.asarray(uncond) + float(scale) * (np.asarray(cond) - np.asarray(uncond))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- DDIM

def test_ddim_timesteps_trailing_descending():
    ts = ddim_timesteps(1000, 50)
    assert ts.shape == (50,) and ts.dtype == np.int32
    assert ts[0] == 999 and ts[-1] == 19 and np.all(np.diff(ts) < 0)
    for n in (1, 3, 7, 999, 1000):
        ts = ddim_timesteps(1000, n)
        assert len(ts) == n and ts[0] == 999 and ts.min() >= 0 and np.all(np.diff(ts) < 0)
    np.testing.assert_array_equal(ddim_timesteps(10, 10), np.arange(9, -1, -1))
    with pytest.raises(ValueError, match=r"sample\.steps"):
        ddim_timesteps(1000, 0)
    with pytest.raises(ValueError, match=r"sample\.steps"):
        ddim_timesteps(10, 11)


def test_ddim_step_matches_formula_with_eta():
    s = make_schedule("linear", T)
    x_t, out, noise = _normal(10), _normal(11), _normal(12)
    t, tp, eta = jnp.array([800, 800]), jnp.array([600, 600]), 0.5
    got = np.asarray(ddim_step(s, x_t, t, tp, out, "epsilon", eta, noise))
    a, ap = float(s.alphas_cumprod[800]), float(s.alphas_cumprod[600])
    x0 = (np.asarray(x_t) - math.sqrt(1 - a) * np.asarray(out)) / math.sqrt(a)
    sigma = eta * math.sqrt((1 - ap) / (1 - a)) * math.sqrt(1 - a / ap)
    want = (math.sqrt(ap) * x0 + math.sqrt(1 - ap - sigma**2) * np.asarray(out)
            + sigma * np.asarray(noise))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # Final step (t_prev = -1, ā_prev = 1) lands exactly on the x0 prediction, noise ignored.
    last = ddim_step(s, x_t, t, jnp.array([-1, -1]), out, "epsilon", eta, noise)
    np.testing.assert_allclose(np.asarray(last), x0, rtol=1e-4, atol=1e-4)


def _oracle(schedule, x0, prediction):
    """Denoiser that returns the TRUE ε (or v) for a fixed x0, whatever the conditioning."""
    def fn(x_t, t, use_text, use_dsg):
        del use_text, use_dsg
        x0_b = jnp.tile(x0, (x_t.shape[0] // x0.shape[0],) + (1,) * (x0.ndim - 1))  # CFG doubles B
        ab = schedule.alphas_cumprod[t].reshape((-1,) + (1,) * (x_t.ndim - 1))
        eps = (x_t - jnp.sqrt(ab) * x0_b) / jnp.sqrt(1.0 - ab)
        return eps if prediction == "epsilon" else jnp.sqrt(ab) * eps - jnp.sqrt(1.0 - ab) * x0_b
    return fn


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_ddim_with_true_model_recovers_x0(kind, prediction):
    s = make_schedule(kind, T)
    x0 = jnp.tanh(_normal(13))
    got = ddim_sample(_oracle(s, x0, prediction), VIDEO, 0, s, 10, prediction)
    np.testing.assert_allclose(np.asarray(got), np.asarray(x0), atol=1e-4)
    # Same with guidance (batched cond/uncond inside the jitted step; both branches agree here).
    got = ddim_sample(_oracle(s, x0, prediction), VIDEO, 1, s, 5, prediction,
                      guidance_scale=4.0)
    np.testing.assert_allclose(np.asarray(got), np.asarray(x0), atol=1e-4)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_deterministic_per_key(eta):
    s = make_schedule("scaled_linear", T)
    fn = lambda x, t, c, g: 0.1 * x  # noqa: E731
    run = lambda k: np.asarray(ddim_sample(fn, VIDEO, 10 * k, s, 4, "epsilon",  # noqa: E731
                                           eta=eta, guidance_scale=2.0))
    a, b, c = run(0), run(0), run(1)
    assert np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_ddim_denoiser_closing_over_params_or_partial():
    s = make_schedule("cosine", T)
    params = {"w": jnp.full((2,), 0.3), "b": jnp.full((2,), 0.05)}
    apply = lambda p, x, t, c, g: p["w"] * x + p["b"] * c[:, None, None, None, None]  # noqa: E731
    closure = lambda x, t, c, g: apply(params, x, t, c, g)  # noqa: E731
    key = 3
    a = ddim_sample(closure, VIDEO, key, s, 3, "v", guidance_scale=3.0, clip_x0=1.0, progress=True)
    b = ddim_sample(Partial(apply, params), VIDEO, key, s, 3, "v", guidance_scale=3.0, clip_x0=1.0)
    assert a.shape == VIDEO and np.all(np.abs(np.asarray(a)) <= 1.0 + 1e-6)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
