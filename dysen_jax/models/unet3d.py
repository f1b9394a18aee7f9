"""3D-UNet denoiser backbone (Dysen-VDM appendix A.1 + §4.2 eq. 6, VidRD temporal layers).

Video x [B, F, H, W, C]. Every op is either frame-local (spatial convs, per-frame affine, GroupNorm
with per-frame statistics, spatial attention, cross-attention, MLPs) or mixes frames only through
the temporal convolution and temporal attention, which look back only when `temporal_causal`. So
with `temporal_causal=True`, outputs for frames <= k do not depend on input frames > k.

Conditioning: `contexts` maps a name to (features [B, F or 1, L, D], mask [B, F or 1, L]); a leading
frame axis of F gives each frame its own context (H^G of the scene graph the frame shows), 1 shares
one context across frames (text H^Y). At each attention level the transformer block cross-attends to
the contexts in the order given (Dysen-VDM: "dsg" then "text", eq. 6).
"""

from __future__ import annotations

from typing import Mapping

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from dysen_jax.models.layers import (MLP, Dtype, FrameAffine, FrameConv, FrameGroupNorm,
                                     MultiHeadAttention, TemporalConv, TimestepEmbedding, causal_mask,
                                     key_mask, sinusoidal_embedding)

Array = jax.Array
Context = tuple[Array, Array]


class ResBlock(nn.Module):
    """Per-frame ResNet block with eq. 11's per-frame affine, timestep conditioning and a residual
    zero-initialised temporal convolution (causal when `temporal_causal`)."""

    features: int
    max_frames: int
    temporal_causal: bool
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, temb: Array, deterministic: bool = True) -> Array:
        h = nn.silu(FrameGroupNorm(dtype=self.dtype, name="norm1")(x))
        h = FrameConv(self.features, dtype=self.dtype, name="conv1")(h)
        h = FrameAffine(self.max_frames, self.dtype, name="frame_affine")(h)
        h = h + nn.Dense(self.features, dtype=self.dtype, name="temb")(nn.silu(temb))[:, None, None, None]
        h = nn.silu(FrameGroupNorm(dtype=self.dtype, name="norm2")(h))
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        h = FrameConv(self.features, zero_init=True, dtype=self.dtype, name="conv2")(h)
        skip = x if x.shape[-1] == self.features else FrameConv(
            self.features, kernel=1, dtype=self.dtype, name="skip")(x)
        return TemporalConv(self.temporal_causal, dtype=self.dtype, name="temporal_conv")(skip + h)


class TemporalAttention(nn.Module):
    """Self-attention across frames at every spatial location (eq. 12), residual, zero-init output.

    The causal variant masks scores before the softmax (lower-triangular M), so frame i attends to
    frames j <= i only and the weights still sum to one. Frame positions enter as sinusoidal
    features added to the normalised input.
    """

    num_heads: int
    causal: bool
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b, f, hh, ww, c = x.shape
        h = FrameGroupNorm(dtype=self.dtype, name="norm")(x)
        h = einops.rearrange(h, "b f h w c -> b h w f c")
        h = h + sinusoidal_embedding(jnp.arange(f), c).astype(h.dtype)
        mask = causal_mask(f)[None, :, :] if self.causal else None
        h = MultiHeadAttention(self.num_heads, zero_init_out=True, dtype=self.dtype, name="attn")(h, mask=mask)
        return x + einops.rearrange(h, "b h w f c -> b f h w c")


class SpatialTransformer(nn.Module):
    """Per-frame transformer block: spatial self-attention, then one cross-attention per context in
    order (H^G then H^Y, eq. 6), then an MLP; each pre-LN and residual. Wrapped in a GroupNorm +
    proj_in and a zero-initialised proj_out so the block starts as the identity."""

    num_heads: int
    context_names: tuple[str, ...]
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, contexts: Mapping[str, Context], deterministic: bool = True) -> Array:
        b, f, hh, ww, c = x.shape
        drop = lambda t: nn.Dropout(self.dropout)(t, deterministic=deterministic)
        ln = lambda name: nn.LayerNorm(dtype=self.dtype, name=name)
        h = nn.Dense(c, dtype=self.dtype, name="proj_in")(FrameGroupNorm(dtype=self.dtype, name="norm")(x))
        h = einops.rearrange(h, "b f h w c -> b f (h w) c")
        h = h + drop(MultiHeadAttention(self.num_heads, dtype=self.dtype, name="self_attn")(ln("ln_self")(h)))
        for name in self.context_names:
            feats, mask = contexts[name]
            attn = MultiHeadAttention(self.num_heads, dtype=self.dtype, name=f"cross_attn_{name}")
            h = h + drop(attn(ln(f"ln_{name}")(h), context=feats.astype(self.dtype), mask=key_mask(mask)))
        h = h + drop(MLP(dropout=self.dropout, dtype=self.dtype, name="mlp")(ln("ln_mlp")(h), deterministic))
        h = nn.Dense(c, kernel_init=nn.initializers.zeros, dtype=self.dtype, name="proj_out")(h)
        return x + einops.rearrange(h, "b f (h w) c -> b f h w c", h=hh, w=ww)


