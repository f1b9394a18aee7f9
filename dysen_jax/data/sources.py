"""Where preprocessing's items come from: the synthetic dataset or a caption file with video paths.

An `Item` is one clip to preprocess: its index (stable: it decides the output shard), its caption
and its video (a path, or the frames themselves for generated clips). Sources are picklable and
deterministic, so a local job, several processes splitting one job, and the workers of a Beam
pipeline all see the same item for the same index.

A row that cannot be read (no caption, no video, bad JSON) still becomes an Item, with `error` set:
it ends in failures.jsonl with the reason instead of stopping the job. Whole-file problems (missing
file, unknown format, no caption/video columns) are errors that name the config field and the fix.

Caption files (config.data.dataset = "captions", config.data.captions_file = PATH):
  .jsonl   one object per line: {"caption": "...", "video": "clips/0001.mp4"}
  .csv     a header with (at least) the columns caption,video
Relative video paths resolve against the caption file's directory. Videos (.mp4, .gif) are decoded
with `dysen_jax.data.video_io.read_video`, sampled evenly in time to config.data.num_frames frames,
centre-cropped to a square and resized to config.data.resolution.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import tempfile
from typing import Any, Protocol

import numpy as np

DATASETS: tuple[str, ...] = ("dynamic_shapes", "captions")
CAPTION_FILE_FORMATS: tuple[str, ...] = (".jsonl", ".csv")


class VideoError(ValueError):
    """An item's video cannot be read or has no frames (the item fails; the job goes on)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Item:
    """One clip to preprocess. `video` holds generated frames (uint8 [F, H, W, 3]) when there is no
    file; `gold_events` the generator's events (synthetic data only); `error` why the row is unusable."""

    index: int
    caption: str
    video_path: str | None = None
    video: np.ndarray | None = None
    gold_events: tuple | None = None
    error: str | None = None


class Source(Protocol):
    """A deterministic, indexable collection of items."""

    def __len__(self) -> int:
        ...

    def item(self, index: int) -> Item:
        """Item `index` (0 <= index < len); never raises for a bad row (see Item.error)."""
        ...

    def vocabulary_texts(self) -> list[str]:
        """Texts whose words get their own vocabulary ids (the rest are hashed)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the input."""
        ...


# --- the synthetic dataset --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SyntheticSource:
    """The dynamic-shapes generator (dysen_jax/data/shapes.py): item i is make_example(i, seed)."""

    num_items: int
    seed: int
    num_frames: int
    resolution: int
    max_actions: int

    def __len__(self) -> int:
        return self.num_items

    def item(self, index: int) -> Item:
        from dysen_jax.data.shapes import make_example

        example = make_example(index, seed=self.seed, num_frames=self.num_frames, resolution=self.resolution,
                               max_actions=self.max_actions)
        return Item(index, example.caption, video=example.video, gold_events=tuple(example.events))

    def vocabulary_texts(self) -> list[str]:
        from dysen_jax.data.shapes import vocabulary_texts

        return vocabulary_texts()

    def describe(self) -> dict[str, Any]:
        return {"dataset": "dynamic_shapes", "seed": self.seed, "max_actions": self.max_actions}


# --- caption files ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Row:
    """One parsed row of a caption file: caption and resolved video path, or why it is unusable."""

    caption: str
    video_path: str | None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class CaptionFileSource:
    """Rows of a .jsonl / .csv caption file (see module docstring); item i is data row i."""

    path: str
    rows: tuple[Row, ...]

    @classmethod
    def from_file(cls, path: str) -> "CaptionFileSource":
        return cls(path, tuple(read_caption_file(path)))

    def __len__(self) -> int:
        return len(self.rows)

    def item(self, index: int) -> Item:
        row = self.rows[index]
        error = row.error
        if error is None and row.video_path and "://" not in row.video_path and not os.path.exists(row.video_path):
            error = f"video file {row.video_path!r} does not exist"
        return Item(index, row.caption, video_path=row.video_path, error=error)

    def vocabulary_texts(self) -> list[str]:
        from dysen_jax.data.shapes import vocabulary_texts

        return vocabulary_texts() + [r.caption for r in self.rows if r.error is None]

    def describe(self) -> dict[str, Any]:
        return {"dataset": "captions", "captions_file": self.path}


def _open_text(path: str) -> io.TextIOBase:
    """Opens a local file, or a remote one (gs://, s3://, hdfs://) through tf.io.gfile."""
    if "://" in path:
        import tensorflow as tf

        return io.StringIO(tf.io.gfile.GFile(path, "r").read())
    return open(path, encoding="utf-8", newline="")


def _exists(path: str) -> bool:
    if "://" in path:
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def _resolve(video: str, base_dir: str) -> str:
    if "://" in video or os.path.isabs(video):
        return video
    return os.path.join(base_dir, video)


