"""CLIP's vision tower (transformers' CLIPVisionModelWithProjection) in Flax, for CLIPSIM.

ViT: patchify conv (no bias) -> [class token; patches] + learned positions -> pre-LayerNorm ->
pre-LN encoder layers (the text tower's CLIPEncoderLayer, without a mask) -> post-LayerNorm of the
class token -> visual_projection. Inputs are CLIP-normalised pixels [B, H, W, 3] (NHWC) at the
model's image_size; `dysen_jax.metrics.clipsim` does the preprocessing and the weight conversion.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from dysen_jax.models.layers import Dtype
from dysen_jax.models.text_encoder import CLIPEncoderLayer

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """Shape of a CLIP vision tower (defaults: OpenAI ViT-B/32). Field names match CLIPTextConfig's
    where CLIPEncoderLayer reads them (num_heads, intermediate_size, hidden_act, layer_norm_eps)."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    projection_dim: int = 512

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> "CLIPVisionConfig":
        """From a transformers CLIPConfig dict (its "vision_config" and "projection_dim")."""
        v = dict(config.get("vision_config") or config)
        return cls(hidden_size=int(v.get("hidden_size", 768)), intermediate_size=int(v.get("intermediate_size", 3072)),
                   num_layers=int(v.get("num_hidden_layers", 12)), num_heads=int(v.get("num_attention_heads", 12)),
                   image_size=int(v.get("image_size", 224)), patch_size=int(v.get("patch_size", 32)),
                   hidden_act=str(v.get("hidden_act", "quick_gelu")), layer_norm_eps=float(v.get("layer_norm_eps", 1e-5)),
                   projection_dim=int(config.get("projection_dim", v.get("projection_dim", 512))))

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


class CLIPVisionOutput(NamedTuple):
    """hidden [B, 1 + N, D] (last layer, before post_layernorm); pooled [B, D]; image_embeds [B, P]."""

    hidden: Array
    pooled: Array
    image_embeds: Array


class CLIPVisionTransformer(nn.Module):
    """pixel_values [B, H, W, 3] (CLIP-normalised, H = W = image_size) -> CLIPVisionOutput."""

    config: CLIPVisionConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values: Array) -> CLIPVisionOutput:
        c = self.config
        if pixel_values.shape[1:3] != (c.image_size, c.image_size):
            raise ValueError(f"pixel_values are {pixel_values.shape[1:3]}, the model wants {c.image_size}x{c.image_size}")
        patches = nn.Conv(c.hidden_size, (c.patch_size, c.patch_size), strides=(c.patch_size, c.patch_size),
                          padding="VALID", use_bias=False, dtype=self.dtype, name="patch_embedding")(pixel_values)
        batch = patches.shape[0]
        patches = patches.reshape(batch, -1, c.hidden_size)
        cls = self.param("class_embedding", nn.initializers.normal(0.02), (c.hidden_size,))
        pos = self.param("position_embedding", nn.initializers.normal(0.02), (c.num_positions, c.hidden_size))
        h = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (batch, 1, c.hidden_size)), patches], axis=1)
        h = h + pos.astype(self.dtype)
        h = nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype, name="pre_layrnorm")(h)
        for i in range(c.num_layers):
            h = CLIPEncoderLayer(c, self.dtype, name=f"layer_{i}")(h, None)  # type: ignore[arg-type]
        pooled = nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype, name="post_layernorm")(h[:, 0])
        embeds = nn.Dense(c.projection_dim, use_bias=False, dtype=self.dtype, name="visual_projection")(pooled)
        return CLIPVisionOutput(h, pooled, embeds)
