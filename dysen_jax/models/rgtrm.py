"""Recurrent Graph Transformer (RGTrm, eq. 2-5): encodes a dynamic scene graph into H^G.

Inputs are the batched arrays of `dysen_jax.dsg.tensorize` (node slots are stable across the M
scene graphs, edges are static, presence is `node_mask[m]`). For every scene graph m and layer l:

    Q_m, K_m, V_m = W^Q H_m, W^K H_m, W^V H_m                       (per head)
    z_m  = sigma(W^z (Q_m ⊙ K_m) + b^z)                              one gate per node and head (eq. 5)
    Q̂_m  = (1 - z_m) Q_{m-1} + z_m Q_m                               (eq. 4)
    w_ij = Softmax_{j in N(i)}(Q̂_m,i K_m,j / sqrt(d)) · E[e_ij]      (eq. 3)
    H_m <- H_m + W^O ||_k sum_j w_ij V_m,j, then H_m <- H_m + MLP(LN(H_m))   (eq. 2, pre-LN)

Reading of eq. 4 chosen here: Q_{m-1} is the previous scene graph's *raw* query of the same node
slot in the same layer, so all M scene graphs are computed in parallel (one batched attention over
[B, M]). When the node was absent at m-1 (or m = 0) there is no previous query and Q_{m-1} := Q_m,
i.e. the gate has no effect. The alternative reading with the gated Q̂_{m-1} makes eq. 4 a linear
recurrence Q̂_m = a_m Q̂_{m-1} + b_m that `jax.lax.associative_scan` evaluates in O(log M); we do not
use it because the parallel reading already carries information forward through L layers and keeps
the layer a single attention.

Neighbourhood N(i) at step m: j with edge_type[i, j] != 0 and both i, j present at m (and the step
exists). E is a learned positive scalar per edge type and head, softplus-parametrised and
initialised to exactly 1. Absent or padded nodes get all-zero attention rows (no NaN), are zeroed
after every layer and are never attended to, so they cannot influence present nodes. Scene graph m
only looks back (Q_{m-1}), so H^G_m never depends on scene graphs after m.

Depth at scale (paper: L = 12, 8 heads, width 768). `scan_layers=True` runs the layer stack under
`nn.scan`: one layer body is traced and compiled once and its params are stacked on a leading
axis of size L (`params["layers"][...]`, shape [L, ...]), so compile time does not grow with L.
`scan_layers=False` keeps one module per layer (`params["layer_{i}"]`), as before; the two hold
the same numbers in different layouts (`stack_layer_params` / `unstack_layer_params` convert).
`remat` rematerialises each layer in the backward pass: "none"; "full" (save only the layer
input); "dots" (save every matmul result, recompute the element-wise ops); "dots_no_batch" (save
only the weight matmuls, recompute the attention scores too). See `REMAT_POLICIES`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dysen_jax.dsg.tensorize import NUM_EDGE_TYPES, NUM_NODE_TYPES
from dysen_jax.models.layers import (MLP, Dtype, attend, attention_scores, masked_softmax,
                                     sinusoidal_embedding)

Array = jax.Array

# remat option -> jax.checkpoint policy (what the backward pass may keep from the forward pass).
REMAT_POLICIES: dict[str, Callable[..., bool]] = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
REMAT_OPTIONS: tuple[str, ...] = ("none", *REMAT_POLICIES)
SCANNED_LAYERS = "layers"   # name of the stacked layer params when scan_layers=True


def masked_mean(x: Array, mask: Array, axis: int) -> Array:
    """Mean of x over `axis` restricted to mask (0 where nothing is selected)."""
    m = mask.astype(x.dtype)[..., None]
    return jnp.sum(x * m, axis=axis) / jnp.maximum(jnp.sum(m, axis=axis), 1.0)


def presence(node_mask: Array, step_mask: Array) -> Array:
    """[B, M, N] bool: node slot n is present in an existing scene graph m."""
    return node_mask & step_mask[..., None]


def graph_adjacency(edge_type: Array, present: Array) -> Array:
    """[B, M, N, N] bool: i may attend j at step m (adjacent, and both present at m)."""
    return (edge_type != 0)[:, None] & present[..., :, None] & present[..., None, :]


def previous_query(q: Array, present: Array) -> Array:
    """Q_{m-1} of eq. 4 for q [B, M, N, h, d]: the previous step's query of the same slot, or Q_m
    itself where there is none (m = 0, or the node was absent at m-1)."""
    shifted = jnp.concatenate([q[:, :1], q[:, :-1]], axis=1)
    had_previous = jnp.concatenate([jnp.zeros_like(present[:, :1]), present[:, :-1]], axis=1)
    return jnp.where(had_previous[..., None, None], shifted, q)


class DSGEmbedding(nn.Module):
    """Initial node states H^0: mean word embedding of the label + node-type embedding + an embedding
    of the scene graph's start time. Returns [B, M, N, width]."""

    vocab_size: int
    width: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, node_words: Array, node_type: Array, step_time: Array) -> Array:
        words = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, name="word_embed")(node_words)
        label = masked_mean(words, node_words != 0, axis=-2)
        kind = nn.Embed(NUM_NODE_TYPES, self.width, dtype=self.dtype, name="type_embed")(node_type)
        time = nn.Dense(self.width, dtype=self.dtype, name="time_embed")(
            sinusoidal_embedding(step_time, self.width))
        return (label + kind)[:, None] + time[:, :, None]