class AttentionBlock(nn.Module):
    """Temporal attention across frames, then the per-frame spatial/cross-attention transformer."""

    num_heads: int
    temporal_causal: bool
    context_names: tuple[str, ...]
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, contexts: Mapping[str, Context], deterministic: bool = True) -> Array:
        x = TemporalAttention(self.num_heads, self.temporal_causal, self.dtype, name="temporal_attn")(x)
        return SpatialTransformer(self.num_heads, self.context_names, self.dropout, self.dtype,
                                  name="transformer")(x, contexts, deterministic)


class Downsample(nn.Module):
    """Per-frame stride-2 3x3 convolution."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return FrameConv(x.shape[-1], strides=2, dtype=self.dtype, name="conv")(x)


class Upsample(nn.Module):
    """Per-frame nearest-neighbour x2 upsampling followed by a 3x3 convolution."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
        return FrameConv(x.shape[-1], dtype=self.dtype, name="conv")(x)


class UNet3D(nn.Module):
    """Video UNet: x [B, F, H, W, C], timesteps [B], contexts -> [B, F, H, W, C] (ε or v).

    `channels[i]` is the width at level i (H, W halve between levels), `attention_levels[i]` puts an
    AttentionBlock after every ResBlock of level i; the middle block always has one. The final
    convolution is zero-initialised, so the untrained model predicts 0.
    """

    channels: tuple[int, ...]
    num_res_blocks: int
    attention_levels: tuple[bool, ...]
    num_heads: int
    temporal_causal: bool
    max_frames: int
    context_names: tuple[str, ...]
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    def _check_inputs(self, x: Array) -> None:
        """Raises on inconsistent attributes or an input the UNet cannot downsample."""
        if len(self.attention_levels) != len(self.channels):
            raise ValueError(f"attention_levels {self.attention_levels} must have one flag per level of "
                             f"channels {self.channels}")
        factor = 2 ** (len(self.channels) - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"frame size {x.shape[2:4]} must be divisible by {factor} for "
                             f"{len(self.channels)} levels")

    @nn.compact
    def __call__(self, x: Array, timesteps: Array, contexts: Mapping[str, Context],
                 deterministic: bool = True) -> Array:
        self._check_inputs(x)
        out_channels = x.shape[-1]
        temb = TimestepEmbedding(4 * self.channels[0], dtype=self.dtype, name="time_embed")(
            jnp.broadcast_to(timesteps, x.shape[:1]))
        res = lambda feats, name: ResBlock(feats, self.max_frames, self.temporal_causal, self.dropout,
                                           self.dtype, name=name)
        attn = lambda name: AttentionBlock(self.num_heads, self.temporal_causal, self.context_names,
                                           self.dropout, self.dtype, name=name)

        h = FrameConv(self.channels[0], dtype=self.dtype, name="conv_in")(x.astype(self.dtype))
        skips = [h]
        for level, feats in enumerate(self.channels):
            for i in range(self.num_res_blocks):
                h = res(feats, f"down_{level}_res_{i}")(h, temb, deterministic)
                if self.attention_levels[level]:
                    h = attn(f"down_{level}_attn_{i}")(h, contexts, deterministic)
                skips.append(h)
            if level < len(self.channels) - 1:
                h = Downsample(self.dtype, name=f"down_{level}_sample")(h)
                skips.append(h)

        h = res(self.channels[-1], "mid_res_0")(h, temb, deterministic)
        h = attn("mid_attn")(h, contexts, deterministic)
        h = res(self.channels[-1], "mid_res_1")(h, temb, deterministic)

        for level in reversed(range(len(self.channels))):
            for i in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = res(self.channels[level], f"up_{level}_res_{i}")(h, temb, deterministic)
                if self.attention_levels[level]:
                    h = attn(f"up_{level}_attn_{i}")(h, contexts, deterministic)
            if level > 0:
                h = Upsample(self.dtype, name=f"up_{level}_sample")(h)

        h = nn.silu(FrameGroupNorm(dtype=self.dtype, name="norm_out")(h))
        return FrameConv(out_channels, zero_init=True, dtype=self.dtype, name="conv_out")(h)
