"""Tiny word-level text encoder producing H^Y (stands in for CLIP's text tower in the tiny setup)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dysen_jax.models.layers import Dtype, EncoderLayer, key_mask, sinusoidal_embedding


class TinyTextEncoder(nn.Module):
    """Pre-LN transformer over word ids.

    tokens [B, S] int32 (0 = padding) -> (features [B, S, width], mask [B, S] bool). Positions are
    sinusoidal (no maximum length); padded positions attend to nothing padded, are zeroed in the
    output and flagged False in the mask.
    """

    vocab_size: int
    width: int
    num_layers: int
    num_heads: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        mask = tokens != 0
        h = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, name="word_embed")(tokens)
        h = h + sinusoidal_embedding(jnp.arange(tokens.shape[-1]), self.width).astype(self.dtype)
        for i in range(self.num_layers):
            h = EncoderLayer(self.num_heads, self.dropout, self.dtype, name=f"layer_{i}")(
                h, key_mask(mask), deterministic)
        h = nn.LayerNorm(dtype=self.dtype, name="ln_final")(h)
        return h * mask[..., None].astype(h.dtype), mask
