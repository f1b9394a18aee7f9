"""A plain graph neural network over the DSG: the "RGTrm -> GNN" row of Dysen-VDM's Table 4.

Same inputs, outputs, node embedding (`DSGEmbedding`: label words + node type + scene-graph start
time) and width/depth (`model.rgtrm_*`) as the RGTrm, so the ablation changes only the encoder.
Each layer is a residual graph convolution with a pre-LN MLP, run on every scene graph m on its
own:

    h_i <- h_i + W^O mean_{j in N(i) ∪ {i}} W^V LN(h)_j      (mean aggregation, GCN-style)
    h_i <- h_i + MLP(LN(h_i))

What the RGTrm has and this does not: attention (neighbours are averaged, not weighted by
query-key similarity), the learned edge-type scales E of eq. 3, and the recurrence over scene
graphs (the query gate of eq. 4-5): H^G_m sees scene graph m only, through its time embedding.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dysen_jax.models.layers import MLP, Dtype
from dysen_jax.models.rgtrm import DSGEmbedding, graph_adjacency, presence

Array = jax.Array


class GraphConvLayer(nn.Module):
    """One residual mean-aggregation graph convolution + MLP: h [B, M, N, D] -> [B, M, N, D]."""

    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: Array, present: Array, adjacency: Array, deterministic: bool = True) -> Array:
        width = h.shape[-1]
        drop = lambda x: nn.Dropout(self.dropout)(x, deterministic=deterministic)
        x = nn.LayerNorm(dtype=self.dtype, name="ln_conv")(h)
        values = nn.Dense(width, dtype=self.dtype, name="value")(x)
        self_loop = jnp.eye(h.shape[-2], dtype=bool) & present[..., :, None]
        neighbours = (adjacency | self_loop).astype(h.dtype)                     # [B, M, N, N]
        mean = jnp.einsum("bmij,bmjd->bmid", neighbours, values) / jnp.maximum(
            jnp.sum(neighbours, axis=-1, keepdims=True), 1.0)
        h = h + drop(nn.Dense(width, dtype=self.dtype, name="out")(mean))
        h = h + drop(MLP(dropout=self.dropout, dtype=self.dtype, name="mlp")(
            nn.LayerNorm(dtype=self.dtype, name="ln_mlp")(h), deterministic))
        return h * present[..., None].astype(h.dtype)


class GraphConvEncoder(nn.Module):
    """__call__ as `RGTrm.__call__`: (node_words, node_type, edge_type, node_mask, step_mask, step_time)
    -> (H^G [B, M, N, width], present [B, M, N] bool)."""

    vocab_size: int
    width: int
    num_layers: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, node_words: Array, node_type: Array, edge_type: Array, node_mask: Array,
                 step_mask: Array, step_time: Array, deterministic: bool = True) -> tuple[Array, Array]:
        present = presence(node_mask.astype(bool), step_mask.astype(bool))
        adjacency = graph_adjacency(edge_type, present)
        h = DSGEmbedding(self.vocab_size, self.width, self.dtype, name="embed")(node_words, node_type, step_time)
        h = h * present[..., None].astype(h.dtype)
        for i in range(self.num_layers):
            h = GraphConvLayer(self.dropout, self.dtype, name=f"layer_{i}")(h, present, adjacency, deterministic)
        h = nn.LayerNorm(dtype=self.dtype, name="ln_final")(h)
        return h * present[..., None].astype(h.dtype), present
