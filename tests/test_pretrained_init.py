"""Starting from converted weights: init_from.unet and pretrained text towers in the train state,
frozen params untouched by the optimizer, and the tokenizer recorded in the data spec."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dysen_jax.convert.common import ConversionError, flatten, save_params, unflatten
from dysen_jax.data.records import RecordSpec
from dysen_jax.dsg.tensorize import DSGShape
from dysen_jax.models.denoiser import build_denoiser
from dysen_jax.models.text_encoder import CLIPTextConfig
from dysen_jax.training.state import make_optimizer
from tests.helpers import tiny_test_config


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    from dysen_jax import preprocess
    from dysen_jax.experiment import load_experiment

    config = tiny_test_config()
    workdir = tmp_path_factory.mktemp("pretrained")
    preprocess.preprocess(config, str(workdir / "data"), show_progress=False)
    return load_experiment(config, str(workdir))


def _fresh_state(experiment, seed: int):
    from dysen_jax.parallel.mesh import make_mesh
    from dysen_jax.train import initial_state

    exp = dataclasses.replace(experiment, config=experiment.config.copy_and_resolve_references())
    exp.config.seed = seed
    return exp, initial_state(exp, make_optimizer(exp.config.train), make_mesh(exp.config.mesh))


def test_init_from_unet_replaces_only_the_unet(experiment, tmp_path):
    _, (donor, _) = _fresh_state(experiment, seed=1)
    save_params(jax.device_get(donor.params["unet"]), str(tmp_path / "unet"), {"kind": "unet2d"})
    exp, (fresh, _) = _fresh_state(experiment, seed=0)
    exp.config.init_from = {"unet": str(tmp_path / "unet")}
    from dysen_jax.parallel.mesh import make_mesh
    from dysen_jax.train import initial_state

    state, _ = initial_state(exp, make_optimizer(exp.config.train), make_mesh(exp.config.mesh))
    for got, want in zip(jax.tree.leaves(state.params["unet"]), jax.tree.leaves(donor.params["unet"])):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    for got, want in zip(jax.tree.leaves(state.ema_params["unet"]), jax.tree.leaves(donor.params["unet"])):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    for got, want in zip(jax.tree.leaves(state.params["rgtrm"]), jax.tree.leaves(fresh.params["rgtrm"])):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

    flat = flatten(jax.device_get(donor.params["unet"]))
    missing = sorted(flat)[0]
    del flat[missing]
    save_params(unflatten(flat), str(tmp_path / "broken"), {"kind": "unet2d"})
    exp.config.init_from = {"unet": str(tmp_path / "broken")}
    with pytest.raises(ConversionError, match="missing 1 param"):
        initial_state(exp, make_optimizer(exp.config.train), make_mesh(exp.config.mesh))
    save_params(unflatten(flat), str(tmp_path / "vae"), {"kind": "vae"})
    exp.config.init_from = {"unet": str(tmp_path / "vae")}
    with pytest.raises(ValueError, match="not a UNet"):
        initial_state(exp, make_optimizer(exp.config.train), make_mesh(exp.config.mesh))


def test_frozen_params_get_no_update_not_even_weight_decay():
    config = tiny_test_config()
    config.train.weight_decay = 0.1
    params = {"text_encoder": {"w": jnp.ones((3,))}, "unet": {"w": jnp.ones((3,))}}
    optimizer = make_optimizer(config.train, frozen=("text_encoder",))
    state = optimizer.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(3):
        updates, state = optimizer.update(grads, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    np.testing.assert_array_equal(params["text_encoder"]["w"], np.ones(3))
    assert not np.allclose(params["unet"]["w"], 1.0)


def test_clip_text_tower_plugs_into_the_denoiser(tmp_path):
    clip = CLIPTextConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                          max_positions=24, eos_token_id=99)
    save_params({}, str(tmp_path), {"kind": "clip_text", "config": clip.to_dict()})
    config = tiny_test_config()
    config.model.vocab_size = 50
    config.model.text_encoder = "clip"
    config.model.text_encoder_path = str(tmp_path)
    model = build_denoiser(config.model)
    spec = RecordSpec.from_config(config)
    assert spec.text_tokenizer == "clip" and RecordSpec.from_json(spec.to_json()) == spec
    f, r = config.data.num_frames, config.data.resolution
    dsg = {k: jnp.zeros((1, *s), jnp.bool_ if k.endswith("mask") else jnp.int32)
           for k, s in DSGShape(config.dsg.max_steps, config.dsg.max_nodes, config.dsg.max_label_words, f)
           .array_shapes().items()}
    ones = jnp.ones((1,), jnp.bool_)
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, f, r, r, 3)), jnp.zeros((1,), jnp.int32),
                                                 jnp.zeros((1, config.text.max_len), jnp.int32), dsg,
                                                 use_text=ones, use_dsg=ones), jax.random.PRNGKey(0))
    tower = flatten(shapes["params"]["text_encoder"])
    assert any(k.startswith("model/") for k in tower), sorted(tower)[:5]
    assert tuple(next(v.shape for k, v in tower.items() if "token_embedding" in k)) == (100, 16)
