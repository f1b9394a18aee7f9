"""Stage I (VidRD temporal VAE decoder): losses, what trains, step-0 equivalence, learning, exact resume."""

from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import vidrd_vae
from dysen_jax import preprocess as preprocess_lib
from dysen_jax.convert.common import flatten, save_params
from dysen_jax.data.pipeline import make_dataset
from dysen_jax.models.vae import AutoencoderKL, VAEConfig, drop_temporal_params, is_temporal_path
from dysen_jax.parallel.mesh import make_mesh
from dysen_jax.training import autoencoder as ae_lib
from dysen_jax.training.autoencoder_loss import (adaptive_weight, discriminator_hinge_loss, generator_loss,
                                                 reconstruction_loss)

# One xdist worker runs this module (`pytest -n 2 --dist loadgroup`), so its module fixtures are built once.
pytestmark = pytest.mark.xdist_group("autoencoder_stage")


def smoke_config(**autoencoder):
    c = vidrd_vae.get_config("smoke")
    for key, value in autoencoder.items():
        c.autoencoder[key] = value
    return c


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ae_data"))
    preprocess_lib.preprocess(smoke_config(), out, show_progress=False)
    return out


@pytest.fixture(scope="module")
def straight_run(data_dir, tmp_path_factory):
    """4 uninterrupted steps, the discriminator switching on after step 2 (disc_start=2)."""
    config = smoke_config()
    config.data.data_dir = data_dir
    workdir = str(tmp_path_factory.mktemp("ae_straight"))
    return config, workdir, ae_lib.train_autoencoder(config, workdir, show_progress=False)


def _leaves(tree):
    """{'/'-joined path: numpy array} of any pytree (params, optimizer states)."""
    return {jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(x)
            for path, x in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))}


def test_discriminator_hinge_and_generator_loss_weights():
    real = jnp.array([2.0, 0.5, -1.0])
    fake = jnp.array([-2.0, 0.0, 1.5])
    # relu(1 - real) = [0, .5, 2] -> 5/6; relu(1 + fake) = [0, 1, 2.5] -> 7/6; 0.5 * (5/6 + 7/6) = 1.
    assert float(discriminator_hinge_loss(real, fake)) == pytest.approx(1.0, abs=1e-6)
    ae = smoke_config().autoencoder
    for factor, adv_part in ((0.0, 0.0), (1.0, 0.5 * -0.2)):
        total, metrics = generator_loss(jnp.float32(0.3), jnp.float32(100.0), jnp.float32(-0.2),
                                        jnp.float32(factor), ae)
        assert float(total) == pytest.approx(0.3 + 1e-5 * 100.0 + adv_part, abs=1e-6)
        assert float(metrics["adv_weight"]) == pytest.approx(0.5 * factor)
    x = jnp.array([[0.0, 1.0], [2.0, -1.0]])
    assert float(reconstruction_loss(x, jnp.zeros_like(x), "l1")) == pytest.approx(1.0)
    assert float(reconstruction_loss(x, jnp.zeros_like(x), "l2")) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="config.autoencoder.rec_loss"):
        reconstruction_loss(x, x, "l3")
    # LDM's adaptive weight: adv_weight * |g_rec| / (|g_adv| + 1e-4).
    w = adaptive_weight(jnp.array([3.0, 0.0]), jnp.array([0.0, 4.0]), 0.5)
    assert float(w) == pytest.approx(0.5 * 3.0 / (4.0 + 1e-4), rel=1e-6)


def test_step0_temporal_decoder_decodes_like_the_image_decoder():
    config = smoke_config()
    parts = ae_lib.build_parts(config, ae_lib.vae_config_for(config))
    assert parts.vae.config.temporal_decoder
    state, _ = ae_lib.initial_state(config, parts, make_mesh(config.mesh, jax.devices()[:1]))
    params = jax.device_get(state.vae_params)
    image_vae = AutoencoderKL(VAEConfig.from_dict(parts.vae.config.to_dict(), temporal_decoder=False))
    latents = jax.random.normal(jax.random.PRNGKey(3), (2, config.data.num_frames, 8, 8, 4))
    video = jax.jit(lambda p, z: parts.vae.apply({"params": p}, z, method="decode_video"))(params, latents)
    # The image decoder on each frame alone (clips of one frame).
    decode_frames = jax.jit(lambda p, z: image_vae.apply({"params": p}, z.reshape(-1, 1, *z.shape[2:]),
                                                          method="decode_video").reshape(*z.shape[:2], 16, 16, 3))
    frames = decode_frames(drop_temporal_params(params), latents)
    assert video.shape == (2, config.data.num_frames, 16, 16, 3)
    np.testing.assert_allclose(np.asarray(video), np.asarray(frames), rtol=0, atol=1e-6)


