"""Video Inception Score with a C3D classifier loaded from a LOCAL safetensors state_dict.

IS = exp(E_x KL(p(y|x) || p(y))), p(y) the mean of p(y|x) over the set, computed in float64 and,
with `splits` > 1, as mean ± std over equal splits (Salimans et al.; TGAN/VideoGPT evaluate videos
this way with a UCF-101 C3D). It lies in [1, num_classes]: 1 when every clip gets the same
prediction, num_classes for confident, evenly spread ones.

Weights: a PyTorch C3D state_dict saved with safetensors (names conv1.weight ... fc8.bias of the
standard C3D, `dysen_jax.models.c3d`); pickles are refused. No C3D ships offline: give a path.

Input convention: videos uint8 [N, F, H, W, 3] (RGB). The first 16 frames are used (shorter
clips repeat frames evenly, as FVD's `select_frames`), each frame is centre-cropped to a square and
resized (bilinear) to 112 x 112, then `channel_order` ("bgr": Caffe's C3D) and pixels in [0, 255]
minus `mean` (per channel, in that order; default the Sports-1M C3D mean).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dysen_jax.convert.common import TorchState, check_all_used, conv, linear, to_params
from dysen_jax.metrics.batches import map_batches
from dysen_jax.models.c3d import C3D, CLIP_FRAMES, CLIP_SIZE, CONV_NAMES, C3DConfig

SPORTS1M_MEAN_BGR = (90.25, 97.66, 101.41)


def convert_c3d_state(state: TorchState) -> tuple[dict[str, Any], C3DConfig]:
    """(params, config) of the Flax C3D from a loaded PyTorch C3D state_dict."""
    config = C3DConfig.from_state_dict_shapes({k: v.shape for k, v in state.tensors.items()})
    flat = {}
    for name in CONV_NAMES:
        flat[f"{name}/kernel"], flat[f"{name}/bias"] = conv(state.take(f"{name}.weight")), state.take(f"{name}.bias")
    for name in ("fc6", "fc7", "fc8"):
        flat[f"{name}/kernel"], flat[f"{name}/bias"] = linear(state.take(f"{name}.weight")), state.take(f"{name}.bias")
    expected = jax.eval_shape(C3D(config).init, jax.random.key(0),
                              jnp.zeros((1, CLIP_FRAMES, CLIP_SIZE, CLIP_SIZE, 3)))["params"]
    params = to_params(flat, expected, f"{state.source} (c3d)")
    check_all_used(state)
    return params, config


def load_c3d(path: str) -> tuple[dict[str, Any], C3DConfig]:
    """C3D params from a .safetensors file (or a folder holding one)."""
    return convert_c3d_state(TorchState.load(path))


def select_frames(videos: np.ndarray, num_frames: int = CLIP_FRAMES) -> np.ndarray:
    """[N, F, ...] -> [N, num_frames, ...]: the first num_frames, or evenly repeated frames if F is shorter."""
    frames = videos.shape[1]
    if frames >= num_frames:
        return videos[:, :num_frames]
    return videos[:, (np.arange(num_frames) * frames) // num_frames]


def preprocess_clips(videos: jax.Array, mean: Sequence[float], bgr: bool) -> jax.Array:
    """uint8 [B, 16, H, W, 3] -> float32 [B, 16, 112, 112, 3]: square crop, bilinear resize, channels, - mean."""
    b, f, h, w, _ = videos.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = videos[:, :, top:top + side, left:left + side].astype(jnp.float32)
    if side != CLIP_SIZE:
        x = jax.image.resize(x, (b, f, CLIP_SIZE, CLIP_SIZE, 3), "bilinear", antialias=True)
    if bgr:
        x = x[..., ::-1]
    return x - jnp.asarray(mean, jnp.float32)


class C3DClassifier:
    """uint8 videos [N, F, H, W, 3] -> C3D class probabilities [N, num_classes] (float32)."""

    def __init__(self, weights_path: str, batch_size: int = 8, mean: Sequence[float] = SPORTS1M_MEAN_BGR,
                 channel_order: str = "bgr", progress: bool = True) -> None:
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order={channel_order!r}: use 'rgb' or 'bgr'")
        params, self.config = load_c3d(weights_path)
        self.params = jax.device_put(params)
        self.batch_size = int(batch_size)
        self.progress = progress
        model, bgr, mean = C3D(self.config), channel_order == "bgr", tuple(mean)
        self._probs = jax.jit(lambda p, v: jax.nn.softmax(model.apply({"params": p}, preprocess_clips(v, mean, bgr))))

    def __call__(self, videos: np.ndarray) -> np.ndarray:
        videos = np.asarray(videos)
        if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
            raise ValueError(f"videos must be uint8 [N, F, H, W, 3], got {videos.dtype} {videos.shape}")
        return map_batches(lambda b: self._probs(self.params, b), select_frames(videos), self.batch_size,
                           desc="C3D", progress=self.progress)


def inception_score(probs: np.ndarray, splits: int = 1) -> tuple[float, float]:
    """(mean, std over splits) of exp(E KL(p(y|x) || p(y))) for class probabilities [N, C]."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or len(probs) < 1:
        raise ValueError(f"probs must be [N, num_classes] with N >= 1, got {probs.shape}")
    if not 1 <= splits <= len(probs):
        raise ValueError(f"splits={splits} must be in [1, N={len(probs)}]")
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = np.sum(part * (np.log(np.maximum(part, 1e-30)) - np.log(np.maximum(marginal, 1e-30))), axis=1)
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def video_inception_score(videos: np.ndarray, classifier: C3DClassifier, splits: int = 1) -> tuple[float, float]:
    """IS of uint8 videos [N, F, H, W, 3] under `classifier`."""
    return inception_score(classifier(videos), splits)
