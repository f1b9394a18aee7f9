"""model.pooled_conditions: text and per-frame DSG means added to the timestep embedding (unet3d.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from dysen_jax.models.unet3d import UNet3D
from dysen_jax.models.unet_config import UNet3DConfig, from_model_config
from tests.helpers import tiny_test_config

# A small UNet without cross-attention: what the pooled path adds is easy to isolate.
CONFIG = UNet3DConfig(block_out_channels=(8, 8), cross_attention=(False, False), num_attention_heads=(2, 2),
                      layers_per_block=1, cross_attention_dim=8, norm_num_groups=4, max_frames=4,
                      zero_init_conv_out=False)
NAMES = ("dsg", "text")


def contexts(seed: int, masked_out: float = 0.0):
    rng = np.random.default_rng(seed)
    text_mask = jnp.ones((2, 1, 5), bool).at[:, :, 3:].set(False)
    text = jnp.asarray(rng.standard_normal((2, 1, 5, 8)), jnp.float32)
    text = text.at[:, :, 3:].set(masked_out)          # padded slots: must not matter
    return {"text": (text, text_mask),
            "dsg": (jnp.asarray(rng.standard_normal((2, 3, 4, 8)), jnp.float32), jnp.ones((2, 3, 4), bool))}


def test_pooled_conditions_add_a_zero_init_per_frame_path_from_the_contexts():
    x = jnp.asarray(np.random.default_rng(9).standard_normal((2, 3, 8, 8, 4)), jnp.float32)
    t = jnp.array([100, 700])
    on = UNet3D(dataclasses.replace(CONFIG, pooled_conditions=True), NAMES)
    off = UNet3D(CONFIG, NAMES)
    params = on.init(jax.random.PRNGKey(0), x, t, contexts(0))["params"]
    assert {"pooled_text", "pooled_dsg"} <= set(params)
    base = {k: v for k, v in params.items() if not k.startswith("pooled_")}
    # zero init: the same function as the UNet without the flag (a checkpoint without it fine-tunes smoothly)
    for seed in (1, 2):
        np.testing.assert_allclose(on.apply({"params": params}, x, t, contexts(seed)),
                                   off.apply({"params": base}, x, t, contexts(seed)), atol=1e-6)
    trained = dict(params)
    for i, name in enumerate(("pooled_text", "pooled_dsg")):
        kernel = 0.5 * jax.random.normal(jax.random.PRNGKey(i), params[name]["kernel"].shape)
        trained[name] = {**params[name], "kernel": kernel}
    # what the pooled path adds on top of the rest of the UNet
    added = lambda c: np.asarray(on.apply({"params": trained}, x, t, c)) - np.asarray(off.apply({"params": base}, x, t, c))
    assert np.abs(added(contexts(1))).max() > 1e-2
    assert np.abs(added(contexts(1)) - added(contexts(2))).max() > 1e-2      # it depends on the contexts
    np.testing.assert_allclose(added(contexts(1)), added(contexts(1, masked_out=7.0)), atol=1e-5)  # not on masked slots
    # the DSG term is per frame: changing frame 2's scene graph moves frame 2 more than frame 0
    changed = contexts(1)
    feats, mask = changed["dsg"]
    changed["dsg"] = (feats.at[:, 2].set(-feats[:, 2]), mask)
    diff = np.abs(added(changed) - added(contexts(1))).mean(axis=(0, 2, 3, 4))
    assert diff[2] > 2 * diff[0]


def test_config_key():
    config = tiny_test_config()
    assert from_model_config(config.model).pooled_conditions == bool(config.model.pooled_conditions)
    config.model.pooled_conditions = False
    assert from_model_config(config.model).pooled_conditions is False