def test_only_temporal_params_train_and_gan_switches_on_at_disc_start(straight_run):
    config, workdir, summary = straight_run
    assert summary["final_step"] == 4 and [h["step"] for h in summary["history"]] == [1, 2, 3, 4]
    parts = ae_lib.build_parts(config, ae_lib.vae_config_for(config))
    initial, _ = ae_lib.initial_state(config, parts, make_mesh(config.mesh))
    before, after = _leaves(initial.vae_params), _leaves(summary["state"].vae_params)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed and all(is_temporal_path(k) for k in changed)
    assert all(np.array_equal(before[k], after[k]) for k in before if not is_temporal_path(k))
    assert any("encoder/" in k for k in before)  # the encoder is among the bitwise-unchanged params
    # The adversarial term and the discriminator loss are 0 for steps 1-2, on from step 3.
    adv = [h["adv_term"] for h in summary["history"]]
    disc = [h["disc_loss"] for h in summary["history"]]
    assert adv[:2] == [0.0, 0.0] and all(a != 0.0 for a in adv[2:])
    assert disc[:2] == [0.0, 0.0] and all(d > 0.0 for d in disc[2:])
    assert all(h["kl_loss"] > 0.0 for h in summary["history"])
    disc_before, disc_after = _leaves(initial.disc_params), _leaves(summary["state"].disc_params)
    assert any(not np.array_equal(disc_before[k], disc_after[k]) for k in disc_before)
    # The workdir is recognised and its trained VAE restores exactly.
    assert ae_lib.is_autoencoder_workdir(workdir)
    model, params = ae_lib.load_trained_vae(workdir)
    assert model.config == parts.vae.config
    restored = _leaves(params)
    assert all(np.array_equal(restored[k], after[k]) for k in after)


def test_resume_after_interruption_matches_uninterrupted_run(straight_run, tmp_path):
    config, _, straight = straight_run
    workdir = str(tmp_path / "resumed")
    ae_lib.train_autoencoder(config, workdir, show_progress=False)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))  # as if killed after step 2's checkpoint
    resumed = ae_lib.train_autoencoder(config, workdir, show_progress=False)
    assert resumed["start_step"] == 2 and resumed["final_step"] == 4
    for name in ("vae_params", "disc_params", "vae_opt_state", "disc_opt_state"):
        a, b = _leaves(getattr(resumed["state"], name)), _leaves(getattr(straight["state"], name))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), name


def test_reconstruction_loss_goes_down_on_a_fixed_batch(data_dir):
    config = smoke_config(disc_start=1000)
    config.train.warmup_steps = 0
    config.train.learning_rate = 3e-3
    parts = ae_lib.build_parts(config, ae_lib.vae_config_for(config))
    state, _ = ae_lib.initial_state(config, parts, make_mesh(config.mesh, jax.devices()[:1]))
    spec = ae_lib.video_shape_check(config, data_dir)
    video = next(make_dataset(data_dir, spec, 2, 0).as_numpy_iterator())["video"]
    step = jax.jit(ae_lib.make_autoencoder_step(parts, config))
    key = jax.random.PRNGKey(0)
    losses = []
    for _ in range(6):
        state, metrics = step(state, video, key)
        losses.append(float(metrics["rec_loss"]))
    assert losses[-1] < losses[0] - 1e-3, losses


def test_init_from_converted_image_vae(tmp_path):
    config = smoke_config()
    image_config = VAEConfig.from_dict(dict(config.vae), temporal_decoder=False)
    image_params = drop_temporal_params(jax.device_get(
        ae_lib.initial_vae_params(config, ae_lib.vae_config_for(config))))
    image_params = jax.tree.map(lambda x: np.asarray(x) + 0.25, image_params)  # not what a fresh init gives
    folder = save_params(image_params, str(tmp_path / "vae"), {"kind": "vae", "config": image_config.to_dict()})
    assert not ae_lib.is_autoencoder_workdir(folder)
    config.init_from.vae = folder
    vae_config = ae_lib.vae_config_for(config)
    assert vae_config.temporal_decoder and vae_config.temporal_num_convs == config.vae.temporal_num_convs
    loaded = flatten(ae_lib.initial_vae_params(config, vae_config))
    assert {k for k in loaded if not is_temporal_path(k)} == set(flatten(image_params))
    assert all(np.array_equal(v, loaded[k]) for k, v in flatten(image_params).items())
    config.vae.latent_channels = 8
    with pytest.raises(ValueError, match="config.vae.latent_channels"):
        ae_lib.vae_config_for(config)
