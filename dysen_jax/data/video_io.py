"""Writing videos: mp4 through the ffmpeg binary that imageio-ffmpeg ships, gif through Pillow."""

from __future__ import annotations

import os

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".gif")


def to_uint8(video: np.ndarray) -> np.ndarray:
    """[-1, 1] floats -> uint8 frames."""
    return np.clip(np.round((np.asarray(video, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling so tiny frames are watchable (factor 1 = unchanged)."""
    if factor <= 1:
        return frames
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2)


def write_video(path: str, frames: np.ndarray, fps: int = 4, scale: int = 1) -> str:
    """Writes uint8 frames [F, H, W, 3] to `path` (.mp4 or .gif, by extension); returns the path."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in VIDEO_EXTENSIONS:
        raise ValueError(f"output {path!r}: the extension must be one of {VIDEO_EXTENSIONS}")
    frames = upscale(np.asarray(frames, np.uint8), scale)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3] uint8, got {frames.shape}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if ext == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    else:
        import imageio_ffmpeg

        h, w = frames.shape[1:3]
        writer = imageio_ffmpeg.write_frames(path, (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                             macro_block_size=1, quality=9, ffmpeg_log_level="error")
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
    return path


def read_video(path: str) -> np.ndarray:
    """Decodes every frame of a video file to uint8 [F, H, W, 3]."""
    if path.lower().endswith(".gif"):
        from PIL import Image, ImageSequence

        with Image.open(path) as im:
            return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    meta = next(reader)
    w, h = meta["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader])
