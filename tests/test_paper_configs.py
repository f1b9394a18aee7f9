"""Paper-size configs and the RGTrm's scan/remat options.

The paper-size denoisers are only traced with `jax.eval_shape` (no allocation, no compilation): a
few seconds each on a 2-core CPU. The scan/remat equalities run on a tiny RGTrm.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import paper, sd21_256, tiny
from dysen_jax.data.records import RecordSpec
from dysen_jax.dsg.tensorize import NUM_EDGE_TYPES
from dysen_jax.models.denoiser import build_denoiser
from dysen_jax.models.init_compile import jit_init
from dysen_jax.models.rgtrm import (REMAT_OPTIONS, SCANNED_LAYERS, RGTrm, stack_layer_params,
                                    unstack_layer_params)

CLIP_VOCAB = 49408          # CLIP / OpenCLIP BPE vocabulary: what model.vocab_size resolves to with CLIP tokens
PAPER_CONFIGS = {"paper": paper, "sd21_256": sd21_256}
SDS = jax.ShapeDtypeStruct


def count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def rgtrm_layer_params(width: int, heads: int) -> int:
    """Exact parameter count of one RGTrm layer: 2 LayerNorms, Q/K/V/O (with biases), the query
    gate (W^z, b^z per head), E per edge type and head, and the 4x MLP."""
    return (2 * 2 * width + 4 * (width * width + width) + (width + heads) + NUM_EDGE_TYPES * heads
            + (width * 4 * width + 4 * width) + (4 * width * width + width))


def dsg_shapes(config: ml_collections.ConfigDict, batch: int = 1) -> dict[str, SDS]:
    """ShapeDtypeStructs of the batched DSG arrays the config's records hold."""
    spec = RecordSpec.from_config(config)
    dtypes = spec.dsg.array_dtypes()
    return {k: SDS((batch, *shape), jnp.bool_ if dtypes[k] == np.bool_ else jnp.int32)
            for k, shape in spec.dsg.array_shapes().items()}


def latent_size(config: ml_collections.ConfigDict) -> int:
    """Frame size / the VAE's downsampling (x2 per level after the first)."""
    return config.data.resolution // 2 ** (len(config.vae.block_out_channels) - 1)


def eval_shape_denoiser(config: ml_collections.ConfigDict) -> tuple[SDS, dict]:
    """(output, params) shapes of build_denoiser(config.model) on one latent clip, without allocating."""
    latent = latent_size(config)
    x = SDS((1, config.data.num_frames, latent, latent, config.model.in_channels), jnp.float32)
    model = build_denoiser(config.model)

    def init(key, x, tokens, dsg, keep):
        return model.init_with_output(key, x, jnp.zeros((1,), jnp.int32), tokens, dsg, use_text=keep,
                                      use_dsg=keep)

    out, variables = jax.eval_shape(init, jax.random.key(0), x, SDS((1, config.text.max_len), jnp.int32),
                                    dsg_shapes(config), SDS((1,), jnp.bool_))
    return out, variables["params"]


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_config_is_consistent(name):
    c = PAPER_CONFIGS[name].get_config()
    base = tiny.get_config()
    for section in ("data", "planner", "dsg", "text", "model", "diffusion", "train", "mesh", "sample"):
        missing = set(base[section].keys()) - set(c[section].keys())
        assert not missing, f"{name}.{section} lacks the keys {missing} that configs/tiny.py has"
    assert latent_size(c) == 32 and c.data.resolution % 32 == 0
    assert c.model.in_channels == c.vae.latent_channels == 4
    assert c.data.num_frames == 16 and c.model.max_frames >= c.data.num_frames
    assert c.dsg.max_steps <= c.data.num_frames
    assert (c.model.rgtrm_layers, c.model.rgtrm_heads, c.model.rgtrm_width) == (12, 8, 768)
    assert c.diffusion.num_timesteps == 1000
    assert tuple(c.model.channels) == (320, 640, 1280, 1280)
    assert len(c.model.attention_levels) == len(c.model.channels)
    assert c.model.text_width == c.model.cross_attention_dim == {"paper": 768, "sd21_256": 1024}[name]
    assert c.model.text_encoder == "clip" and c.model.text_encoder_layer == -1   # SD 2.x: the 23-layer converted tower's last = OpenCLIP's penultimate
    assert c.model.rgtrm_remat in REMAT_OPTIONS
    assert c.planner.num_demonstrations == 5
    RecordSpec.from_config(c)
    no_dysen = PAPER_CONFIGS[name].get_config("no_dysen,no_swc")
    assert not no_dysen.model.use_dsg and not no_dysen.planner.sliding_window
    with pytest.raises(ValueError, match="no variant"):
        PAPER_CONFIGS[name].get_config("smoke")