def _row(caption: Any, video: Any, where: str, base_dir: str) -> Row:
    caption = caption.strip() if isinstance(caption, str) else ""
    video = video.strip() if isinstance(video, str) else ""
    if not caption:
        return Row("", _resolve(video, base_dir) if video else None, f"{where}: no caption")
    if not video:
        return Row(caption, None, f"{where}: no video path")
    return Row(caption, _resolve(video, base_dir))


def read_caption_file(path: str) -> list[Row]:
    """Every data row of a caption file, in file order (unusable rows carry an error)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in CAPTION_FILE_FORMATS:
        raise ValueError(f"config.data.captions_file={path!r}: the extension must be one of "
                         f"{', '.join(CAPTION_FILE_FORMATS)} (JSONL objects with caption/video keys, or CSV "
                         "with a caption,video header)")
    if not _exists(path):
        raise FileNotFoundError(f"config.data.captions_file={path!r} does not exist: point it at a .jsonl or "
                                ".csv file of captions and video paths")
    base_dir = os.path.dirname(path)
    rows = []
    with _open_text(path) as f:
        if ext == ".csv":
            reader = csv.DictReader(f)
            missing = {"caption", "video"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"config.data.captions_file={path!r}: the CSV header {reader.fieldnames} lacks "
                                 f"{sorted(missing)}; the first line must name the columns, e.g. caption,video")
            for record in reader:
                rows.append(_row(record.get("caption"), record.get("video"), f"line {reader.line_num}", base_dir))
        else:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as err:
                    rows.append(Row("", None, f"line {number}: not valid JSON ({err})"))
                    continue
                if not isinstance(record, dict):
                    rows.append(Row("", None, f"line {number}: expected an object with caption and video keys"))
                    continue
                rows.append(_row(record.get("caption"), record.get("video"), f"line {number}", base_dir))
    return rows


# --- construction from the config -------------------------------------------------------------------
def source_from_config(config: Any) -> Source:
    """The source config.data describes (dataset, num_train / captions_file, sizes, seed)."""
    data = config.data
    if data.dataset == "dynamic_shapes":
        return SyntheticSource(data.num_train, config.seed, data.num_frames, data.resolution, data.max_actions)
    if data.dataset == "captions":
        path = data.get("captions_file", "")
        if not path:
            raise ValueError("config.data.dataset='captions' needs config.data.captions_file=PATH: a .jsonl file "
                             "of {\"caption\": ..., \"video\": ...} objects or a .csv with a caption,video header")
        return CaptionFileSource.from_file(path)
    raise ValueError(f"config.data.dataset={data.dataset!r} is not a known dataset; valid choices: "
                     f"{', '.join(DATASETS)}")


# --- videos -----------------------------------------------------------------------------------------
def sample_frame_indices(num_available: int, num_frames: int) -> np.ndarray:
    """`num_frames` indices spread evenly over `num_available` frames (the centre of each of F equal
    segments; frames repeat when the clip is shorter than F)."""
    positions = (np.arange(num_frames) + 0.5) * num_available / num_frames
    return np.minimum(positions.astype(np.int64), num_available - 1)


def fit_video(frames: np.ndarray, num_frames: int, resolution: int) -> np.ndarray:
    """uint8 [T, H, W, 3] -> [num_frames, resolution, resolution, 3]: even temporal sampling, centre
    square crop, area resize (bicubic when enlarging)."""
    from PIL import Image

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise VideoError(f"expected frames [T, H, W, 3] with T >= 1, got shape {frames.shape}")
    frames = frames[sample_frame_indices(frames.shape[0], num_frames)].astype(np.uint8)
    h, w = frames.shape[1:3]
    if (h, w) == (resolution, resolution):
        return frames
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    resample = Image.Resampling.BOX if side > resolution else Image.Resampling.BICUBIC
    out = np.empty((num_frames, resolution, resolution, 3), np.uint8)
    for i, frame in enumerate(frames[:, top:top + side, left:left + side]):
        out[i] = np.asarray(Image.fromarray(frame).resize((resolution, resolution), resample))
    return out


def _read_frames(path: str) -> np.ndarray:
    from dysen_jax.data.video_io import read_video

    if "://" not in path:
        return read_video(path)
    import tensorflow as tf  # remote file: copy it next to us, the decoder needs a local path

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        tf.io.gfile.copy(path, local)
        return read_video(local)


def load_video(item: Item, num_frames: int, resolution: int) -> np.ndarray:
    """The item's clip as uint8 [num_frames, resolution, resolution, 3]; VideoError with the reason."""
    if item.video is not None:
        return fit_video(item.video, num_frames, resolution)
    if not item.video_path:
        raise VideoError("the item has no video")
    try:
        frames = _read_frames(item.video_path)
    except Exception as err:  # decoders raise many kinds (OSError, RuntimeError, StopIteration, ...)
        raise VideoError(f"cannot read video {item.video_path!r}: {type(err).__name__}: {err}") from None
    return fit_video(frames, num_frames, resolution)

