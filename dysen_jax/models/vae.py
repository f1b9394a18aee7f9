"""Stable Diffusion's AutoencoderKL in Flax (NHWC), plus VidRD's temporal-aware decoder.

The image autoencoder matches diffusers' `AutoencoderKL` layer for layer (so converted SD 1.x/2.x
weights reproduce it to float32 rounding): ResNet blocks with GroupNorm(eps 1e-6), a single-head
attention in each mid block, stride-2 convs padded bottom/right for downsampling, nearest x2 +
conv for upsampling, a diagonal Gaussian posterior with log-variance clamped to [-30, 20].

VidRD (sec. 4.4): `temporal_decoder=True` adds a `TemporalConvBlock` after every decoder ResNet
(mid and up blocks): GroupNorm -> SiLU -> Conv(3x1x1 over frames), `temporal_num_convs` times, the
last conv zero-initialised, added residually. With fresh temporal params the video decoder is the
image decoder applied frame by frame; only the temporal blocks are meant to be fine-tuned.

Images are [N, H, W, C] in [-1, 1]; videos [B, F, H, W, C]; latents [.., H/2^(L-1), W/2^(L-1), latent_channels]
with L = len(block_out_channels) (8x down for SD).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from dysen_jax.models.init_compile import jit_init
from dysen_jax.models.layers import Dtype, FrameGroupNorm, MultiHeadAttention, batch_to_frames, frames_to_batch

Array = jax.Array

# diffusers config keys that do not change the architecture (or that our pipeline does not use).
_IGNORED_DIFFUSERS_KEYS = {"_class_name", "_diffusers_version", "_name_or_path", "_use_default_values",
                           "sample_size", "force_upcast", "latents_mean", "latents_std"}


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Architecture of an AutoencoderKL (defaults: Stable Diffusion 1.x/2.x, scaling factor 0.18215).

    `shift_factor` (None for SD) is subtracted before scaling: latents = (z - shift) * scale.
    """

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    temporal_decoder: bool = False  # VidRD temporal blocks after each decoder ResNet
    temporal_num_convs: int = 4     # convs per temporal block (ModelScope/diffusers TemporalConvLayer uses 4)

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"block_out_channels {bad} are not divisible by norm_num_groups={self.norm_num_groups}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], **overrides: Any) -> "VAEConfig":
        """From `to_dict` output or an ml_collections section (unknown keys are an error)."""
        d = {**dict(d), **overrides}
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"unknown VAE config keys {unknown}; known: {sorted(fields)}")
        return cls(**d)

    @classmethod
    def from_diffusers_config(cls, d: Mapping[str, Any], **overrides: Any) -> "VAEConfig":
        """From a diffusers AutoencoderKL config.json dict; refuses variants we do not implement."""
        d = dict(d)
        if d.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
            raise ValueError(f"config is for {d['_class_name']}, not AutoencoderKL")
        down = d.pop("down_block_types", ["DownEncoderBlock2D"] * len(d.get("block_out_channels", (64,))))
        up = d.pop("up_block_types", ["UpDecoderBlock2D"] * len(down))
        if set(down) != {"DownEncoderBlock2D"} or set(up) != {"UpDecoderBlock2D"}:
            raise ValueError(f"only DownEncoderBlock2D/UpDecoderBlock2D blocks are supported, got {down} / {up}")
        if d.pop("act_fn", "silu") != "silu":
            raise ValueError("only act_fn='silu' is supported")
        d = {k: v for k, v in d.items() if k not in _IGNORED_DIFFUSERS_KEYS}
        d.setdefault("block_out_channels", (64,))
        d.setdefault("layers_per_block", 1)  # diffusers' AutoencoderKL defaults (not SD's)
        if len(down) != len(d["block_out_channels"]):
            raise ValueError(f"{len(down)} down blocks but block_out_channels={d['block_out_channels']}")
        return cls.from_dict(d, **overrides)


@flax.struct.dataclass
class DiagonalGaussian:
    """The encoder's posterior N(mean, exp(logvar)), logvar clamped to [-30, 20] as in diffusers."""

    mean: Array
    logvar: Array

    @classmethod
    def from_moments(cls, moments: Array) -> "DiagonalGaussian":
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return cls(mean, jnp.clip(logvar, -30.0, 20.0))

    @property
    def std(self) -> Array:
        return jnp.exp(0.5 * self.logvar)

    def sample(self, rng: Array) -> Array:
        return self.mean + self.std * jax.random.normal(rng, self.mean.shape, self.mean.dtype)

    def mode(self) -> Array:
        return self.mean

    def kl(self) -> Array:
        """KL to N(0, 1), summed over all but the leading axis ([N] for images)."""
        kl = 0.5 * (jnp.square(self.mean) + jnp.exp(self.logvar) - 1.0 - self.logvar)
        return jnp.sum(kl.astype(jnp.float32), axis=tuple(range(1, kl.ndim)))