# diffusers config.json of the UNets the configs describe (the fields that fix the architecture).
SD_UNET_CONFIGS = {
    "paper": {"_class_name": "UNet2DConditionModel", "attention_head_dim": 8, "cross_attention_dim": 768,
              "use_linear_projection": False},                                   # SD 1.x (LDM, CLIP ViT-L)
    "sd21_256": {"_class_name": "UNet2DConditionModel", "attention_head_dim": [5, 10, 20, 20],
                 "cross_attention_dim": 1024, "use_linear_projection": True},  # SD 2.1-base (OpenCLIP ViT-H)
}
SD_COMMON = {"block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "in_channels": 4, "out_channels": 4,
             "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
             "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "norm_num_groups": 32, "norm_eps": 1e-5,
             "upcast_attention": False}


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_config_unet_and_vae_have_stable_diffusions_layout(name):
    """config.model's UNet = the SD checkpoint's spatial layout (so `init_from.unet` loads by name), and
    config.vae is a valid VAEConfig with x8 downsampling."""
    unet_config = pytest.importorskip("dysen_jax.models.unet_config")
    vae = pytest.importorskip("dysen_jax.models.vae")
    c = PAPER_CONFIGS[name].get_config()
    ours = unet_config.from_model_config(c.model)
    sd = unet_config.from_diffusers_config({**SD_COMMON, **SD_UNET_CONFIGS[name]})
    for field in ("block_out_channels", "layers_per_block", "cross_attention", "num_attention_heads",
                  "transformer_layers_per_block", "cross_attention_dim", "in_channels", "use_linear_projection",
                  "norm_num_groups", "norm_eps", "upcast_attention"):
        assert getattr(ours, field) == getattr(sd, field), field
    assert ours.temporal_causal and ours.frame_affine and ours.temporal_conv and ours.temporal_attention
    vae_config = vae.VAEConfig.from_dict(c.vae.to_dict())
    assert vae_config.downsample_factor == 8 and vae_config.latent_channels == c.model.in_channels


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_config_denoiser_eval_shape(name):
    c = PAPER_CONFIGS[name].get_config()
    # CLIP's config comes from the converted checkpoint (model.text_encoder_path); the word-level
    # encoder of the same width/depth with CLIP's vocabulary size stands in for it here.
    c.model.text_encoder = "tiny"
    c.model.vocab_size = CLIP_VOCAB
    out, params = eval_shape_denoiser(c)
    assert out.shape == (1, 16, 32, 32, 4)
    parts = {k: count(v) for k, v in params.items()}
    total = count(params)
    print(f"\n{name}: {total / 1e6:.1f}M params: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in parts.items()))
    # The RGTrm's stack is scanned ([L, ...] leaves) and sized as in the paper.
    layers = params["rgtrm"][SCANNED_LAYERS]
    assert all(leaf.shape[0] == 12 for leaf in jax.tree.leaves(layers))
    assert count(layers) == 12 * rgtrm_layer_params(768, 8)
    # Text tower at CLIP's size: ~12 * width^2 per layer + the token table.
    t = c.model.text_width
    assert parts["text_encoder"] == pytest.approx(c.model.text_layers * 12 * t * t + CLIP_VOCAB * t, rel=0.01)
    # SD's UNet is 0.86B (1.x) / 0.87B (2.x); temporal layers and the DSG cross-attention add to it.
    assert 0.86e9 < parts["unet"] < 1.6e9


def test_rgtrm_paper_size_eval_shape_scanned_and_unscanned():
    c = paper.get_config()
    dsg = dsg_shapes(c)
    args = tuple(dsg[k] for k in ("node_words", "node_type", "edge_type", "node_mask", "step_mask", "step_time"))
    counts = {}
    for scan in (False, True):
        model = RGTrm(vocab_size=1000, width=768, num_layers=12, num_heads=8, scan_layers=scan)
        out, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), *args)
        assert out[0].shape == (1, 16, 64, 768)
        counts[scan] = count(variables["params"])
    layer = rgtrm_layer_params(768, 8)
    print(f"\nRGTrm L=12/8 heads/768: {layer / 1e6:.3f}M per layer, {counts[True] / 1e6:.2f}M with a "
          f"1000-word embedding")
    assert counts[False] == counts[True]
    assert 12 * layer <= counts[True] <= 12 * layer + 1000 * 768 + 4 * 768 * 768
    # ~ 12 * (4 * 768^2 + 2 * 768 * 3072) = 84.9M: attention + MLP weights dominate.
    assert 12 * layer == pytest.approx(12 * (4 * 768 ** 2 + 2 * 768 * 3072), rel=0.01)


# ----------------------------------------------------------------------------- scan / remat (tiny)

B, M, N, W, VOCAB, WIDTH, LAYERS = 2, 4, 6, 3, 40, 16, 3


