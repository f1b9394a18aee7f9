"""Latent diffusion (training/latents.py): the VAE codec, precomputed posterior moments in the TFRecords,
the train step's model input, and latent sampling decoded to pixels. Tiny random-init VAE
(configs/tiny.py:smoke,latent: 16 px -> 4x4x4 latents)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from dysen_jax import preprocess as preprocess_lib
from dysen_jax.convert.common import save_params
from dysen_jax.data.pipeline import make_dataset, parse_fn
from dysen_jax.data.records import LATENT_LOGVAR, LATENT_MEAN, MANIFEST, read_manifest
from dysen_jax.data.video_io import read_video
from dysen_jax.experiment import init_params, load_experiment
from dysen_jax.training.latents import codec_from_config, model_input
from tests.helpers import tiny_test_config


def latent_config(**overrides):
    """configs/tiny.py:smoke,latent with `overrides` ("section.key": value) on top."""
    c = tiny_test_config()
    tiny.use_tiny_latent_vae(c)
    for key, value in overrides.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


@pytest.fixture(scope="module")
def latent_data(tmp_path_factory):
    """Smoke data with precomputed latents (3 clips per encoder call: the last call of a batch is padded)."""
    out = str(tmp_path_factory.mktemp("latent_data"))
    config = latent_config(**{"data.precompute_latents": True, "data.latent_batch_size": 3, "data.data_dir": out})
    manifest = preprocess_lib.preprocess(config, out, show_progress=False)
    return config, out, manifest


def test_codec_shapes_and_decode_of_the_mean_is_the_vaes_reconstruction():
    config = latent_config(**{"vae.scaling_factor": 0.18215})
    codec = codec_from_config(config)
    video = jax.random.uniform(jax.random.PRNGKey(1), (2, 8, 16, 16, 3), minval=-1.0, maxval=1.0)
    sample = jax.jit(codec.encode)(codec.params, video, jax.random.PRNGKey(2))
    mean = jax.jit(codec.encode, static_argnums=2)(codec.params, video, None)
    assert sample.shape == mean.shape == (2, 8, 4, 4, 4)
    assert not np.allclose(sample, mean)                      # a posterior sample, not the mean
    decoded = jax.jit(codec.decode)(codec.params, mean)
    assert decoded.shape == video.shape and float(jnp.abs(decoded).max()) <= 1.0
    frames = video.reshape(16, 16, 16, 3)
    reconstruction = jax.jit(codec.vae.apply)({"params": codec.params}, frames)  # decode(mode(encode(x))), unscaled
    np.testing.assert_allclose(decoded.reshape(frames.shape), jnp.clip(reconstruction, -1, 1), atol=1e-5)


def test_codec_from_config_switches_and_errors(tmp_path):
    assert codec_from_config(tiny_test_config()) is None                 # pixel space
    for overrides, message in (({"init_from.vae": ""}, "init_from.vae"),
                               ({"model.in_channels": 3}, "in_channels"),):
        with pytest.raises(ValueError, match=message):
            codec_from_config(latent_config(**overrides))
    with pytest.raises(ValueError, match="model.latent"):
        codec_from_config(tiny_test_config(**{"data.precompute_latents": True}))
    # A converted VAE folder (what `python -m dysen_jax.convert --kind vae` writes) loads as is...
    random_codec = codec_from_config(latent_config())
    from dysen_jax.models.vae import VAEConfig

    vae_config = VAEConfig.from_dict(latent_config().vae.to_dict())
    save_params(random_codec.params, str(tmp_path / "vae"), {"kind": "vae", "config": vae_config.to_dict()})
    loaded = codec_from_config(latent_config(**{"init_from.vae": str(tmp_path / "vae")}))
    assert loaded.encoder_fingerprint == random_codec.encoder_fingerprint
    # ...and one that differs from the config's vae section is refused, naming the key.
    with pytest.raises(ValueError, match="latent_channels"):
        codec_from_config(latent_config(**{"init_from.vae": str(tmp_path / "vae"), "vae.latent_channels": 8,
                                           "model.in_channels": 8}))


def test_preprocess_stores_the_encoders_moments(latent_data):
    config, out, manifest = latent_data
    assert manifest["counts"]["written"] == 16 and manifest["spec"]["latent_shape"] == [8, 4, 4, 4]
    codec = codec_from_config(config)
    assert manifest["latents"]["vae_fingerprint"] == codec.encoder_fingerprint
    spec = load_experiment(config, "").spec
    batch = _read_all(out, spec, video=True)
    mean, logvar = jax.jit(codec.encode_moments)(codec.params, batch["video"])
    np.testing.assert_allclose(batch[LATENT_MEAN], mean, atol=1e-5)
    np.testing.assert_allclose(batch[LATENT_LOGVAR], logvar, atol=1e-5)
    # A rerun resumes: every shard is already done.
    again = preprocess_lib.preprocess(config, out, show_progress=False)
    assert again["report"]["this_run"]["shards_skipped_on_resume"] == 2


def test_data_and_config_mismatches_are_refused(latent_data, tmp_path):
    config, out, _ = latent_data
    with pytest.raises(ValueError, match="holds precomputed VAE latents"):
        load_experiment(_with(config, precompute_latents=False), "")     # config: encode live
    with pytest.raises(ValueError, match="encoded by another VAE"):
        load_experiment(_with_seed(config, 1), "")
    pixel_dir = tmp_path / "pixel"                                        # a manifest without latents
    pixel_dir.mkdir()
    manifest = read_manifest(out)
    del manifest["spec"]["latent_shape"], manifest["latents"]
    (pixel_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="holds no precomputed VAE latents"):
        load_experiment(_with(config, data_dir=str(pixel_dir)), "")


def _with(config, **data):
    c = config.copy_and_resolve_references()
    c.data.update(data)
    return c


def _with_seed(config, seed):
    c = config.copy_and_resolve_references()
    c.seed = seed                     # another random VAE (init_from.vae="random" is seeded by config.seed)
    return c


def test_model_input_from_stored_moments_matches_live_encoding(latent_data):
    config, out, _ = latent_data
    experiment = load_experiment(config, "")
    codec = experiment.codec
    train_batch = next(make_dataset(out, experiment.spec, 4, seed=0, shuffle_buffer=1).as_numpy_iterator())
    assert "video" not in train_batch and train_batch[LATENT_MEAN].shape == (4, 8, 4, 4, 4)
    stored = _read_all(out, experiment.spec, video=None)               # what training reads: moments only
    live = {k: v for k, v in _read_all(out, experiment.spec, video=True).items()
            if k not in (LATENT_MEAN, LATENT_LOGVAR)}                  # the same 16 clips, pixels only
    assert "video" not in stored
    key = jax.random.PRNGKey(3)
    from_store = model_input(codec, codec.params, stored, key)
    from_video = model_input(codec, codec.params, live, key)
    assert from_store.shape == (16, *experiment.input_shape)
    np.testing.assert_allclose(from_store, from_video, atol=1e-5)        # same posterior, same noise
    # A sample is mean + std * N(0, 1): standardised, it has mean 0 and std 1.
    z = (from_store / codec.config.scaling_factor - stored[LATENT_MEAN]) / np.exp(0.5 * stored[LATENT_LOGVAR])
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1.0) < 0.05
    assert np.array_equal(model_input(None, None, live, key), live["video"])
    with pytest.raises(ValueError, match="pixel-space"):
        model_input(None, None, stored, key)


def _read_all(out, spec, video):
    """The 16 records in file order, parsed as one batch."""
    import tensorflow as tf

    files = sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".tfrecord"))
    return next(tf.data.TFRecordDataset(files).map(parse_fn(spec, video=video)).batch(16).as_numpy_iterator())


def test_latent_sampling_writes_a_pixel_video(latent_data, tmp_path):
    from dysen_jax.sample import generate_to_files

    config, out, _ = latent_data
    experiment = load_experiment(config, "")
    # Random params of init_params' shapes (compiling the UNet's init would double this test's time).
    shapes = jax.eval_shape(lambda key: init_params(experiment, key), jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(0.05 * rng.standard_normal(s.shape), s.dtype), shapes)
    assert params["unet"]["conv_in"]["kernel"].shape[-2] == 4 and params["unet"]["conv_out"]["kernel"].shape[-1] == 4
    paths = generate_to_files(experiment, params, config.sample.prompt, str(tmp_path / "latent.gif"))
    frames = read_video(paths["video"])
    assert frames.shape == (8, 16 * 4, 16 * 4, 3)                        # pixel resolution (x4 upscaled for viewing)