def _norm(groups: int, name: str, dtype: Dtype) -> nn.GroupNorm:
    # use_fast_variance=False: E[(x-mean)^2], as torch computes it (E[x^2]-mean^2 loses digits).
    return nn.GroupNorm(num_groups=groups, epsilon=1e-6, use_fast_variance=False, dtype=dtype, name=name)


def _conv(features: int, kernel: int, name: str | None, dtype: Dtype, strides: int = 1, padding: Any = None) -> nn.Conv:
    pad = kernel // 2 if padding is None else padding
    return nn.Conv(features, (kernel, kernel), strides=(strides, strides), padding=pad, dtype=dtype, name=name)


class ResnetBlock(nn.Module):
    """diffusers ResnetBlock2D without time embedding: x + conv2(silu(norm2(conv1(silu(norm1(x))))))."""

    out_channels: int
    groups: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h = _conv(self.out_channels, 3, "conv1", self.dtype)(nn.silu(_norm(self.groups, "norm1", self.dtype)(x)))
        h = _conv(self.out_channels, 3, "conv2", self.dtype)(nn.silu(_norm(self.groups, "norm2", self.dtype)(h)))
        if x.shape[-1] != self.out_channels:
            x = _conv(self.out_channels, 1, "conv_shortcut", self.dtype)(x)
        return x + h


class AttentionBlock(nn.Module):
    """The VAE mid-block self-attention: one head over all H*W positions, GroupNorm first, residual."""

    groups: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        n, hh, ww, c = x.shape
        h = _norm(self.groups, "group_norm", self.dtype)(x).reshape(n, hh * ww, c)
        h = MultiHeadAttention(num_heads=1, dtype=self.dtype, name="attn")(h)
        return x + h.reshape(x.shape)


class TemporalConvBlock(nn.Module):
    """VidRD Temp-Conv: (GroupNorm -> SiLU -> Conv 3x1x1 over frames) x num_convs, last conv zero, residual.

    Works on frames folded into the batch, x [B*F, H, W, C]; the norms take per-frame statistics.
    """

    num_frames: int
    num_convs: int = 4
    groups: int = 32
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        video = batch_to_frames(x, self.num_frames)
        h = video
        for i in range(self.num_convs):
            h = nn.silu(FrameGroupNorm(self.groups, self.dtype, name=f"norm_{i}")(h))
            init = nn.initializers.zeros if i == self.num_convs - 1 else nn.initializers.lecun_normal()
            h = nn.Conv(video.shape[-1], (3, 1, 1), padding=((1, 1), (0, 0), (0, 0)), kernel_init=init,
                        dtype=self.dtype, name=f"conv_{i}")(h)
        return frames_to_batch(video + h)


class MidBlock(nn.Module):
    """ResNet -> (attention) -> ResNet, with a temporal block after each ResNet when `num_frames` is set."""

    config: VAEConfig
    num_frames: int | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg, channels = self.config, x.shape[-1]
        for i in range(2):
            if i == 1 and cfg.mid_block_add_attention:
                x = AttentionBlock(cfg.norm_num_groups, self.dtype, name="attentions_0")(x)
            x = ResnetBlock(channels, cfg.norm_num_groups, self.dtype, name=f"resnets_{i}")(x)
            if self.num_frames is not None:
                x = TemporalConvBlock(self.num_frames, cfg.temporal_num_convs, cfg.norm_num_groups, self.dtype,
                                      name=f"temporal_{i}")(x)
        return x


class Encoder(nn.Module):
    """Image [N, H, W, in] -> posterior moments [N, H/f, W/f, 2*latent] (before quant_conv)."""

    config: VAEConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        chans = cfg.block_out_channels
        x = _conv(chans[0], 3, "conv_in", self.dtype)(x.astype(self.dtype))
        for i, c in enumerate(chans):
            for j in range(cfg.layers_per_block):
                x = ResnetBlock(c, cfg.norm_num_groups, self.dtype, name=f"down_blocks_{i}_resnets_{j}")(x)
            if i < len(chans) - 1:  # torch pads (0, 1, 0, 1) then convolves with stride 2
                x = _conv(c, 3, f"down_blocks_{i}_downsample", self.dtype, strides=2, padding=((0, 1), (0, 1)))(x)
        x = MidBlock(cfg, None, self.dtype, name="mid_block")(x)
        x = nn.silu(_norm(cfg.norm_num_groups, "conv_norm_out", self.dtype)(x))
        return _conv(2 * cfg.latent_channels, 3, "conv_out", self.dtype)(x)


