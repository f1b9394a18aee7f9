"""Tests of the Flax models: masking, edge-type scaling, time causality, CFG nulls, ablation, jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from configs.tiny import get_config
from dysen_jax.dsg.tensorize import NUM_EDGE_TYPES
from dysen_jax.models.denoiser import DysenDenoiser, build_denoiser, frame_graphs
from dysen_jax.models.gnn import GraphConvEncoder
from dysen_jax.models.layers import masked_softmax
from dysen_jax.models.rgtrm import RGTrm
from dysen_jax.models.text_encoder import TinyTextEncoder
from dysen_jax.models.init_compile import jit_init

# One xdist worker runs this module (`pytest -n 2 --dist loadgroup`), so its module fixtures are built once.
pytestmark = pytest.mark.xdist_group("models")

B, F, M, N, W, S, RES, VOCAB = 2, 4, 4, 6, 3, 5, 8, 40


def perturb(params, seed: int = 1, scale: float = 0.3):
    """Adds noise to every parameter so zero-initialised branches (temporal layers, output convs,
    E = 1) are active and a test can see whether information flows through them."""
    rng = np.random.default_rng(seed)   # host-side noise: no per-shape XLA compilations
    return jax.tree.map(lambda p: jnp.asarray(np.asarray(p) + scale * rng.standard_normal(p.shape), p.dtype),
                        params)


def make_dsg(seed: int = 0) -> dict[str, np.ndarray]:
    """Random batched DSG arrays: the last node slot is padding, others appear/disappear over time."""
    rng = np.random.default_rng(seed)
    valid = N - 1
    node_words = rng.integers(1, VOCAB, (B, N, W)).astype(np.int32)
    node_words[:, :, -1] = 0
    node_words[:, -1] = 0
    node_type = rng.integers(1, 4, (B, N)).astype(np.int32)
    node_type[:, -1] = 0
    adjacent = rng.random((B, N, N)) < 0.6
    adjacent = adjacent | adjacent.transpose(0, 2, 1)
    edge_type = np.where(adjacent, rng.integers(2, NUM_EDGE_TYPES, (B, N, N)), 0).astype(np.int32)
    edge_type[:, np.arange(N), np.arange(N)] = 1
    edge_type[:, -1, :] = 0
    edge_type[:, :, -1] = 0
    node_mask = rng.random((B, M, N)) < 0.75
    node_mask[:, :, 0] = True
    node_mask[:, :, 1] = True
    node_mask[:, :, valid] = False
    step_mask = np.ones((B, M), bool)
    step_mask[1, -1] = False
    return {"node_words": node_words, "node_type": node_type, "edge_type": edge_type,
            "node_mask": node_mask, "step_mask": step_mask,
            "step_time": np.tile(np.arange(M, dtype=np.int32) * 2, (B, 1)),
            "frame_step": np.tile((np.arange(F) * M // F).astype(np.int32), (B, 1))}


def rgtrm_args(dsg):
    return tuple(jnp.asarray(dsg[k]) for k in ("node_words", "node_type", "edge_type", "node_mask",
                                                "step_mask", "step_time"))


@pytest.fixture(scope="module")
def rgtrm():
    model = RGTrm(vocab_size=VOCAB, width=16, num_layers=2, num_heads=2)
    params = perturb(jit_init(model.init)(jax.random.key(0), *rgtrm_args(make_dsg())))
    return model, params, jax.jit(lambda p, dsg: model.apply(p, *rgtrm_args(dsg)))


def model_config(**overrides):
    mc = get_config().model
    mc.vocab_size = VOCAB
    mc.max_frames = F
    mc.text_width, mc.text_layers, mc.text_heads = 16, 1, 2
    mc.rgtrm_width, mc.rgtrm_layers, mc.rgtrm_heads = 16, 1, 2
    mc.channels, mc.heads = (8, 16), 2
    mc.attention_levels = (False, False)   # the middle block still has temporal + cross attention
    mc.temporal_attention_levels = ()
    mc.update(overrides)
    return mc


def denoiser_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(B, F, RES, RES, 3)), jnp.float32)
    tokens = rng.integers(1, VOCAB, (B, S)).astype(np.int32)
    tokens[0, 3:] = 0
    return x, jnp.asarray([10, 700]), jnp.asarray(tokens), {k: jnp.asarray(v) for k, v in make_dsg(seed).items()}


def make_apply(model: DysenDenoiser):
    """Jitted apply over (params, x, dsg, use_text, use_dsg) with the fixed t and tokens."""
    _, t, tokens, _ = denoiser_inputs()
    return jax.jit(lambda p, x, dsg, keep_text, keep_dsg: model.apply(
        p, x, t, tokens, dsg, use_text=keep_text, use_dsg=keep_dsg))


def init_fn(model: DysenDenoiser, with_dsg: bool = True):
    """key -> params for the test inputs (jit it, or eval_shape it to get the structure cheaply)."""
    x, t, tokens, dsg = denoiser_inputs()
    ones = jnp.ones((B,), bool)
    return lambda key: model.init(key, x, t, tokens, dsg if with_dsg else None, use_text=ones, use_dsg=ones)


@pytest.fixture(scope="module")
def causal_denoiser():
    """(model, fresh params, perturbed params, jitted apply) for temporal_causal=True."""
    model = build_denoiser(model_config(temporal_causal=True))
    params = jit_init(init_fn(model))(jax.random.key(0))
    return model, params, perturb(params, scale=0.1), make_apply(model)


# ----------------------------------------------------------------------------------------- layers


def test_masked_softmax_empty_rows_are_zero_and_finite():
    scores = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = jnp.array([[True, False, True], [False, False, False]])
    w = masked_softmax(scores, mask)
    np.testing.assert_allclose(w[1], 0.0)
    np.testing.assert_allclose(w[0].sum(), 1.0, rtol=1e-6)
    assert w[0, 1] == 0.0
    grad = jax.grad(lambda s: jnp.sum(masked_softmax(s, mask) * jnp.arange(3.0)))(scores)
    assert np.all(np.isfinite(grad))


def test_text_encoder_ignores_trailing_padding():
    enc = TinyTextEncoder(vocab_size=VOCAB, width=16, num_layers=2, num_heads=2)
    tokens = jnp.array([[5, 6, 7, 0, 0]], jnp.int32)
    params = perturb(jit_init(enc.init)(jax.random.key(0), tokens))
    apply = jax.jit(enc.apply)
    feats, mask = apply(params, tokens)
    longer, longer_mask = apply(params, jnp.pad(tokens, ((0, 0), (0, 4))))
    assert feats.shape == (1, 5, 16)
    np.testing.assert_array_equal(mask, tokens != 0)
    np.testing.assert_allclose(feats[:, 3:], 0.0)
    np.testing.assert_allclose(longer[:, :5], feats, atol=1e-5)
    assert not longer_mask[:, 5:].any()


# ----------------------------------------------------------------------------------------- RGTrm


def test_rgtrm_shapes_mask_and_padded_nodes_are_zero(rgtrm):
    model, params, apply = rgtrm
    dsg = make_dsg()
    feats, mask = apply(params, dsg)
    assert feats.shape == (B, M, N, 16) and mask.shape == (B, M, N)
    np.testing.assert_array_equal(mask, dsg["node_mask"] & dsg["step_mask"][..., None])
    assert np.all(np.isfinite(feats))
    np.testing.assert_allclose(np.where(mask[..., None], 0.0, feats), 0.0)


def test_rgtrm_masked_node_label_and_type_do_not_leak(rgtrm):
    _, params, apply = rgtrm
    dsg = make_dsg()
    # Node 2 is absent at every step but keeps its edges: only the mask may hide it.
    dsg["node_mask"][:, :, 2] = False
    changed = {k: v.copy() for k, v in dsg.items()}
    changed["node_words"][:, 2] = [7, 8, 9]
    changed["node_type"][:, 2] = 3
    changed["node_words"][:, -1] = [11, 12, 13]   # the padding slot too
    changed["node_type"][:, -1] = 1
    base, mask = apply(params, dsg)
    new, _ = apply(params, changed)
    assert mask[..., 2].sum() == 0
    np.testing.assert_allclose(new, base, atol=1e-6)
    # Sanity: the same change on a present node does move present outputs.
    changed["node_words"][:, 0] = [7, 8, 9]
    moved, _ = apply(params, changed)
    assert np.abs(np.asarray(moved) - np.asarray(base))[np.asarray(mask)].max() > 1e-3


def test_rgtrm_edge_types_scale_attention(rgtrm):
    model, params, apply = rgtrm
    dsg = make_dsg()
    relabelled = dict(dsg)
    et = dsg["edge_type"]
    relabelled["edge_type"] = np.where(et > 1, (et - 2 + 1) % (NUM_EDGE_TYPES - 2) + 2, et).astype(np.int32)
    assert np.array_equal(relabelled["edge_type"] != 0, et != 0)
    base, mask = apply(params, dsg)
    new, _ = apply(params, relabelled)
    assert np.abs(np.asarray(new) - np.asarray(base))[np.asarray(mask)].max() > 1e-3
    # At initialisation E = 1 for every edge type, so the relabelling has no effect yet.
    fresh = jit_init(model.init)(jax.random.key(0), *rgtrm_args(dsg))
    np.testing.assert_allclose(apply(fresh, relabelled)[0], apply(fresh, dsg)[0], atol=1e-6)


@pytest.mark.parametrize("m", [0, 1, 2])
def test_rgtrm_step_m_ignores_later_steps(rgtrm, m):
    _, params, apply = rgtrm
    dsg = make_dsg()
    later = {k: v.copy() for k, v in dsg.items()}
    later["node_mask"][:, m + 1:] = ~later["node_mask"][:, m + 1:]
    later["step_time"][:, m + 1:] += 5
    later["step_mask"][:, m + 1:] = True
    base, _ = apply(params, dsg)
    new, _ = apply(params, later)
    np.testing.assert_allclose(new[:, :m + 1], base[:, :m + 1], atol=1e-6)
    assert np.abs(np.asarray(new[:, m + 1:]) - np.asarray(base[:, m + 1:])).max() > 1e-3


def test_rgtrm_step_m_depends_on_previous_step_queries(rgtrm):
    _, params, apply = rgtrm
    dsg = make_dsg()
    dsg["node_mask"][:, :2, :2] = True            # nodes 0, 1 present at steps 0 and 1
    earlier = {k: v.copy() for k, v in dsg.items()}
    earlier["step_time"][:, 0] += 3               # changes step 0's node states only
    base, _ = apply(params, dsg)
    new, _ = apply(params, earlier)
    assert np.abs(np.asarray(new[:, 1, :2]) - np.asarray(base[:, 1, :2])).max() > 1e-4


# ----------------------------------------------------------------------------------------- GNN (Table 4 ablation)


@pytest.fixture(scope="module")
def gnn():
    model = GraphConvEncoder(vocab_size=VOCAB, width=16, num_layers=2)
    params = perturb(jit_init(model.init)(jax.random.key(0), *rgtrm_args(make_dsg())))
    return model, params, jax.jit(lambda p, dsg: model.apply(p, *rgtrm_args(dsg)))


def test_gnn_shapes_mask_and_absent_nodes_do_not_leak(gnn):
    _, params, apply = gnn
    dsg = make_dsg()
    dsg["node_mask"][:, :, 2] = False
    feats, mask = apply(params, dsg)
    assert feats.shape == (B, M, N, 16) and np.all(np.isfinite(feats))
    np.testing.assert_array_equal(mask, dsg["node_mask"] & dsg["step_mask"][..., None])
    np.testing.assert_allclose(np.where(mask[..., None], 0.0, feats), 0.0)
    changed = {k: v.copy() for k, v in dsg.items()}
    changed["node_words"][:, 2] = [7, 8, 9]       # absent node: no effect
    np.testing.assert_allclose(apply(params, changed)[0], feats, atol=1e-6)
    changed["node_words"][:, 0] = [7, 8, 9]       # present node: its neighbours move too
    moved = np.abs(np.asarray(apply(params, changed)[0]) - np.asarray(feats))
    neighbours = (dsg["edge_type"][:, 1, 0] != 0) & mask[:, 0, 1]
    assert neighbours.any() and moved[:, 0, 1][neighbours].max() > 1e-4


def test_gnn_has_no_recurrence_over_scene_graphs(gnn):
    """Unlike the RGTrm (eq. 4 gates scene graph m's queries with m-1's), each scene graph is encoded alone."""
    _, params, apply = gnn
    dsg = make_dsg()
    other = {k: v.copy() for k, v in dsg.items()}
    other["step_time"][:, 0] += 3
    other["node_mask"][:, 2:] = ~other["node_mask"][:, 2:]
    base, _ = apply(params, dsg)
    new, _ = apply(params, other)
    np.testing.assert_allclose(new[:, 1], base[:, 1], atol=1e-6)
    assert np.abs(np.asarray(new[:, 0]) - np.asarray(base[:, 0])).max() > 1e-3


def test_gnn_ablation_denoiser_swaps_the_encoder_only():
    rgtrm_model = build_denoiser(model_config())
    gnn_model = build_denoiser(model_config(dsg_encoder="gnn"))
    shapes = lambda m: jax.eval_shape(init_fn(m), jax.random.key(0))["params"]
    p_rgtrm, p_gnn = shapes(rgtrm_model), shapes(gnn_model)
    assert "gnn" in p_gnn and "rgtrm" not in p_gnn
    same = lambda p: jax.tree.map(lambda a: a.shape, {k: v for k, v in p.items() if k not in ("rgtrm", "gnn")})
    assert same(p_rgtrm) == same(p_gnn)
    with pytest.raises(ValueError, match="model.dsg_encoder"):
        build_denoiser(model_config(dsg_encoder="gcn"))


# ----------------------------------------------------------------------------------------- denoiser


def test_frame_graphs_gathers_the_scene_graph_of_each_frame():
    feats = jnp.arange(2 * 3 * 2 * 1, dtype=jnp.float32).reshape(2, 3, 2, 1)
    mask = jnp.arange(2 * 3 * 2).reshape(2, 3, 2) % 2 == 0
    steps = jnp.array([[0, 0, 2, 1], [2, 2, 2, 2]])
    got, got_mask = frame_graphs(feats, mask, steps)
    for b in range(2):
        for f in range(4):
            np.testing.assert_array_equal(got[b, f], feats[b, steps[b, f]])
            np.testing.assert_array_equal(got_mask[b, f], mask[b, steps[b, f]])


def test_denoiser_shape_and_finite_with_all_conditions_dropped(causal_denoiser):
    _, _, params, apply = causal_denoiser
    x, _, _, dsg = denoiser_inputs()
    ones, zeros = jnp.ones((B,), bool), jnp.zeros((B,), bool)
    cond = apply(params, x, dsg, ones, ones)
    uncond = apply(params, x, dsg, zeros, zeros)
    assert cond.shape == x.shape and uncond.shape == x.shape
    assert np.all(np.isfinite(cond)) and np.all(np.isfinite(uncond))
    assert np.abs(np.asarray(cond - uncond)).max() > 1e-4
    # Dropping the DSG of example 0 only leaves example 1 untouched.
    mixed = apply(params, x, dsg, ones, jnp.array([False, True]))
    np.testing.assert_allclose(mixed[1], cond[1], atol=1e-5)
    assert np.abs(np.asarray(mixed[0] - cond[0])).max() > 1e-5


def test_untrained_denoiser_predicts_zero(causal_denoiser):
    _, params, _, apply = causal_denoiser
    x, _, _, dsg = denoiser_inputs()
    ones = jnp.ones((B,), bool)
    np.testing.assert_allclose(apply(params, x, dsg, ones, ones), 0.0)


@pytest.mark.parametrize("k", [0, 2])
def test_causal_denoiser_frames_up_to_k_ignore_later_frames(causal_denoiser, k):
    _, _, params, apply = causal_denoiser
    x, _, _, dsg = denoiser_inputs()
    ones = jnp.ones((B,), bool)
    x2 = x.at[:, k + 1:].set(jax.random.normal(jax.random.key(9), x[:, k + 1:].shape))
    out, out2 = apply(params, x, dsg, ones, ones), apply(params, x2, dsg, ones, ones)
    np.testing.assert_allclose(out2[:, :k + 1], out[:, :k + 1], atol=1e-5)
    assert np.abs(np.asarray(out2[:, k + 1:] - out[:, k + 1:])).max() > 1e-3


def test_non_causal_denoiser_frames_see_later_frames(causal_denoiser):
    causal_model, _, params, _ = causal_denoiser
    model = build_denoiser(model_config(temporal_causal=False))
    # Causality changes no parameter, so the causal model's (perturbed) params serve here too.
    shapes = lambda m: jax.tree.map(lambda a: a.shape, jax.eval_shape(init_fn(m), jax.random.key(0)))
    assert shapes(model) == shapes(causal_model)
    apply = make_apply(model)
    x, _, _, dsg = denoiser_inputs()
    ones = jnp.ones((B,), bool)
    x2 = x.at[:, 1:].set(0.0)
    diff = apply(params, x2, dsg, ones, ones)[:, 0] - apply(params, x, dsg, ones, ones)[:, 0]
    assert np.abs(np.asarray(diff)).max() > 1e-3


def test_temporal_conv_causal_sets_the_convs_apart_from_the_attention():
    """With the temporal attentions off, only the convs mix frames: `temporal_conv_causal=True` keeps
    frames <= k blind to later frames even when `temporal_causal=False`, and False lets frame 0 see them."""
    x, _, _, dsg = denoiser_inputs()
    ones, k = jnp.ones((B,), bool), 1
    x2 = x.at[:, k + 1:].set(0.0)
    changes = {}
    for conv_causal in (True, False):
        model = build_denoiser(model_config(temporal_causal=False, temporal_conv_causal=conv_causal,
                                            temporal_attention=False))
        assert model.unet.conv_causal is conv_causal and not model.unet.causal
        params = perturb(jit_init(init_fn(model))(jax.random.key(0)), scale=0.1)
        apply = make_apply(model)
        diff = apply(params, x2, dsg, ones, ones) - apply(params, x, dsg, ones, ones)
        changes[conv_causal] = float(np.abs(np.asarray(diff[:, :k + 1])).max())
    assert changes[True] < 1e-5 and changes[False] > 1e-3
    # Eq. 12's mask over ModelScope's symmetric convs may use clip-wide GroupNorm; fully causal may not.
    unet_config = pytest.importorskip("dysen_jax.models.unet_config")
    unet_config.UNet3DConfig(temporal_causal=True, temporal_conv_causal=False, temporal_norm="clip").validate()
    with pytest.raises(ValueError, match="temporal_norm='frame'"):
        unet_config.UNet3DConfig(temporal_causal=True, temporal_norm="clip").validate()


def test_text_only_ablation_builds_no_dsg_branch_and_jit_init_apply_works():
    model = build_denoiser(model_config(use_dsg=False))
    x, t, tokens, _ = denoiser_inputs()
    keep = jnp.array([True, False])

    @jax.jit
    def init_apply(key, x):
        params = model.init(key, x, t, tokens, None, use_text=keep, use_dsg=keep)
        return model.apply(params, x, t, tokens, None, use_text=keep, use_dsg=keep), params

    out, params = init_apply(jax.random.key(0), x)
    assert out.shape == x.shape and np.all(np.isfinite(out))
    names = set(params["params"])
    assert "rgtrm" not in names and "null_dsg" not in names
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    paths = ["/".join(str(getattr(p, "key", p)) for p in path) for path, _ in flat]
    assert not any("attn_dsg" in p for p in paths)
    assert any("attn2" in p for p in paths)   # SD's text cross-attention


def test_full_denoiser_param_structure(causal_denoiser):
    _, params, _, _ = causal_denoiser
    assert {"text_encoder", "rgtrm", "null_text", "null_dsg", "unet"} <= set(params["params"])
    frame_affine = params["params"]["unet"]["down_blocks_0"]["resnets_0"]["frame_affine"]
    assert frame_affine["scale"].shape == (F, 8)
    np.testing.assert_array_equal(frame_affine["scale"], 1.0)


def test_denoiser_requires_resolved_vocab():
    with pytest.raises(ValueError, match="vocab_size"):
        build_denoiser(model_config(vocab_size=-1))


def test_temporal_attention_levels_add_identity_layers_that_keep_causality(causal_denoiser):
    """model.temporal_attention_levels puts temporal attentions at ResNet-only levels: fresh ones are the
    identity (so a checkpoint without them loads and computes the same), trained ones mix frames causally."""
    base_model, _, base_params, base_apply = causal_denoiser
    model = build_denoiser(model_config(temporal_causal=True, temporal_attention_levels=(True, True)))
    fresh = jit_init(init_fn(model))(jax.random.key(3))
    unet = fresh["params"]["unet"]
    assert {"temp_attentions_0"} <= set(unet["down_blocks_0"]) and "attentions_0" not in unet["down_blocks_0"]
    assert {"temp_attentions_0", "temp_attentions_1"} <= set(unet["up_blocks_1"])   # layers_per_block + 1
    assert "temp_attentions_0" not in base_params["params"]["unet"]["down_blocks_0"]

    def graft(new, old):   # old's values where the names match, new's elsewhere (init_from.checkpoint's rule)
        return unflatten_dict({**flatten_dict(new), **flatten_dict(old)})
    params = graft(fresh, base_params)
    apply = make_apply(model)
    x, _, _, dsg = denoiser_inputs()
    ones = jnp.ones((B,), bool)
    np.testing.assert_allclose(apply(params, x, dsg, ones, ones), base_apply(base_params, x, dsg, ones, ones),
                               atol=1e-5)
    trained = graft(perturb(fresh, scale=0.1), base_params)
    for level, block in (("down_blocks_0", "temp_attentions_0"), ("up_blocks_1", "temp_attentions_1")):
        trained["params"]["unet"][level][block] = perturb(fresh, seed=5, scale=0.3)["params"]["unet"][level][block]
    out = apply(trained, x, dsg, ones, ones)
    assert np.abs(np.asarray(out - apply(params, x, dsg, ones, ones))).max() > 1e-3
    x2 = x.at[:, 2:].set(0.0)
    np.testing.assert_allclose(apply(trained, x2, dsg, ones, ones)[:, :2], out[:, :2], atol=1e-5)
    with pytest.raises(ValueError, match="temporal_attention_levels"):
        build_denoiser(model_config(temporal_attention_levels=(True, True, True))).init(
            jax.random.key(0), *denoiser_inputs(), use_text=ones, use_dsg=ones)
