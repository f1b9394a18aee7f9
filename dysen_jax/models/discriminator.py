"""PatchGAN discriminator (pix2pix's NLayerDiscriminator, as used by taming-transformers / LDM) on frames.

Layout as in LDM's autoencoder loss: Conv 4x4 stride 2 -> LeakyReLU(0.2); `num_layers - 1` more
(Conv 4x4 stride 2 -> norm -> LeakyReLU) doubling the width up to 8x; one Conv 4x4 stride 1 ->
norm -> LeakyReLU; a final Conv 4x4 stride 1 to one logit per patch. Padding 1 everywhere.

Normalisation: LDM uses BatchNorm. We use GroupNorm (or none): its statistics are per example, so
the logits of a frame do not depend on how the batch is split over the mesh (BatchNorm would need
cross-device statistics to match a one-device run, and mutable batch_stats in the train state, and
its train/eval modes differ), and every device computes exactly what one device would.

Videos [B, F, H, W, C] are judged frame by frame (VidRD fine-tunes a video decoder with an image
discriminator): the result is per-frame patch logits [B, F, h, w].
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dysen_jax.models.layers import Dtype, batch_to_frames, frames_to_batch, num_groups

Array = jax.Array

NORMS = ("group", "none")


class PatchDiscriminator(nn.Module):
    """Images [N, H, W, C] in [-1, 1] -> patch logits [N, h, w] (positive = real)."""

    channels: int = 64
    num_layers: int = 3
    norm: str = "group"
    max_groups: int = 32
    dtype: Dtype = jnp.float32

    def _norm(self, x: Array, name: str) -> Array:
        if self.norm == "none":
            return x
        if self.norm != "group":
            raise ValueError(f"discriminator norm {self.norm!r} is not one of {NORMS}")
        return nn.GroupNorm(num_groups=num_groups(x.shape[-1], self.max_groups), dtype=self.dtype, name=name)(x)

    def _conv(self, x: Array, features: int, stride: int, name: str, use_bias: bool = True) -> Array:
        return nn.Conv(features, (4, 4), strides=(stride, stride), padding=((1, 1), (1, 1)), use_bias=use_bias,
                       kernel_init=nn.initializers.normal(0.02), dtype=self.dtype, name=name)(x)

    @nn.compact
    def __call__(self, images: Array) -> Array:
        if self.num_layers < 1:
            raise ValueError(f"discriminator num_layers must be >= 1, got {self.num_layers}")
        use_bias = self.norm == "none"  # a norm's shift makes the conv bias redundant (as in LDM)
        x = nn.leaky_relu(self._conv(images.astype(self.dtype), self.channels, 2, "conv_0"), 0.2)
        for i in range(1, self.num_layers + 1):
            width = self.channels * min(2 ** i, 8)
            stride = 2 if i < self.num_layers else 1
            x = self._conv(x, width, stride, f"conv_{i}", use_bias)
            x = nn.leaky_relu(self._norm(x, f"norm_{i}"), 0.2)
        logits = self._conv(x, 1, 1, "conv_out")
        return logits[..., 0].astype(jnp.float32)


def frame_logits(discriminator: PatchDiscriminator, params: Any, video: Array) -> Array:
    """Video [B, F, H, W, C] -> per-frame patch logits [B, F, h, w]."""
    logits = discriminator.apply({"params": params}, frames_to_batch(video))
    return batch_to_frames(logits, video.shape[1])


def init_discriminator(discriminator: PatchDiscriminator, rng: Array, image_size: int,
                       in_channels: int = 3) -> Any:
    """Fresh params (the conv shapes do not depend on the image size, but the patch grid must be >= 1)."""
    dummy = jnp.zeros((1, image_size, image_size, in_channels), jnp.float32)
    return discriminator.init(rng, dummy)["params"]