class QueryGate(nn.Module):
    """Eq. 4-5: Q̂_m = (1 - z_m) Q_{m-1} + z_m Q_m with z_m = sigma(W^z (Q_m ⊙ K_m) + b^z) per head."""

    @nn.compact
    def __call__(self, q: Array, k: Array, present: Array) -> Array:
        heads, head_dim = q.shape[-2:]
        w = self.param("w_z", nn.initializers.normal(1.0 / math.sqrt(head_dim)), (heads, head_dim))
        b = self.param("b_z", nn.initializers.zeros, (heads,))
        z = jax.nn.sigmoid(jnp.einsum("...hd,hd->...h", (q * k).astype(jnp.float32), w) + b)
        z = z[..., None].astype(q.dtype)
        return (1 - z) * previous_query(q, present) + z * q


class EdgeScale(nn.Module):
    """E of eq. 3: a positive learned scalar per edge type and head, softplus(θ), θ init so E = 1."""

    num_heads: int

    @nn.compact
    def __call__(self, edge_type: Array) -> Array:
        theta = self.param("edge_logits", nn.initializers.constant(math.log(math.e - 1.0)),
                           (NUM_EDGE_TYPES, self.num_heads))
        scale = jax.nn.softplus(theta)[edge_type]          # [B, N, N, h]
        return jnp.moveaxis(scale, -1, -3)                  # [B, h, N, N]


class RGTrmLayer(nn.Module):
    """One pre-LN RGTrm layer over all scene graphs at once: h [B, M, N, D] -> [B, M, N, D]."""

    num_heads: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: Array, present: Array, adjacency: Array, edge_type: Array,
                 deterministic: bool = True) -> Array:
        width = h.shape[-1]
        if width % self.num_heads:
            raise ValueError(f"rgtrm width {width} is not divisible by heads={self.num_heads}")
        drop = lambda x: nn.Dropout(self.dropout)(x, deterministic=deterministic)
        dense = lambda name: nn.DenseGeneral((self.num_heads, width // self.num_heads), dtype=self.dtype,
                                             name=name)
        x = nn.LayerNorm(dtype=self.dtype, name="ln_attn")(h)
        q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)
        q_hat = QueryGate(name="gate")(q, k, present)
        weights = masked_softmax(attention_scores(q_hat, k), adjacency[:, :, None])
        weights = weights * EdgeScale(self.num_heads, name="edge_scale")(edge_type)[:, None]
        out = nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype, name="out")(attend(weights, v))
        h = h + drop(out)
        h = h + drop(MLP(dropout=self.dropout, dtype=self.dtype, name="mlp")(
            nn.LayerNorm(dtype=self.dtype, name="ln_mlp")(h), deterministic))
        return h * present[..., None].astype(h.dtype)


