"""Cutting training clips out of real videos: which frames, which square, decoded how (VidRD §5.1).

VidRD samples "8 keyframes uniformly every 4 frames", "the starting frame ... randomly selected along
the timeline", and "each frame is resized along the shorter side and then randomly cropped to the
target resolution". Here that is:

  frames   `clip_frame_indices`: stride 0 spreads num_frames evenly over the whole video (one frame at
           the centre of each of F equal segments); stride k >= 1 takes every k-th frame from a start
           that is random (`random_start`) or centred. A video shorter than the window gets the largest
           stride that fits, and below stride 1 frames repeat (an even spread), so short clips still train.
  square   `crop_window`: the side is the shorter side; its offset along the longer side is centred or
           random. Cropping that square and resizing it to R px is "resize the shorter side to R, crop
           R x R" (one resize of fewer pixels; area filter when shrinking, bicubic when enlarging).
  decoding `read_clip`: mp4 (and anything ffmpeg reads) goes through the ffmpeg binary that
           imageio-ffmpeg ships. The frame count comes from a demux-only pass (packets, no decoding); then
           one ffmpeg run decodes up to the last wanted frame and sends only the wanted ones through the
           pipe (`select` filter, `-fps_mode passthrough`), so a 20 s HD video costs F frames of memory,
           not hundreds. If ffmpeg returns fewer frames than its packet count promised (a broken
           stream), the whole video is decoded and the count is the real one. GIFs decode with Pillow.

Randomness comes from the `rng` the caller passes (preprocess seeds it with the config seed and the
item index), so a clip is the same in every run, process and Beam worker.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

import numpy as np

CROPS: tuple[str, ...] = ("center", "random")


class VideoError(ValueError):
    """An item's video (or image) cannot be read or has no frames (the item fails; the job goes on)."""


# --- which frames ---------------------------------------------------------------------------------------
def sample_frame_indices(num_available: int, num_frames: int) -> np.ndarray:
    """`num_frames` indices spread evenly over `num_available` frames (the centre of each of F equal
    segments; frames repeat when the clip is shorter than F)."""
    positions = (np.arange(num_frames) + 0.5) * num_available / num_frames
    return np.minimum(positions.astype(np.int64), num_available - 1)


