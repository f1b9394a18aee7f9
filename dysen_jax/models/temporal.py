"""Temporal layers of the video UNet (VidRD / ModelScope), residual and the identity at init.

Both take frames folded into the batch ([B*F, H, W, C], as the spatial blocks) and mix frames only
at the same pixel:

- `TemporalConvLayer`: diffusers/ModelScope's TemporalConvLayer, four (GroupNorm, SiLU, 3x1x1 conv)
  stages with the last conv zero-initialised. Causal: each conv pads two frames on the left.
- `TransformerTemporal`: diffusers' TransformerTemporalModel (GroupNorm, proj_in, a transformer block
  with two self-attentions over frames and a GEGLU MLP, proj_out), with proj_out zero-initialised
  here. Causal: both self-attentions use the lower-triangular mask of eq. 12.

`norm` "clip" takes GroupNorm statistics over all frames of a clip (ModelScope's computation, needed
for its checkpoints); "frame" per frame, which causality requires (otherwise frame k's normalisation
depends on later frames).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dysen_jax.models.layers import Dtype, causal_mask, interleaved_positions
from dysen_jax.models.unet_blocks import BasicTransformerBlock, group_norm

Array = jax.Array


def _norm(x: Array, num_frames: int, groups: int, eps: float, mode: str, dtype: Dtype, name: str) -> Array:
    """GroupNorm of [B*F, H, W, C] with per-frame ("frame") or per-clip ("clip") statistics."""
    norm = group_norm(groups, eps, dtype, name)
    if mode == "frame":
        return norm(x)
    return norm(x.reshape((-1, num_frames) + x.shape[1:])).reshape(x.shape)


class FrameConv1D(nn.Module):
    """Kernel-3 convolution over the frame axis of [B, F, H, W, C] (torch Conv3d (3, 1, 1)), as one matmul of
    the three shifted clips stacked on channels. Params `kernel` [3, C_in, C_out] and `bias` like nn.Conv."""

    features: int
    causal: bool = False
    zero_init: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        f, c = x.shape[1], x.shape[-1]
        init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal()
        kernel = self.param("kernel", init, (3, c, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        pad = (2, 0) if self.causal else (1, 1)
        xp = jnp.pad(x, ((0, 0), pad, (0, 0), (0, 0), (0, 0)))
        stacked = jnp.concatenate([xp[:, k:k + f] for k in range(3)], axis=-1)
        out = jnp.dot(stacked, kernel.reshape(3 * c, self.features).astype(self.dtype))
        return out + bias.astype(self.dtype)


class TemporalConvLayer(nn.Module):
    """Residual stack of four (GroupNorm -> SiLU -> [dropout] -> 3x1x1 conv); conv4 zero-initialised."""

    groups: int
    causal: bool = False
    norm: str = "frame"
    eps: float = 1e-5
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, num_frames: int, deterministic: bool = True) -> Array:
        c = x.shape[-1]
        h = x
        for i in range(1, 5):
            h = nn.silu(_norm(h, num_frames, self.groups, self.eps, self.norm, self.dtype, f"norm{i}"))
            if i > 1:
                h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
            framed = h.reshape((-1, num_frames) + h.shape[1:])
            h = FrameConv1D(c, self.causal, zero_init=i == 4, dtype=self.dtype, name=f"conv{i}")(framed)
            h = h.reshape(x.shape)
        return x + h


class TransformerTemporal(nn.Module):
    """diffusers TransformerTemporalModel: attention across the frames at every pixel, residual.

    Width heads * head_dim inside (ModelScope's transformer_in: 8 x attention_head_dim, which may
    differ from the channels). `positions` adds diffusers' interleaved sinusoidal frame positions.
    """

    heads: int
    head_dim: int
    groups: int
    causal: bool = False
    norm: str = "frame"
    positions: bool = False
    num_layers: int = 1
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, num_frames: int, deterministic: bool = True) -> Array:
        n, hh, ww, c = x.shape
        inner = self.heads * self.head_dim
        h = _norm(x, num_frames, self.groups, 1e-6, self.norm, self.dtype, "norm")
        h = h.reshape(n // num_frames, num_frames, hh, ww, c).transpose(0, 2, 3, 1, 4)   # [B, H, W, F, C]
        h = nn.Dense(inner, dtype=self.dtype, name="proj_in")(h)
        mask = causal_mask(num_frames)[None] if self.causal else None
        pos = interleaved_positions(num_frames, inner) if self.positions else None
        for k in range(self.num_layers):
            h = BasicTransformerBlock(self.heads, self.head_dim, None, (), False, self.dropout, self.dtype,
                                      name=f"transformer_blocks_{k}")(h, {}, mask, pos, deterministic)
        h = nn.Dense(c, kernel_init=nn.initializers.zeros, dtype=self.dtype, name="proj_out")(h)
        return x + h.transpose(0, 3, 1, 2, 4).reshape(x.shape)