class Decoder(nn.Module):
    """Latents [N, h, w, latent] -> image [N, h*f, w*f, out]; with the temporal decoder N = B * num_frames
    (frames folded into the batch, frame-major within each clip)."""

    config: VAEConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: Array, num_frames: int = 1) -> Array:
        cfg = self.config
        frames = num_frames if cfg.temporal_decoder else None
        if frames is not None and z.shape[0] % frames:
            raise ValueError(f"batch {z.shape[0]} is not a multiple of num_frames={frames}")
        chans = tuple(reversed(cfg.block_out_channels))
        x = _conv(chans[0], 3, "conv_in", self.dtype)(z.astype(self.dtype))
        x = MidBlock(cfg, frames, self.dtype, name="mid_block")(x)
        for i, c in enumerate(chans):
            for j in range(cfg.layers_per_block + 1):
                x = ResnetBlock(c, cfg.norm_num_groups, self.dtype, name=f"up_blocks_{i}_resnets_{j}")(x)
                if frames is not None:
                    x = TemporalConvBlock(frames, cfg.temporal_num_convs, cfg.norm_num_groups, self.dtype,
                                          name=f"up_blocks_{i}_temporal_{j}")(x)
            if i < len(chans) - 1:
                x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest x2
                x = _conv(c, 3, f"up_blocks_{i}_upsample", self.dtype)(x)
        x = nn.silu(_norm(cfg.norm_num_groups, "conv_norm_out", self.dtype)(x))
        return _conv(cfg.out_channels, 3, "conv_out", self.dtype)(x)


class AutoencoderKL(nn.Module):
    """diffusers AutoencoderKL (+ optional VidRD temporal decoder). Params float32, `dtype` = compute dtype.

    Call its methods through apply, e.g. `vae.apply({"params": p}, video, rng, method="encode_video")`.
    """

    config: VAEConfig
    dtype: Dtype = jnp.float32

    def setup(self) -> None:
        cfg = self.config
        self.encoder = Encoder(cfg, self.dtype)
        self.decoder = Decoder(cfg, self.dtype)
        if cfg.use_quant_conv:
            self.quant_conv = _conv(2 * cfg.latent_channels, 1, None, self.dtype)
        if cfg.use_post_quant_conv:
            self.post_quant_conv = _conv(cfg.latent_channels, 1, None, self.dtype)

    def encode(self, x: Array) -> DiagonalGaussian:
        """Images [N, H, W, in] -> posterior over latents [N, H/f, W/f, latent] (unscaled)."""
        moments = self.encoder(x)
        if self.config.use_quant_conv:
            moments = self.quant_conv(moments)
        return DiagonalGaussian.from_moments(moments.astype(jnp.float32))

    def decode(self, z: Array, num_frames: int = 1) -> Array:
        """Unscaled latents [N, h, w, latent] -> images [N, H, W, out]. With the temporal decoder, N = B*num_frames."""
        if self.config.use_post_quant_conv:
            z = self.post_quant_conv(z.astype(self.dtype))
        return self.decoder(z, num_frames).astype(jnp.float32)

    def __call__(self, x: Array, rng: Array | None = None, num_frames: int = 1) -> Array:
        """Reconstruction: decode(sample or mode of encode(x)); mainly for init and autoencoder training."""
        posterior = self.encode(x)
        z = posterior.mode() if rng is None else posterior.sample(rng)
        return self.decode(z, num_frames)

    def scale(self, z: Array) -> Array:
        shift = self.config.shift_factor or 0.0
        return (z - shift) * self.config.scaling_factor

    def unscale(self, latents: Array) -> Array:
        shift = self.config.shift_factor or 0.0
        return latents / self.config.scaling_factor + shift

    def encode_video(self, video: Array, rng: Array | None = None) -> Array:
        """Video [B, F, H, W, in] -> diffusion latents [B, F, h, w, latent] (scaled; posterior sample, or
        its mean when rng is None). Frames are encoded independently (the encoder is the image one)."""
        posterior = self.encode(frames_to_batch(video))
        z = posterior.mode() if rng is None else posterior.sample(rng)
        return batch_to_frames(self.scale(z), video.shape[1])

    def decode_video(self, latents: Array) -> Array:
        """Scaled latents [B, F, h, w, latent] -> video [B, F, H, W, out]; the temporal decoder mixes frames."""
        frames = latents.shape[1]
        x = self.decode(self.unscale(frames_to_batch(latents)), num_frames=frames)
        return batch_to_frames(x, frames)