def remat_layer(fn: Callable[..., Any], remat: str, prevent_cse: bool = True) -> Callable[..., Any]:
    """`fn(layer_module, *args)` wrapped in `nn.remat` with the named policy ("none": unchanged).

    prevent_cse=False under `nn.scan` (the scan already keeps XLA from merging the recomputation
    with the forward pass, and the flag would only block optimisations there)."""
    if remat not in REMAT_OPTIONS:
        raise ValueError(f"rgtrm remat={remat!r}: use one of {REMAT_OPTIONS}")
    if remat == "none":
        return fn
    return nn.remat(fn, policy=REMAT_POLICIES[remat], prevent_cse=prevent_cse)


def stack_layer_params(params: Any, num_layers: int) -> Any:
    """RGTrm params of the unscanned layout (`layer_0` .. `layer_{L-1}`) -> the scanned layout
    (`layers`, every leaf stacked on a new leading axis). Works on `{"params": ...}` or the inner
    dict; other entries are kept."""
    if "params" in params:
        return {**params, "params": stack_layer_params(params["params"], num_layers)}
    names = [f"layer_{i}" for i in range(num_layers)]
    rest = {k: v for k, v in params.items() if k not in names}
    return {**rest, SCANNED_LAYERS: jax.tree.map(lambda *leaves: jnp.stack(leaves), *(params[n] for n in names))}


def unstack_layer_params(params: Any) -> Any:
    """Inverse of `stack_layer_params`: `layers` [L, ...] -> `layer_0` .. `layer_{L-1}`."""
    if "params" in params:
        return {**params, "params": unstack_layer_params(params["params"])}
    stacked = params[SCANNED_LAYERS]
    num_layers = jax.tree.leaves(stacked)[0].shape[0]
    rest = {k: v for k, v in params.items() if k != SCANNED_LAYERS}
    return {**rest, **{f"layer_{i}": jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(num_layers)}}


class RGTrm(nn.Module):
    """Recurrent Graph Transformer (see module docstring).

    __call__(node_words [B,N,W], node_type [B,N], edge_type [B,N,N], node_mask [B,M,N],
    step_mask [B,M], step_time [B,M]) -> (H^G [B, M, N, width], mask [B, M, N] bool).

    `scan_layers`: run the L layers under `nn.scan` (params stacked on a leading axis, compile time
    independent of L). `remat`: one of REMAT_OPTIONS, applied to every layer.
    """

    vocab_size: int
    width: int
    num_layers: int
    num_heads: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    scan_layers: bool = False
    remat: str = "none"

    @nn.compact
    def __call__(self, node_words: Array, node_type: Array, edge_type: Array, node_mask: Array,
                 step_mask: Array, step_time: Array, deterministic: bool = True) -> tuple[Array, Array]:
        present = presence(node_mask.astype(bool), step_mask.astype(bool))
        adjacency = graph_adjacency(edge_type, present)
        h = DSGEmbedding(self.vocab_size, self.width, self.dtype, name="embed")(node_words, node_type,
                                                                                 step_time)
        h = h * present[..., None].astype(h.dtype)

        # `deterministic` is a Python bool (Dropout needs it concrete): closed over, never traced.
        def layer_fn(layer: RGTrmLayer, h: Array, present: Array, adjacency: Array,
                     edge_type: Array) -> Array:
            return layer(h, present, adjacency, edge_type, deterministic).astype(h.dtype)

        make_layer = lambda name: RGTrmLayer(self.num_heads, self.dropout, self.dtype, name=name)
        if self.scan_layers:
            body = remat_layer(lambda layer, h, *args: (layer_fn(layer, h, *args), None), self.remat,
                               prevent_cse=False)
            stack = nn.scan(body, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                            in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=self.num_layers)
            h, _ = stack(make_layer(SCANNED_LAYERS), h, present, adjacency, edge_type)
        else:
            body = remat_layer(layer_fn, self.remat)
            for i in range(self.num_layers):
                h = body(make_layer(f"layer_{i}"), h, present, adjacency, edge_type)
        h = nn.LayerNorm(dtype=self.dtype, name="ln_final")(h)
        return h * present[..., None].astype(h.dtype), present
