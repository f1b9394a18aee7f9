"""Spatial building blocks of the UNet, laid out like diffusers' so Stable Diffusion weights load by name.

Module and parameter names follow diffusers' module tree with list indices joined by "_"
(`down_blocks.0.resnets.1.conv1.weight` -> `down_blocks_0/resnets_1/conv1/kernel`), which is what
`dysen_jax.convert.unet` relies on. Images are NHWC with frames folded into the batch ([B*F, H, W, C]),
so every op here is frame-local: GroupNorm statistics, convolutions and spatial attention never mix
frames. The two additions to diffusers' blocks are identity at init: eq. 11's per-frame affine in
`ResnetBlock` and the extra (DSG) cross-attentions in `BasicTransformerBlock`.
"""

from __future__ import annotations

import functools
import math
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from dysen_jax.models.layers import Dtype, FrameAffine, LayerNorm, flat_attention, key_mask

Array = jax.Array
Context = tuple[Array, Array]


def group_norm(groups: int, eps: float, dtype: Dtype, name: str) -> nn.GroupNorm:
    """torch.nn.GroupNorm equivalent; statistics over every non-batch axis of its input, in float32."""
    return nn.GroupNorm(num_groups=groups, epsilon=eps, dtype=dtype, use_fast_variance=False, name=name)


def layer_norm(dtype: Dtype, name: str) -> LayerNorm:
    """torch.nn.LayerNorm equivalent (eps 1e-5, not flax's 1e-6; params as flax nn.LayerNorm's)."""
    return LayerNorm(epsilon=1e-5, dtype=dtype, name=name)


def conv2d(features: int, dtype: Dtype, name: str, kernel: int = 3, stride: int = 1, padding: int = 1,
           zero_init: bool = False) -> nn.Conv:
    """torch Conv2d with symmetric explicit padding (flax "SAME" pads stride-2 convs on one side only)."""
    init = nn.initializers.zeros if zero_init else nn.initializers.lecun_normal()
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((padding, padding),) * 2,
                   kernel_init=init, dtype=dtype, name=name)


class TimestepEmbedding(nn.Module):
    """diffusers TimestepEmbedding: linear_1 -> SiLU -> linear_2 on the sinusoidal features."""

    width: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: Array) -> Array:
        h = nn.silu(nn.Dense(self.width, dtype=self.dtype, name="linear_1")(features.astype(self.dtype)))
        return nn.Dense(self.width, dtype=self.dtype, name="linear_2")(h)