@functools.lru_cache(maxsize=8)
def _init_fn(config: VAEConfig) -> Callable[[Array], Any]:
    """Jitted init for one config (cached: the same config is often initialised repeatedly)."""
    model = AutoencoderKL(config)
    size = config.downsample_factor
    dummy = jnp.zeros((1, size, size, config.in_channels), jnp.float32)
    return jit_init(lambda rng: model.init(rng, dummy)["params"])


def init_params(config: VAEConfig, rng: Array | None = None) -> dict[str, Any]:
    """Fresh params (shapes do not depend on the image size, so a tiny dummy image is used)."""
    return _init_fn(config)(jax.random.PRNGKey(0) if rng is None else rng)


def param_shapes(config: VAEConfig) -> dict[str, Any]:
    """The params tree as ShapeDtypeStructs (no compute): what converters check against."""
    model = AutoencoderKL(config)
    size = config.downsample_factor
    dummy = jax.ShapeDtypeStruct((1, size, size, config.in_channels), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x)["params"], dummy)


def is_temporal_path(path: str) -> bool:
    """Whether a '/'-joined param path belongs to a VidRD temporal block."""
    return "temporal_" in path


@functools.lru_cache(maxsize=16)
def _temporal_init_fn(channels: int, num_convs: int, groups: int) -> Callable[[Array], Any]:
    block = TemporalConvBlock(num_frames=1, num_convs=num_convs, groups=groups)
    return jit_init(lambda rng: block.init(rng, jnp.zeros((1, 1, 1, channels), jnp.float32))["params"])


def add_temporal_params(params: Mapping[str, Any], config: VAEConfig, rng: Array | None = None) -> dict[str, Any]:
    """Image-VAE params + fresh (zero-output) temporal blocks for `config` with temporal_decoder=True.

    Entries already in `params` (e.g. fine-tuned temporal blocks) are kept; only missing blocks are
    initialised, each on its own (a whole-model init would compile the full forward pass for nothing).
    """
    if not config.temporal_decoder:
        raise ValueError("add_temporal_params needs a config with temporal_decoder=True")
    rng = jax.random.PRNGKey(0) if rng is None else rng

    def fill(shapes: Mapping[str, Any], have: Mapping[str, Any], index: list[int]) -> dict[str, Any]:
        out = {}
        for name, sub in shapes.items():
            if name in have and not isinstance(sub, Mapping):
                out[name] = have[name]
            elif is_temporal_path(name) and name not in have:
                index[0] += 1
                init = _temporal_init_fn(sub["conv_0"]["kernel"].shape[-1], config.temporal_num_convs,
                                         config.norm_num_groups)
                out[name] = init(jax.random.fold_in(rng, index[0]))
            elif isinstance(sub, Mapping):
                out[name] = fill(sub, have.get(name, {}), index)
            else:
                raise ValueError(f"param {name!r} is missing from the image-VAE params")
        return out

    return fill(param_shapes(config), params, [0])


def drop_temporal_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The image-VAE part of a temporal-decoder params tree."""
    return {k: (drop_temporal_params(v) if isinstance(v, Mapping) else v)
            for k, v in params.items() if not is_temporal_path(k)}


def load_pretrained(path: str, **overrides: Any) -> tuple[AutoencoderKL, dict[str, Any]]:
    """(model, params) from a folder written by `python -m dysen_jax.convert --kind vae`.

    `overrides` change the stored config (e.g. temporal_decoder=True: the image weights plus
    zero-initialised temporal blocks, which decode exactly like the image decoder).
    """
    from dysen_jax.convert.common import load_params

    params, meta = load_params(path)
    if meta.get("kind", "vae") != "vae":
        raise ValueError(f"{path} holds a {meta['kind']!r} checkpoint, not a vae")
    config = VAEConfig.from_dict(meta.get("config", {}), **overrides)
    params = add_temporal_params(params, config) if config.temporal_decoder else drop_temporal_params(params)
    return AutoencoderKL(config), params
