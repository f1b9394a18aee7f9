"""TensorBoard output of a run (process 0 only; tensorboardX, no TensorFlow needed): scalars, and
sample videos as animated-GIF image summaries (TensorBoard's image tab plays them)."""

from __future__ import annotations

import io
import os

import jax
import numpy as np


def gif_bytes(video: np.ndarray, fps: int) -> bytes:
    """uint8 [F, H, W, 3] -> an animated GIF that loops."""
    import imageio.v3 as iio

    buffer = io.BytesIO()
    iio.imwrite(buffer, video, extension=".gif", duration=1000 / max(fps, 1), loop=0)
    return buffer.getvalue()


class MetricWriter:
    """Event files in <workdir>/tb; every method is a no-op on processes other than 0."""

    def __init__(self, workdir: str):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(os.path.join(workdir, "tb")) if jax.process_index() == 0 else None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._writer is None:
            return
        for name, value in values.items():
            self._writer.add_scalar(name, value, global_step=step)
        self._writer.flush()

    def video(self, step: int, tag: str, video: np.ndarray, fps: int = 4) -> None:
        """A uint8 [F, H, W, 3] clip as one GIF image summary."""
        if self._writer is None:
            return
        from tensorboardX.proto.summary_pb2 import Summary

        frames, height, width, channels = video.shape
        image = Summary.Image(height=height, width=width, colorspace=channels,
                              encoded_image_string=gif_bytes(video, fps))
        self._writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