def _query_blocks(a: Array, chunk: int) -> Array:
    """[N, Q, ...] -> [Q / chunk, N, chunk, ...]."""
    return jnp.moveaxis(a.reshape((a.shape[0], a.shape[1] // chunk, chunk) + a.shape[2:]), 1, 0)


def _merge_blocks(a: Array) -> Array:
    """Inverse of `_query_blocks`."""
    a = jnp.moveaxis(a, 0, 1)
    return a.reshape((a.shape[0], -1) + a.shape[3:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def blockwise_attention(q: Array, k: Array, v: Array, chunk: int) -> Array:
    """Unmasked softmax attention q [N, Q, h, d], k/v [N, K, h, d] -> [N, Q, h, d], queries in blocks of
    `chunk` (Q a multiple of it), with a flash-attention backward pass.

    Forward: per block, scores [N, h, chunk, K] (float32), softmax, weighted values; it keeps only the
    output and the per-query log-sum-exp. Backward: per block, recomputes p = exp(s - lse) and forms
    dv += p^T g, ds = p (g v^T - rowsum(g o)), dq = ds k, dk += ds^T q: one score recomputation and
    no softmax re-normalisation, where autodiff of a checkpointed block recomputes the whole forward
    block (values matmul included). On this CPU 1.9x faster fwd+bwd than that at 1024 tokens; never
    holds the [Q, K] scores, so the memory stays O(chunk K) on accelerators too.
    """
    return _blockwise_fwd(q, k, v, chunk)[0]


def _block_scores(q: Array, k: Array) -> Array:
    return jnp.einsum("nqhd,nkhd->nhqk", q, k, preferred_element_type=jnp.float32) / math.sqrt(q.shape[-1])


def _blockwise_fwd(q: Array, k: Array, v: Array, chunk: int) -> tuple[Array, tuple[Array, ...]]:
    def block(q_block: Array) -> tuple[Array, Array]:
        scores = _block_scores(q_block, k)
        top = jnp.max(scores, axis=-1, keepdims=True)
        weights = jnp.exp(scores - top)
        total = jnp.sum(weights, axis=-1, keepdims=True)
        out = jnp.einsum("nhqk,nkhd->nqhd", (weights / total).astype(v.dtype), v, preferred_element_type=jnp.float32)
        return out, (top + jnp.log(total))[..., 0]

    out_blocks, log_sum_exp = jax.lax.map(block, _query_blocks(q, chunk))   # float32: kept for rowsum(g o)
    return _merge_blocks(out_blocks).astype(v.dtype), (q, k, v, out_blocks, log_sum_exp)


def _blockwise_bwd(chunk: int, residuals: tuple[Array, ...], grad: Array) -> tuple[Array, Array, Array]:
    q, k, v, out_blocks, log_sum_exp = residuals
    grad_blocks = _query_blocks(grad, chunk)
    row_dot = jnp.einsum("cnqhd,cnqhd->cnhq", grad_blocks.astype(jnp.float32), out_blocks)

    def block(carry: tuple[Array, Array], xs: tuple[Array, ...]) -> tuple[tuple[Array, Array], Array]:
        dk, dv = carry
        q_block, g_block, lse, rd = xs
        weights = jnp.exp(_block_scores(q_block, k) - lse[..., None])
        dv = dv + jnp.einsum("nhqk,nqhd->nkhd", weights, g_block.astype(jnp.float32))
        dp = jnp.einsum("nqhd,nkhd->nhqk", g_block, v, preferred_element_type=jnp.float32)
        ds = weights * (dp - rd[..., None]) / math.sqrt(q.shape[-1])
        dk = dk + jnp.einsum("nhqk,nqhd->nkhd", ds, q_block.astype(jnp.float32))
        return (dk, dv), jnp.einsum("nhqk,nkhd->nqhd", ds, k.astype(jnp.float32)).astype(q.dtype)

    zeros = lambda a: jnp.zeros(a.shape, jnp.float32)
    (dk, dv), dq_blocks = jax.lax.scan(block, (zeros(k), zeros(v)),
                                       (_query_blocks(q, chunk), grad_blocks, log_sum_exp, row_dot))
    return _merge_blocks(dq_blocks), dk.astype(k.dtype), dv.astype(v.dtype)


blockwise_attention.defvjp(_blockwise_fwd, _blockwise_bwd)


def chunked_attention(q: Array, k: Array, v: Array, mask: Array | None, chunk: int) -> Array:
    """`flat_attention` with the queries in blocks of `chunk`: same result, less memory and time.

    Unmasked (self-attention): `blockwise_attention` on the flattened batch dims. Masked with a mask
    that is constant along the queries: each block under jax.checkpoint, so the [chunk, K] score
    blocks are recomputed in the backward pass instead of stored. Falls back to one block when Q is
    not a multiple of `chunk` or the mask varies along the queries.
    """
    num_q = q.shape[-3]
    if not chunk or num_q <= chunk or num_q % chunk or (mask is not None and mask.shape[-2] != 1):
        return flat_attention(q, k, v, mask)
    if mask is None:
        batch = jnp.broadcast_shapes(q.shape[:-3], k.shape[:-3], v.shape[:-3])
        flat = lambda a: jnp.broadcast_to(a, batch + a.shape[-3:]).reshape((-1,) + a.shape[-3:])
        out = blockwise_attention(flat(q), flat(k), flat(v), chunk)
        return out.reshape(batch + out.shape[1:])
    blocks = jnp.moveaxis(q.reshape(q.shape[:-3] + (num_q // chunk, chunk) + q.shape[-2:]), -4, 0)
    block = jax.checkpoint(lambda qb: flat_attention(qb, k, v, mask))
    out = jnp.moveaxis(jax.lax.map(block, blocks), 0, -4)
    return out.reshape(out.shape[:-4] + (num_q,) + out.shape[-2:])


class Attention(nn.Module):
    """diffusers Attention (to_q/to_k/to_v without bias, to_out_0 with bias).

    x [..., Q, Dq], context [..., K, Dk] (None: self-attention; batch dims broadcast against x's),
    mask [..., heads or 1, Q or 1, K] bool. `zero_init_out` makes a residual use start as the identity.
    `upcast` computes q.k in float32 (SD 2.1's upcast_attention); the softmax always is. Attention over
    at least `chunk` keys runs in query blocks of `chunk` (`chunked_attention`; 0 = never).
    """

    heads: int
    head_dim: int
    zero_init_out: bool = False
    upcast: bool = False
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    chunk: int = 0

    @nn.compact
    def __call__(self, x: Array, context: Array | None = None, mask: Array | None = None,
                 deterministic: bool = True) -> Array:
        context = x if context is None else context.astype(self.dtype)
        inner = self.heads * self.head_dim
        split = lambda t: t.reshape(t.shape[:-1] + (self.heads, self.head_dim))
        dense = lambda name: nn.Dense(inner, use_bias=False, dtype=self.dtype, name=name)
        q, k, v = split(dense("to_q")(x)), split(dense("to_k")(context)), split(dense("to_v")(context))
        if self.upcast:
            q, k = q.astype(jnp.float32), k.astype(jnp.float32)
        out = chunked_attention(q, k, v, mask, self.chunk if k.shape[-3] >= self.chunk else 0)
        out = out.reshape(out.shape[:-2] + (inner,))
        init = nn.initializers.zeros if self.zero_init_out else nn.initializers.lecun_normal()
        out = nn.Dense(x.shape[-1], kernel_init=init, dtype=self.dtype, name="to_out_0")(out)
        return nn.Dropout(self.dropout)(out, deterministic=deterministic)


class GEGLU(nn.Module):
    """proj to 2*inner, then hidden * GELU(gate) (exact erf GELU, as torch)."""

    inner: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        hidden, gate = jnp.split(nn.Dense(2 * self.inner, dtype=self.dtype, name="proj")(x), 2, axis=-1)
        return hidden * nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
    """diffusers FeedForward with GEGLU: net_0 (GEGLU, 4x width) -> dropout -> net_2 (Dense)."""

    mult: int = 4
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        h = GEGLU(self.mult * x.shape[-1], self.dtype, name="net_0")(x)
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="net_2")(h)


class BasicTransformerBlock(nn.Module):
    """diffusers BasicTransformerBlock (pre-LN): self-attention, [our extra cross-attentions], cross-attention
    to `cross_context` (or a second self-attention when None, as in temporal blocks), GEGLU feed-forward.

    `extra_contexts` are Dysen-VDM's added cross-attentions (the DSG's H^G, eq. 6), each residual with a
    zero-initialised output and its own LayerNorm, run after attn1 and before the text cross-attention
    attn2, so a block built from SD weights computes exactly SD's function at init. `positions`
    ([L, C] or None) is added to the normalised input of attn1 and attn2 (diffusers' sinusoidal
    positional_embeddings), `self_mask` masks both self-attentions (the causal mask of eq. 12).
    """

    heads: int
    head_dim: int
    cross_context: str | None = "text"
    extra_contexts: tuple[str, ...] = ()
    upcast: bool = False
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    chunk: int = 0

    @nn.compact
    def __call__(self, h: Array, contexts: Mapping[str, Context], self_mask: Array | None = None,
                 positions: Array | None = None, deterministic: bool = True) -> Array:
        attn = lambda name, zero=False: Attention(self.heads, self.head_dim, zero, self.upcast, self.dropout,
                                                  self.dtype, self.chunk, name=name)
        pos = (lambda t: t + positions.astype(t.dtype)) if positions is not None else (lambda t: t)
        h = h + attn("attn1")(pos(layer_norm(self.dtype, "norm1")(h)), None, self_mask, deterministic)
        for name in self.extra_contexts:
            feats, mask = contexts[name]
            n = layer_norm(self.dtype, f"norm_{name}")(h)
            h = h + attn(f"attn_{name}", zero=True)(n, feats, key_mask(mask), deterministic)
        n = layer_norm(self.dtype, "norm2")(h)
        if self.cross_context is None:
            h = h + attn("attn2")(pos(n), None, self_mask, deterministic)
        else:
            feats, mask = contexts[self.cross_context]
            h = h + attn("attn2")(n, feats, key_mask(mask), deterministic)
        n = layer_norm(self.dtype, "norm3")(h)
        return h + FeedForward(dropout=self.dropout, dtype=self.dtype, name="ff")(n, deterministic)


class Transformer2D(nn.Module):
    """diffusers Transformer2DModel on continuous input, per frame: GroupNorm (eps 1e-6) -> proj_in ->
    transformer_blocks -> proj_out, residual. Input [B*F, H, W, C]; contexts are [B, F or 1, L, D]
    (per-frame or shared), so the tokens are viewed as [B, F, H*W, C] for the attention. `chunk`: query
    block size of attention over >= chunk keys (the spatial self-attention)."""

    heads: int
    num_layers: int
    groups: int
    cross_context: str = "text"
    extra_contexts: tuple[str, ...] = ()
    upcast: bool = False
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    chunk: int = 0

    @nn.compact
    def __call__(self, x: Array, contexts: Mapping[str, Context], num_frames: int,
                 deterministic: bool = True) -> Array:
        n, hh, ww, c = x.shape
        h = group_norm(self.groups, 1e-6, self.dtype, "norm")(x)
        h = nn.Dense(c, dtype=self.dtype, name="proj_in")(h.reshape(n // num_frames, num_frames, hh * ww, c))
        for k in range(self.num_layers):
            h = BasicTransformerBlock(self.heads, c // self.heads, self.cross_context, self.extra_contexts,
                                      self.upcast, self.dropout, self.dtype, self.chunk,
                                      name=f"transformer_blocks_{k}")(
                h, contexts, deterministic=deterministic)
        h = nn.Dense(c, dtype=self.dtype, name="proj_out")(h)
        return x + h.reshape(n, hh, ww, c)


class ResnetBlock(nn.Module):
    """diffusers ResnetBlock2D (eps, groups, output_scale_factor), plus eq. 11's per-frame affine
    (identity at init) after conv1 when `max_frames` > 0. x [B*F, H, W, C], temb [B*F, T]."""

    out_channels: int
    groups: int
    eps: float
    output_scale_factor: float = 1.0
    max_frames: int = 0
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, temb: Array, num_frames: int, deterministic: bool = True) -> Array:
        h = nn.silu(group_norm(self.groups, self.eps, self.dtype, "norm1")(x))
        h = conv2d(self.out_channels, self.dtype, "conv1")(h)
        if self.max_frames:
            framed = h.reshape((-1, num_frames) + h.shape[1:])
            h = FrameAffine(self.max_frames, self.dtype, name="frame_affine")(framed).reshape(h.shape)
        h = h + nn.Dense(self.out_channels, dtype=self.dtype, name="time_emb_proj")(nn.silu(temb))[:, None, None, :]
        h = nn.silu(group_norm(self.groups, self.eps, self.dtype, "norm2")(h))
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        h = conv2d(self.out_channels, self.dtype, "conv2")(h)
        if x.shape[-1] != self.out_channels:
            x = conv2d(self.out_channels, self.dtype, "conv_shortcut", kernel=1, padding=0)(x)
        out = x + h
        return out if self.output_scale_factor == 1.0 else out / self.output_scale_factor


class Downsample(nn.Module):
    """diffusers Downsample2D(use_conv=True): stride-2 3x3 conv with `padding` on every side (0: torch's
    asymmetric (0, 1) pad first)."""

    padding: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.padding == 0:
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return conv2d(x.shape[-1], self.dtype, "conv", stride=2, padding=self.padding)(x)


class Upsample(nn.Module):
    """diffusers Upsample2D(use_conv=True): nearest-neighbour x2, then a 3x3 conv."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        n, hh, ww, c = x.shape
        x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, hh, 2, ww, 2, c)).reshape(n, 2 * hh, 2 * ww, c)
        return conv2d(c, self.dtype, "conv")(x)
