"""Pseudo-videos: an image + caption becomes a clip + caption by a random zoom and pan (VidRD §4.2).

VidRD turns LAION images into videos "by random zooming and panning" (FFmpeg's zoompan) so that
image data trains the temporal layers too. Here a clip is a camera move over the image: a square
crop box that starts at one zoom and position and ends at another, every frame the box at that
moment resampled to R x R.

  zoom     z = (shorter side) / (box side); z = 1 is the largest square. The first and last frames
           draw z uniformly from `zoom_range` (independently: the camera zooms in or out); the box
           side moves geometrically between them, so the apparent zoom speed is constant.
  pan      the first box's centre is uniform over every position where it fits; the last one moves
           from it by at most `pan` x (shorter side) per axis (uniform), clipped to where it fits.
           The centre moves linearly. Since the left/top edge (linear - convex) is concave in time and
           the right/bottom edge convex, every in-between box lies inside the image when the first
           and last do: no frame ever shows padding.
  pixels   Pillow's resize with a sub-pixel `box` (antialiased bicubic), so slow moves are smooth
           instead of jumping by whole pixels.

Where: at preprocess (data/sources.py makes an item per pseudo-video and `load_video` renders it),
not in tf.data: each record needs the DSG planned from its caption (offline, LLM) and, with
data.precompute_latents, the VAE latents of exactly the frames stored; records stay one format,
and the clip is a pure function of (seed, item index), so every run, process and Beam worker writes
the same bytes.
"""

from __future__ import annotations

import io
import os

import numpy as np

from dysen_jax.data.video_decode import VideoError


def check_motion(zoom_range: tuple[float, float], pan: float) -> tuple[tuple[float, float], float]:
    """Validated (zoom_range, pan), with errors naming the config fields."""
    try:
        low, high = (float(z) for z in zoom_range)
    except (TypeError, ValueError):
        raise ValueError(f"config.data.zoom_range={zoom_range!r} must be two numbers (min, max), "
                         "e.g. (1.0, 1.5)") from None
    if not 1.0 <= low <= high:
        raise ValueError(f"config.data.zoom_range={zoom_range!r} needs 1 <= min <= max (1 = the largest square "
                         "crop of the image, 2 = half its side)")
    if not 0.0 <= float(pan) <= 1.0:
        raise ValueError(f"config.data.pan={pan!r} must be in [0, 1] (the largest move of the crop centre, as a "
                         "fraction of the image's shorter side)")
    return (low, high), float(pan)


def _centres(size: float, side_start: float, side_end: float, max_move: float,
             rng: np.random.Generator) -> tuple[float, float]:
    """Start and end centre along one axis of length `size` for boxes of the given sides."""
    start = rng.uniform(side_start / 2, size - side_start / 2)
    draw = rng.uniform()  # always drawn: the stream of draws never depends on the geometry
    low, high = side_end / 2, size - side_end / 2
    lo, hi = max(low, start - max_move), min(high, start + max_move)
    end = lo + draw * (hi - lo) if lo <= hi else float(np.clip(start, low, high))
    return start, end


def motion_boxes(height: int, width: int, num_frames: int, rng: np.random.Generator,
                 zoom_range: tuple[float, float] = (1.0, 1.5), pan: float = 0.2) -> np.ndarray:
    """float64 [num_frames, 4] crop boxes (left, top, right, bottom) in pixels, square, inside the image,
    of a random zoom + pan (see the module docstring)."""
    (low, high), pan = check_motion(zoom_range, pan)
    shorter = float(min(height, width))
    side_start, side_end = shorter / rng.uniform(low, high), shorter / rng.uniform(low, high)
    cx0, cx1 = _centres(float(width), side_start, side_end, pan * shorter, rng)
    cy0, cy1 = _centres(float(height), side_start, side_end, pan * shorter, rng)
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    side = side_start * (side_end / side_start) ** t
    cx, cy = cx0 + (cx1 - cx0) * t, cy0 + (cy1 - cy0) * t
    boxes = np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)
    # Float rounding must not put an edge a hair outside the image.
    return np.clip(boxes, 0.0, [width, height, width, height])


def render_boxes(image: np.ndarray, boxes: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 [F, resolution, resolution, 3]: each (sub-pixel) box of `image` resampled (bicubic,
    antialiased when shrinking)."""
    from PIL import Image

    picture = Image.fromarray(np.asarray(image, np.uint8))
    return np.stack([np.asarray(picture.resize((resolution, resolution), Image.Resampling.BICUBIC,
                                               box=tuple(float(v) for v in box))) for box in boxes])


def pseudo_video(image: np.ndarray, num_frames: int, resolution: int, rng: np.random.Generator,
                 zoom_range: tuple[float, float] = (1.0, 1.5), pan: float = 0.2) -> np.ndarray:
    """A uint8 image [H, W, 3] -> a zoom + pan clip uint8 [num_frames, resolution, resolution, 3]."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
        raise VideoError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    boxes = motion_boxes(image.shape[0], image.shape[1], num_frames, rng, zoom_range, pan)
    return render_boxes(image, boxes, resolution)


def read_image(path: str) -> np.ndarray:
    """An image file (anything Pillow opens; local, or gs:// etc. through tf.io.gfile) as uint8 [H, W, 3],
    upright (EXIF orientation applied); VideoError with the reason when it cannot be read."""
    from PIL import Image, ImageOps

    try:
        if "://" in path:
            import tensorflow as tf

            data = io.BytesIO(tf.io.gfile.GFile(path, "rb").read())
        elif not os.path.exists(path):
            raise FileNotFoundError("no such file")
        else:
            data = path
        with Image.open(data) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except Exception as err:  # Pillow raises many kinds (UnidentifiedImageError, OSError, ...)
        raise VideoError(f"cannot read image {path!r}: {type(err).__name__}: {err}") from None