def clip_frame_indices(num_available: int, num_frames: int, stride: int = 0,
                       rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices of the clip's frames in a video of `num_available` frames (see the module docstring);
    `rng` None = the window is centred, else its start is uniform over every start that fits."""
    if num_available < 1:
        raise VideoError("the video has no frames")
    if stride < 0:
        raise ValueError(f"config.data.frame_stride={stride} must be >= 0 (0 = spread over the whole video)")
    if stride == 0:
        return sample_frame_indices(num_available, num_frames)
    if num_frames > 1:
        stride = min(stride, (num_available - 1) // (num_frames - 1))
        if stride == 0:  # fewer frames than F: spread them (frames repeat)
            return sample_frame_indices(num_available, num_frames)
    span = (num_frames - 1) * stride + 1
    slack = num_available - span
    start = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
    return start + stride * np.arange(num_frames, dtype=np.int64)


# --- which square ---------------------------------------------------------------------------------------
def crop_window(height: int, width: int, rng: np.random.Generator | None = None) -> tuple[int, int, int]:
    """(top, left, side) of the square of side min(height, width): centred, or at a uniformly random
    offset along the longer side when `rng` is given."""
    side = min(height, width)
    slack_y, slack_x = height - side, width - side
    if rng is None:
        return slack_y // 2, slack_x // 2, side
    return int(rng.integers(0, slack_y + 1)), int(rng.integers(0, slack_x + 1)), side


def resize_square(frames: np.ndarray, top: int, left: int, side: int, resolution: int) -> np.ndarray:
    """uint8 [F, H, W, 3] -> the square (top, left, side) of every frame at resolution x resolution (area
    filter when shrinking, bicubic when enlarging)."""
    from PIL import Image

    frames = np.asarray(frames, np.uint8)
    if (frames.shape[1], frames.shape[2]) == (resolution, resolution):
        return frames
    resample = Image.Resampling.BOX if side > resolution else Image.Resampling.BICUBIC
    out = np.empty((frames.shape[0], resolution, resolution, 3), np.uint8)
    for i, frame in enumerate(frames[:, top:top + side, left:left + side]):
        out[i] = np.asarray(Image.fromarray(frame).resize((resolution, resolution), resample))
    return out


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise VideoError(f"expected frames [T, H, W, 3] with T >= 1, got shape {frames.shape}")
    return frames


def fit_video(frames: np.ndarray, num_frames: int, resolution: int, stride: int = 0,
              frame_rng: np.random.Generator | None = None,
              crop_rng: np.random.Generator | None = None) -> np.ndarray:
    """Decoded frames uint8 [T, H, W, 3] -> the clip [num_frames, resolution, resolution, 3]. Defaults:
    an even spread over the whole video and the centre square; `stride` / `frame_rng` / `crop_rng` as in
    `clip_frame_indices` and `crop_window`."""
    frames = _check_frames(frames)
    frames = frames[clip_frame_indices(frames.shape[0], num_frames, stride, frame_rng)]
    top, left, side = crop_window(frames.shape[1], frames.shape[2], crop_rng)
    return resize_square(frames, top, left, side, resolution)


# --- decoding -------------------------------------------------------------------------------------------
def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def count_frames(path: str) -> int:
    """The number of video packets (= frames for ordinary files), by demuxing only (no decoding)."""
    result = subprocess.run([_ffmpeg(), "-hide_banner", "-nostdin", "-i", path, "-map", "0:v:0", "-c", "copy",
                             "-f", "null", "-"], capture_output=True, text=True, errors="replace")
    counts = re.findall(r"frame=\s*(\d+)", result.stderr)
    if result.returncode != 0 or not counts:
        tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise VideoError(f"ffmpeg finds no readable video stream ({tail[0]})")
    return int(counts[-1])


def decode_frames(path: str, indices: np.ndarray) -> np.ndarray:
    """Frames `indices` (decode order, repeats allowed) of a video file, uint8 [len(indices), H, W, 3];
    only those frames leave ffmpeg, which stops after the last one. May return fewer unique frames
    than asked when the stream ends early (the caller checks)."""
    import imageio_ffmpeg

    wanted = sorted({int(i) for i in indices})
    select = "select='" + "+".join(f"eq(n,{i})" for i in wanted) + "'"
    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24", input_params=["-nostdin"],
                                        output_params=["-vf", select, "-fps_mode", "passthrough",
                                                       "-frames:v", str(len(wanted))])
    try:
        meta = next(reader)
        w, h = meta["size"]
        got = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]
    finally:
        reader.close()
    if len(got) < len(wanted):
        return np.stack(got) if got else np.zeros((0, h, w, 3), np.uint8)
    position = {index: k for k, index in enumerate(wanted)}
    return np.stack([got[position[int(i)]] for i in indices])


def _clip_of_file(path: str, num_frames: int, resolution: int, stride: int,
                  frame_rng: np.random.Generator | None, crop_rng: np.random.Generator | None) -> np.ndarray:
    from dysen_jax.data.video_io import read_video

    if path.lower().endswith(".gif"):
        return fit_video(read_video(path), num_frames, resolution, stride, frame_rng, crop_rng)
    state = frame_rng.bit_generator.state if frame_rng is not None else None
    indices = clip_frame_indices(count_frames(path), num_frames, stride, frame_rng)
    frames = decode_frames(path, indices)
    if len(frames) != num_frames:  # fewer decodable frames than packets: the real count decides
        if frame_rng is not None:
            frame_rng.bit_generator.state = state  # the same draw as if the count had been right
        return fit_video(read_video(path), num_frames, resolution, stride, frame_rng, crop_rng)
    top, left, side = crop_window(frames.shape[1], frames.shape[2], crop_rng)
    return resize_square(frames, top, left, side, resolution)


def read_clip(path: str, num_frames: int, resolution: int, stride: int = 0,
              frame_rng: np.random.Generator | None = None,
              crop_rng: np.random.Generator | None = None) -> np.ndarray:
    """A clip uint8 [num_frames, resolution, resolution, 3] of the video at `path` (local, or gs:// etc.
    through tf.io.gfile: copied to a temporary file first, ffmpeg needs a local path); VideoError with
    the reason when it cannot be read. Arguments as in `fit_video`."""
    try:
        if "://" not in path:
            return _clip_of_file(path, num_frames, resolution, stride, frame_rng, crop_rng)
        import tensorflow as tf

        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, os.path.basename(path))
            tf.io.gfile.copy(path, local)
            return _clip_of_file(local, num_frames, resolution, stride, frame_rng, crop_rng)
    except VideoError as err:
        raise VideoError(f"cannot read video {path!r}: {err}") from None
    except Exception as err:  # decoders raise many kinds (OSError, RuntimeError, StopIteration, ...)
        raise VideoError(f"cannot read video {path!r}: {type(err).__name__}: {err}") from None
