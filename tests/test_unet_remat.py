"""UNet3D memory savers: remat policies (model.unet_remat) give the same parameter tree, loss and
gradients as no remat; the blockwise (flash-backward) self-attention the same values and gradients
as plain attention."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dysen_jax.models.layers import flat_attention
from dysen_jax.models.unet3d import UNet3D
from dysen_jax.models.unet_blocks import chunked_attention
from dysen_jax.models.unet_config import UNet3DConfig, from_model_config
from dysen_jax.models.init_compile import jit_init
from tests.helpers import tiny_test_config

# One xdist worker runs this module (`pytest -n 2 --dist loadgroup`), so its module fixtures are built once.
pytestmark = pytest.mark.xdist_group("unet_remat")

# One level holds every layer kind that remat wraps: ResNets, temporal convs, spatial transformers
# (with the DSG cross-attention, chunked self-attention) and temporal attentions; causal, so masks are in.
CONFIG = UNet3DConfig(block_out_channels=(8,), cross_attention=(True,), num_attention_heads=(2,),
                      layers_per_block=1, cross_attention_dim=8, norm_num_groups=4, max_frames=4,
                      temporal_causal=True, temporal_position="sinusoidal", zero_init_conv_out=False,
                      attention_chunk=16)
NAMES = ("dsg", "text")


def _inputs():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, 3, 8, 8, 4)), jnp.float32)
    contexts = {"text": (jnp.asarray(rng.standard_normal((1, 1, 5, 8)), jnp.float32), jnp.ones((1, 1, 5), bool)),
                "dsg": (jnp.asarray(rng.standard_normal((1, 3, 4, 8)), jnp.float32),
                        jnp.asarray(rng.random((1, 3, 4)) < 0.7).at[..., 0].set(True))}
    return x, jnp.array([300]), contexts


def _loss_and_grads(remat: str, params):
    model = UNet3D(dataclasses.replace(CONFIG, remat=remat), NAMES)
    x, t, contexts = _inputs()
    loss = lambda p: jnp.mean(jnp.square(model.apply(p, x, t, contexts)))
    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.fixture(scope="module")
def reference():
    x, t, contexts = _inputs()
    params = jit_init(UNet3D(CONFIG, NAMES).init)(jax.random.key(0), x, t, contexts)
    # Non-zero temporal/DSG outputs (zero-initialised), so every layer's gradient path is exercised.
    params = jax.tree.map(lambda p: p + 0.05 * jnp.cos(jnp.arange(p.size, dtype=p.dtype).reshape(p.shape)), params)
    return params, _loss_and_grads("none", params)


@pytest.mark.parametrize("remat", ["full", "dots", "dots_no_batch"])
def test_remat_same_params_loss_and_grads(reference, remat):
    params, (loss, grads) = reference
    x, t, contexts = _inputs()
    shapes = jax.eval_shape(UNet3D(dataclasses.replace(CONFIG, remat=remat), NAMES).init, jax.random.key(0), x, t,
                            contexts)
    assert jax.tree.structure(shapes) == jax.tree.structure(params)
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(jnp.shape, params)
    remat_loss, remat_grads = _loss_and_grads(remat, params)
    np.testing.assert_allclose(remat_loss, loss, rtol=1e-5, atol=1e-6)
    for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(remat_grads)):
        np.testing.assert_allclose(r, g, rtol=1e-5, atol=1e-5, err_msg=jax.tree_util.keystr(path))
    assert float(jnp.abs(grads["params"]["down_blocks_0"]["temp_attentions_0"]["proj_in"]["kernel"]).sum()) > 0


def test_unet_remat_config_key():
    cfg = tiny_test_config()
    assert from_model_config(cfg.model).remat == cfg.model.unet_remat == "none"
    cfg.model.unet_remat = "everything"
    with pytest.raises(ValueError, match="model.unet_remat"):
        from_model_config(cfg.model)


def test_blockwise_attention_matches_plain_attention():
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.standard_normal(shape), jnp.float32)
               for shape in ((2, 3, 16, 2, 4), (2, 1, 16, 2, 4), (2, 3, 16, 2, 4)))   # k broadcasts over axis 1
    probe = jnp.asarray(rng.standard_normal((2, 3, 16, 2, 4)), jnp.float32)
    loss = lambda fn: lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)) * probe)
    grad = lambda fn: jax.jit(jax.value_and_grad(loss(fn), argnums=(0, 1, 2)))(q, k, v)
    (ref_loss, ref_grads), (loss_b, grads_b) = grad(lambda *a: flat_attention(*a, None)), grad(
        lambda *a: chunked_attention(*a, None, 4))
    np.testing.assert_allclose(loss_b, ref_loss, rtol=1e-5)
    for r, b in zip(ref_grads, grads_b):
        assert r.shape == b.shape
        np.testing.assert_allclose(b, r, rtol=1e-4, atol=1e-5)