def random_dsg(seed: int = 0) -> tuple[jax.Array, ...]:
    """RGTrm inputs: random words/types/typed edges, nodes appearing and disappearing, a padded step."""
    rng = np.random.default_rng(seed)
    node_words = rng.integers(1, VOCAB, (B, N, W)).astype(np.int32)
    node_type = rng.integers(1, 4, (B, N)).astype(np.int32)
    adjacent = rng.random((B, N, N)) < 0.6
    edge_type = np.where(adjacent | adjacent.transpose(0, 2, 1), rng.integers(2, NUM_EDGE_TYPES, (B, N, N)), 0)
    edge_type[:, np.arange(N), np.arange(N)] = 1
    node_mask = rng.random((B, M, N)) < 0.75
    node_mask[:, :, 0] = True
    step_mask = np.ones((B, M), bool)
    step_mask[1, -1] = False
    step_time = np.tile(np.arange(M, dtype=np.int32) * 2, (B, 1))
    return tuple(jnp.asarray(a) for a in (node_words, node_type, edge_type.astype(np.int32), node_mask,
                                          step_mask, step_time))


@pytest.fixture(scope="module")
def unscanned():
    """(model, params with every leaf perturbed so that E != 1 and the gate matters, inputs)."""
    args = random_dsg()
    model = RGTrm(VOCAB, WIDTH, LAYERS, num_heads=2)
    params = jit_init(model.init)(jax.random.key(0), *args)
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda p: p + 0.3 * rng.standard_normal(p.shape).astype(np.float32), params)
    return model, params, args


def test_scan_layout_and_restacked_params_give_the_same_output(unscanned):
    model, params, args = unscanned
    scanned = RGTrm(VOCAB, WIDTH, LAYERS, num_heads=2, scan_layers=True)
    fresh = jax.jit(scanned.init)(jax.random.key(0), *args)
    stacked = stack_layer_params(params, LAYERS)
    assert jax.tree.structure(stacked) == jax.tree.structure(fresh)
    assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(jnp.shape, fresh)
    # split_rngs={"params": True}: every scanned layer gets its own initialisation.
    query = fresh["params"][SCANNED_LAYERS]["query"]["kernel"]
    assert not np.allclose(query[0], query[1])
    roundtrip = unstack_layer_params(stacked)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), roundtrip, params))

    ref, mask = jax.jit(model.apply)(params, *args)
    out, mask_s = jax.jit(scanned.apply)(stacked, *args)
    np.testing.assert_array_equal(mask, mask_s)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
    assert np.abs(np.asarray(ref)).max() > 0.1


def test_scan_with_dropout_runs_and_depends_on_the_rng(unscanned):
    _, params, args = unscanned
    model = RGTrm(VOCAB, WIDTH, LAYERS, num_heads=2, dropout=0.5, scan_layers=True)
    apply = jax.jit(lambda p, key: model.apply(p, *args, deterministic=False, rngs={"dropout": key})[0])
    stacked = stack_layer_params(params, LAYERS)
    a, b = apply(stacked, jax.random.key(1)), apply(stacked, jax.random.key(2))
    assert np.all(np.isfinite(a)) and np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


@pytest.mark.parametrize("scan,remat", [(False, "full"), (True, "full"), (True, "dots")])
def test_remat_gives_the_same_output_and_gradients(unscanned, scan, remat):
    model, params, args = unscanned
    remat_model = RGTrm(VOCAB, WIDTH, LAYERS, num_heads=2, scan_layers=scan, remat=remat)

    def loss_and_grad(m, p):
        return jax.jit(jax.value_and_grad(lambda p: jnp.mean(m.apply(p, *args)[0] ** 2)))(p)

    ref_loss, ref_grads = loss_and_grad(model, params)
    loss, grads = loss_and_grad(remat_model, stack_layer_params(params, LAYERS) if scan else params)
    if scan:
        grads = unstack_layer_params(grads)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(ref_grads))
    for path_g, g_ref in zip(jax.tree.leaves_with_path(grads), jax.tree.leaves(ref_grads)):
        path, g = path_g
        np.testing.assert_allclose(g, g_ref, atol=1e-5 * scale, rtol=1e-4, err_msg=jax.tree_util.keystr(path))


def test_unknown_remat_is_rejected(unscanned):
    _, _, args = unscanned
    with pytest.raises(ValueError, match="remat"):
        jax.eval_shape(RGTrm(VOCAB, WIDTH, 1, num_heads=2, remat="everything").init, jax.random.key(0), *args)


def test_build_denoiser_reads_rgtrm_scan_and_remat():
    c = tiny.get_config("smoke")
    c.model.vocab_size = VOCAB
    assert not c.model.rgtrm_scan and c.model.rgtrm_remat == "none"
    c.model.rgtrm_scan, c.model.rgtrm_remat, c.model.rgtrm_layers = True, "dots", 2
    c.model.channels = (32, 32)     # divisible by 32 GroupNorm groups (SD-layout UNets)
    model = build_denoiser(c.model)
    assert model.rgtrm_scan and model.rgtrm_remat == "dots"
    c.vae = ml_collections.ConfigDict({"block_out_channels": (8,)})   # pixel space: no downsampling
    c.model.in_channels = 3
    _, params = eval_shape_denoiser(c)
    assert set(params["rgtrm"]) == {"embed", SCANNED_LAYERS, "ln_final"}
    assert params["rgtrm"][SCANNED_LAYERS]["query"]["kernel"].shape == (2, 16, 2, 8)
