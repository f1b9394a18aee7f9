"""3D-UNet denoiser backbone: Stable Diffusion's UNet inflated with temporal layers (Dysen-VDM eq. 6, 11, 12; VidRD).

Video x [B, F, H, W, C] -> [B, F, H, W, C_out]. The spatial path is diffusers' UNet2DConditionModel
(conv_in, time_embedding, down_blocks, mid_block, up_blocks, conv_norm_out, conv_out) applied to every
frame (frames folded into the batch), with the same module tree, so `dysen_jax.convert.unet` loads an
SD 1.x / 2.x checkpoint by name. Around it, as in diffusers' UNet3DConditionModel (ModelScope):
a TemporalConvLayer after every ResNet, a TransformerTemporal after every spatial transformer (or, with
`temporal_attention_levels`, after every layer of the levels it names) and optionally one after conv_in
(`transformer_in`). Dysen-VDM adds the per-frame affine of eq. 11 in
every ResNet and, in every transformer block, a cross-attention to the DSG features H^G before the
text cross-attention (eq. 6). Every addition is residual with a zero-initialised output (the affine
starts at scale 1, shift 0), so a UNet3D holding SD's spatial weights and freshly initialised
temporal/DSG weights computes exactly SD applied frame by frame.

Block order follows ModelScope: ResNet -> temporal conv -> spatial transformer (self-attention,
H^G, H^Y, MLP) -> temporal attention. With `temporal_causal` the temporal attentions use the
lower-triangular mask of eq. 12 and the temporal convs pad on the left (`temporal_conv_causal`, None:
the same as `temporal_causal`, can set them apart); with both, and per-frame GroupNorm statistics,
outputs for frames <= k do not depend on input frames > k. Causality changes no parameter, but a
causal conv's taps are frames f-2..f and a symmetric one's f-1..f+1: switching the convs shifts what
every trained kernel sees.

Memory: `config.remat` (model.unet_remat) wraps every ResNet, temporal conv, spatial transformer and
temporal attention in `nn.remat` with that policy; module names, hence params, are unchanged.

Conditioning: `contexts` maps a name to (features [B, F or 1, L, D], mask [B, F or 1, L]); a frame
axis of F gives every frame its own context (the scene graph it shows), 1 shares it (the text).
"text" feeds SD's cross-attention (attn2); every other name in `context_names` gets an added
cross-attention `attn_<name>`, in the order given (Dysen-VDM: "dsg").
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from dysen_jax.models.layers import Dtype, timestep_features
from dysen_jax.models.rgtrm import remat_layer
from dysen_jax.models.temporal import TemporalConvLayer, TransformerTemporal
from dysen_jax.models.unet_blocks import (Downsample, ResnetBlock, TimestepEmbedding, Transformer2D, Upsample,
                                          conv2d, group_norm)
from dysen_jax.models.unet_config import UNet3DConfig

Array = jax.Array
Context = tuple[Array, Array]
TEXT = "text"


def temporal_conv_layer(cfg: UNet3DConfig, dtype: Dtype, name: str, h: Array, num_frames: int,
                        deterministic: bool) -> Array:
    """The TemporalConvLayer `name` applied to h [B*F, H, W, C], under `cfg.remat`."""
    layer = TemporalConvLayer(cfg.norm_num_groups, cfg.conv_causal, cfg.temporal_norm, 1e-5,
                              cfg.temporal_dropout, dtype, name=name)
    return remat_layer(lambda m, h: m(h, num_frames, deterministic), cfg.remat)(layer, h)


def temporal_transformer(cfg: UNet3DConfig, heads: int, head_dim: int, dtype: Dtype, name: str, h: Array,
                         num_frames: int, deterministic: bool) -> Array:
    """The TransformerTemporal `name` applied to h [B*F, H, W, C], under `cfg.remat`."""
    layer = TransformerTemporal(heads, head_dim, cfg.norm_num_groups, cfg.temporal_causal, cfg.temporal_norm,
                                cfg.temporal_position == "sinusoidal", 1, cfg.temporal_dropout, dtype, name=name)
    return remat_layer(lambda m, h: m(h, num_frames, deterministic), cfg.remat)(layer, h)


TEMPORAL_LAYER_NAMES = ("temp_convs_", "temp_attentions_", "transformer_in")


def without_temporal_layers(params: Any) -> Any:
    """`params` with every temporal conv and temporal attention zeroed. Each is residual, x + f(x), and
    f ends in a projection that is then zero, so the UNet denoises every frame on its own (the frames
    still differ by their eq.-11 affine and scene graph): how much a trained model uses time
    (benchmarks/temporal_use.py)."""
    from flax.traverse_util import flatten_dict, unflatten_dict

    is_temporal = lambda path: any(str(key).startswith(TEMPORAL_LAYER_NAMES) for key in path)
    return unflatten_dict({path: jnp.zeros_like(v) if is_temporal(path) else v
                           for path, v in flatten_dict(params).items()})


class _Level(nn.Module):
    """Shared constructors of one resolution level's layers (ResNet + temporal conv, spatial transformer,
    temporal attention)."""

    config: UNet3DConfig
    level: int
    context_names: tuple[str, ...]
    dtype: Dtype = jnp.float32

    def resnet_and_temp_conv(self, j: int, h: Array, temb: Array, num_frames: int, deterministic: bool) -> Array:
        cfg = self.config
        resnet = ResnetBlock(cfg.block_out_channels[self.level], cfg.norm_num_groups, cfg.norm_eps,
                             self.output_scale, cfg.max_frames if cfg.frame_affine else 0, cfg.dropout, self.dtype,
                             name=f"resnets_{j}")
        h = remat_layer(lambda m, h, temb: m(h, temb, num_frames, deterministic), cfg.remat)(resnet, h, temb)
        if cfg.temporal_conv:
            h = temporal_conv_layer(cfg, self.dtype, f"temp_convs_{j}", h, num_frames, deterministic)
        return h

    def spatial_transformer(self, j: int, h: Array, contexts: Mapping[str, Context], num_frames: int,
                            deterministic: bool) -> Array:
        cfg = self.config
        extra = tuple(n for n in self.context_names if n != TEXT)
        spatial = Transformer2D(cfg.num_attention_heads[self.level], cfg.transformer_layers_per_block,
                                cfg.norm_num_groups, TEXT, extra, cfg.upcast_attention, cfg.dropout, self.dtype,
                                cfg.attention_chunk, name=f"attentions_{j}")
        return remat_layer(lambda m, h, contexts: m(h, contexts, num_frames, deterministic), cfg.remat)(
            spatial, h, contexts)

    def temporal_attention(self, j: int, h: Array, num_frames: int, deterministic: bool) -> Array:
        heads = self.config.num_attention_heads[self.level]
        return temporal_transformer(self.config, heads, h.shape[-1] // heads, self.dtype, f"temp_attentions_{j}",
                                    h, num_frames, deterministic)

    def layer(self, j: int, h: Array, temb: Array, contexts: Mapping[str, Context], num_frames: int,
              deterministic: bool) -> Array:
        """Layer j of a down/up block: ResNet, temporal conv[, spatial transformer][, temporal attention]."""
        h = self.resnet_and_temp_conv(j, h, temb, num_frames, deterministic)
        if self.config.cross_attention[self.level]:
            h = self.spatial_transformer(j, h, contexts, num_frames, deterministic)
        if self.config.temporal_attention_at(self.level):
            h = self.temporal_attention(j, h, num_frames, deterministic)
        return h

    @property
    def output_scale(self) -> float:
        return 1.0


class DownBlock(_Level):
    """down_blocks_i: layers_per_block x (ResNet, temporal conv[, spatial transformer][, temporal attention]),
    then a stride-2 downsampler except at the last level. Returns (h, skip activations)."""

    @nn.compact
    def __call__(self, h: Array, temb: Array, contexts: Mapping[str, Context], num_frames: int,
                 deterministic: bool = True) -> tuple[Array, list[Array]]:
        skips = []
        for j in range(self.config.layers_per_block):
            h = self.layer(j, h, temb, contexts, num_frames, deterministic)
            skips.append(h)
        if self.level < self.config.num_levels - 1:
            h = Downsample(self.config.downsample_padding, self.dtype, name="downsamplers_0")(h)
            skips.append(h)
        return h, skips


class MidBlock(_Level):
    """mid_block: ResNet, temporal conv, spatial transformer, temporal attention, ResNet, temporal conv."""

    @property
    def output_scale(self) -> float:
        return self.config.mid_block_scale_factor

    @nn.compact
    def __call__(self, h: Array, temb: Array, contexts: Mapping[str, Context], num_frames: int,
                 deterministic: bool = True) -> Array:
        h = self.resnet_and_temp_conv(0, h, temb, num_frames, deterministic)
        h = self.spatial_transformer(0, h, contexts, num_frames, deterministic)
        if self.config.temporal_attention:
            h = self.temporal_attention(0, h, num_frames, deterministic)
        return self.resnet_and_temp_conv(1, h, temb, num_frames, deterministic)


class UpBlock(_Level):
    """up_blocks_i (level = num_levels - 1 - i): (layers_per_block + 1) x (concat skip, ResNet, temporal conv
    [, spatial transformer][, temporal attention]), then a nearest x2 upsampler except at the top level."""

    @nn.compact
    def __call__(self, h: Array, skips: list[Array], temb: Array, contexts: Mapping[str, Context],
                 num_frames: int, deterministic: bool = True) -> Array:
        for j in range(self.config.layers_per_block + 1):
            h = jnp.concatenate([h, skips.pop()], axis=-1)
            h = self.layer(j, h, temb, contexts, num_frames, deterministic)
        if self.level > 0:
            h = Upsample(self.dtype, name="upsamplers_0")(h)
        return h


def pooled_conditions(contexts: Mapping[str, Context], names: tuple[str, ...], batch: int, num_frames: int,
                      width: int, dtype: Dtype) -> Array:
    """[B*F, width]: every context's masked mean over its tokens (text: one per clip; DSG: one per frame)
    through its own zero-init Dense (`pooled_<name>`), summed. Added to the timestep embedding, it reaches
    every ResNet at every resolution (Imagen / SDXL's pooled text embedding), a much shorter path for
    global facts such as the objects' colours than cross-attention at the low-resolution levels. Zero
    init: a checkpoint trained without it behaves the same until training moves the projections.
    Call inside a compact module (the Dense layers become its children)."""
    total = jnp.zeros((batch, num_frames, width), dtype)
    for name in names:
        feats, mask = contexts[name]                      # [B, 1 or F, S, D], [B, 1 or F, S]
        weights = mask.astype(feats.dtype)[..., None]
        pooled = (feats * weights).sum(-2) / jnp.maximum(weights.sum(-2), 1.0)
        projected = nn.Dense(width, dtype=dtype, kernel_init=nn.initializers.zeros, name=f"pooled_{name}")(pooled)
        total = total + jnp.broadcast_to(projected, (batch, num_frames, width)).astype(dtype)
    return total.reshape(batch * num_frames, width)


class UNet3D(nn.Module):
    """Video UNet: x [B, F, H, W, C], timesteps [B] (or scalar), contexts -> [B, F, H, W, C_out] (ε or v).

    `config` fixes the architecture (see UNet3DConfig); `context_names` the cross-attention inputs, which
    must include "text". H and W must be divisible by 2^(levels-1). With `zero_init_conv_out` a fresh
    init predicts 0.
    """

    config: UNet3DConfig
    context_names: tuple[str, ...] = (TEXT,)
    dtype: Dtype = jnp.float32

    def _check_inputs(self, x: Array, contexts: Mapping[str, Context]) -> None:
        cfg = self.config.validate()
        if TEXT not in self.context_names:
            raise ValueError(f"UNet3D.context_names={self.context_names} must include {TEXT!r} (SD's cross-attention)")
        missing = [n for n in self.context_names if n not in contexts]
        if missing:
            raise ValueError(f"contexts lack {missing} (got {sorted(contexts)})")
        if x.ndim != 5:
            raise ValueError(f"x must be [B, F, H, W, C], got shape {x.shape}")
        factor = 2 ** (cfg.num_levels - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"frame size {x.shape[2:4]} must be divisible by {factor} for {cfg.num_levels} levels")
        if (cfg.frame_affine and x.shape[1] > cfg.max_frames):
            raise ValueError(f"clip has {x.shape[1]} frames but the UNet was built with max_frames={cfg.max_frames}")

    @nn.compact
    def __call__(self, x: Array, timesteps: Array, contexts: Mapping[str, Context],
                 deterministic: bool = True) -> Array:
        self._check_inputs(x, contexts)
        cfg = self.config
        b, f, hh, ww, c = x.shape
        out_channels = cfg.out_channels or c
        ch0 = cfg.block_out_channels[0]
        t = jnp.broadcast_to(jnp.asarray(timesteps), (b,))
        temb = TimestepEmbedding(4 * ch0, self.dtype, name="time_embedding")(
            timestep_features(t, ch0, cfg.flip_sin_to_cos, cfg.freq_shift))
        temb = jnp.repeat(temb, f, axis=0)                                      # [B*F, 4*ch0]
        if cfg.pooled_conditions:
            temb = temb + pooled_conditions(contexts, self.context_names, b, f, temb.shape[-1], self.dtype)
        level = lambda cls, i, name: cls(cfg, i, self.context_names, self.dtype, name=name)

        h = conv2d(ch0, self.dtype, "conv_in")(x.reshape(b * f, hh, ww, c).astype(self.dtype))
        if cfg.temporal_transformer_in:
            h = temporal_transformer(cfg, cfg.transformer_in_heads, cfg.transformer_in_head_dim, self.dtype,
                                     "transformer_in", h, f, deterministic)
        skips = [h]
        for i in range(cfg.num_levels):
            h, level_skips = level(DownBlock, i, f"down_blocks_{i}")(h, temb, contexts, f, deterministic)
            skips += level_skips
        h = level(MidBlock, cfg.num_levels - 1, "mid_block")(h, temb, contexts, f, deterministic)
        for i in range(cfg.num_levels):
            n = cfg.layers_per_block + 1
            skips, block_skips = skips[:-n], skips[-n:]
            h = level(UpBlock, cfg.num_levels - 1 - i, f"up_blocks_{i}")(h, block_skips, temb, contexts, f,
                                                                          deterministic)
        h = nn.silu(group_norm(cfg.norm_num_groups, cfg.norm_eps, self.dtype, "conv_norm_out")(h))
        h = conv2d(out_channels, self.dtype, "conv_out", zero_init=cfg.zero_init_conv_out)(h)
        return h.reshape(b, f, hh, ww, out_channels)
