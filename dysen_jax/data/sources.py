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
Relative video paths resolve against the caption file's directory. Videos (.mp4 and whatever ffmpeg
reads, .gif) become clips of config.data.num_frames frames at config.data.resolution as
`dysen_jax.data.video_decode` describes (VidRD §5.1): data.frame_stride (0 = spread over the whole
video), data.random_start, data.crop = center | random.

Pseudo-videos (VidRD §4.2, `dysen_jax.data.pseudo_video`): config.data.image_captions_file names a
caption file of images (.jsonl {"caption": ..., "image": ...} or .csv caption,image) and
config.data.pseudo_video_ratio the fraction of all items that are pseudo-videos made from them by a
random zoom (data.zoom_range) and pan (data.pan): 0 = none, 1 = images only (data.dataset unused),
r in (0, 1) = every item of data.dataset plus round(V r / (1 - r)) pseudo-videos (images drawn in a
seeded order, cycling with a new camera move when there are fewer images), spread evenly over the
item indices so every shard holds the same mix.

Random choices (start frame, crop offset, camera move) come from generators seeded with
(config.seed, item index): the same item gives the same clip in every run.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from typing import Any, Protocol

import numpy as np

from dysen_jax.data.pseudo_video import check_motion, pseudo_video, read_image
from dysen_jax.data.video_decode import CROPS, VideoError, fit_video, read_clip

DATASETS: tuple[str, ...] = ("dynamic_shapes", "captions")
CAPTION_FILE_FORMATS: tuple[str, ...] = (".jsonl", ".csv")


@dataclasses.dataclass(frozen=True)
class ClipSampling:
    """How an item's clip is cut (config.data): frames and square of a video, camera move over an image;
    `seed` (config.seed) and the item index seed every random choice."""

    frame_stride: int = 0                         # 0: spread over the whole video; k: every k-th frame
    random_start: bool = False                    # with a stride: random first frame (else centred window)
    crop: str = "center"                          # the square along the longer side: center | random
    zoom_range: tuple[float, float] = (1.0, 1.5)  # pseudo-videos: zoom of the first / last frame
    pan: float = 0.2                              # pseudo-videos: largest centre move / shorter side
    seed: int = 0

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"config.data.crop={self.crop!r} is not one of {', '.join(CROPS)}")
        if self.frame_stride < 0:
            raise ValueError(f"config.data.frame_stride={self.frame_stride} must be >= 0 (0 = frames spread over "
                             "the whole video, k = every k-th frame)")
        zoom_range, pan = check_motion(self.zoom_range, self.pan)
        object.__setattr__(self, "zoom_range", zoom_range)
        object.__setattr__(self, "pan", pan)

    @classmethod
    def from_config(cls, config: Any) -> "ClipSampling":
        data = config.data
        return cls(int(data.get("frame_stride", 0)), bool(data.get("random_start", False)),
                   str(data.get("crop", "center")), tuple(data.get("zoom_range", (1.0, 1.5))),
                   float(data.get("pan", 0.2)), int(config.seed))

    def describe_video(self) -> dict[str, Any]:
        """What the manifest (and the job fingerprint) records of the video sampling; {} for the defaults,
        so jobs written before these settings existed keep their fingerprints."""
        keys = ("frame_stride", "random_start", "crop")
        if all(getattr(self, k) == getattr(ClipSampling, k) for k in keys):
            return {}
        return {"clip_sampling": {k: getattr(self, k) for k in keys}}

    def rng(self, index: int, purpose: int) -> np.random.Generator:
        """The generator of item `index` for one purpose (0 frames, 1 crop, 2 camera move)."""
        return np.random.default_rng([self.seed % 2**32, index, purpose])


@dataclasses.dataclass(frozen=True, eq=False)
class Item:
    """One clip to preprocess. `video` holds generated frames (uint8 [F, H, W, 3]) when there is no
    file; `image_path` an image that becomes a pseudo-video; `sampling` how the clip is cut (None =
    frames spread over the video, centre square); `gold_events` the generator's events (synthetic
    data only); `error` why the row is unusable."""

    index: int
    caption: str
    video_path: str | None = None
    video: np.ndarray | None = None
    gold_events: tuple | None = None
    error: str | None = None
    image_path: str | None = None
    sampling: ClipSampling | None = None


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
MEDIA: tuple[str, ...] = ("video", "image")  # the path column of a caption file
_FIELD = {"video": "config.data.captions_file", "image": "config.data.image_captions_file"}


@dataclasses.dataclass(frozen=True)
class Row:
    """One parsed row of a caption file: caption and resolved video (or image) path, or why it is unusable."""

    caption: str
    media_path: str | None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class CaptionFileSource:
    """Rows of a .jsonl / .csv caption file (see module docstring); item i is data row i. `media` is the
    path column: "video" (clips) or "image" (each becomes a pseudo-video)."""

    path: str
    rows: tuple[Row, ...]
    media: str = "video"
    sampling: ClipSampling | None = None

    @classmethod
    def from_file(cls, path: str, media: str = "video", sampling: ClipSampling | None = None) -> "CaptionFileSource":
        return cls(path, tuple(read_caption_file(path, media)), media, sampling)

    def __len__(self) -> int:
        return len(self.rows)

    def item(self, index: int) -> Item:
        row = self.rows[index]
        error = row.error
        if error is None and row.media_path and "://" not in row.media_path and not os.path.exists(row.media_path):
            error = f"{self.media} file {row.media_path!r} does not exist"
        if self.media == "image":
            return Item(index, row.caption, image_path=row.media_path, error=error, sampling=self.sampling)
        return Item(index, row.caption, video_path=row.media_path, error=error, sampling=self.sampling)

    def vocabulary_texts(self) -> list[str]:
        from dysen_jax.data.shapes import vocabulary_texts

        return vocabulary_texts() + [r.caption for r in self.rows if r.error is None]

    def describe(self) -> dict[str, Any]:
        if self.media == "image":
            return {"dataset": "images", "image_captions_file": self.path}
        return {"dataset": "captions", "captions_file": self.path,
                **(self.sampling.describe_video() if self.sampling else {})}


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


def _resolve(media: str, base_dir: str) -> str:
    if "://" in media or os.path.isabs(media):
        return media
    return os.path.join(base_dir, media)


def _row(caption: Any, media_path: Any, where: str, base_dir: str, media: str) -> Row:
    caption = caption.strip() if isinstance(caption, str) else ""
    media_path = media_path.strip() if isinstance(media_path, str) else ""
    if not caption:
        return Row("", _resolve(media_path, base_dir) if media_path else None, f"{where}: no caption")
    if not media_path:
        return Row(caption, None, f"{where}: no {media} path")
    return Row(caption, _resolve(media_path, base_dir))


def read_caption_file(path: str, media: str = "video") -> list[Row]:
    """Every data row of a caption file whose path column is `media` ("video" or "image"), in file order
    (unusable rows carry an error)."""
    if media not in MEDIA:
        raise ValueError(f"media={media!r} must be one of {MEDIA}")
    field = _FIELD[media]
    ext = os.path.splitext(path)[1].lower()
    if ext not in CAPTION_FILE_FORMATS:
        raise ValueError(f"{field}={path!r}: the extension must be one of "
                         f"{', '.join(CAPTION_FILE_FORMATS)} (JSONL objects with caption/{media} keys, or CSV "
                         f"with a caption,{media} header)")
    if not _exists(path):
        raise FileNotFoundError(f"{field}={path!r} does not exist: point it at a .jsonl or "
                                f".csv file of captions and {media} paths")
    base_dir = os.path.dirname(path)
    rows = []
    with _open_text(path) as f:
        if ext == ".csv":
            reader = csv.DictReader(f)
            missing = {"caption", media} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{field}={path!r}: the CSV header {reader.fieldnames} lacks "
                                 f"{sorted(missing)}; the first line must name the columns, e.g. caption,{media}")
            for record in reader:
                rows.append(_row(record.get("caption"), record.get(media), f"line {reader.line_num}", base_dir,
                                 media))
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
                    rows.append(Row("", None, f"line {number}: expected an object with caption and {media} keys"))
                    continue
                rows.append(_row(record.get("caption"), record.get(media), f"line {number}", base_dir, media))
    return rows


# --- real videos mixed with pseudo-videos -------------------------------------------------------------
def pseudo_video_count(num_videos: int, ratio: float) -> int:
    """How many pseudo-videos make them `ratio` of all items next to `num_videos` real ones (0 < ratio < 1)."""
    return int(round(num_videos * ratio / (1.0 - ratio)))


@dataclasses.dataclass(frozen=True)
class MixedSource:
    """Every item of `videos` plus `num_pseudo` pseudo-videos from `images`, spread evenly: item i is a
    pseudo-video iff floor((i + 1) P / L) > floor(i P / L) (L = V + P items), the p-th of them made
    from image row order[p % K] (a seeded permutation), so repeats of an image get a new camera move
    (the move is seeded by the item index). `videos` None: images only, each once (ratio 1)."""

    videos: Source | None
    images: CaptionFileSource
    num_pseudo: int
    ratio: float
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.images) == 0 and self.num_pseudo:
            raise ValueError(f"config.data.image_captions_file={self.images.path!r} has no rows: pseudo-videos "
                             "need images (or set config.data.pseudo_video_ratio=0)")
        order = np.random.default_rng([self.seed % 2**32, len(self.images)]).permutation(len(self.images))
        object.__setattr__(self, "_order", order)

    def __len__(self) -> int:
        return (len(self.videos) if self.videos is not None else 0) + self.num_pseudo

    def _pseudo_before(self, index: int) -> int:
        return index * self.num_pseudo // len(self)

    def is_pseudo(self, index: int) -> bool:
        """Whether item `index` is a pseudo-video."""
        return self._pseudo_before(index + 1) > self._pseudo_before(index)

    def item(self, index: int) -> Item:
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} of {len(self)}")
        before = self._pseudo_before(index)
        if self.is_pseudo(index):
            source, inner = self.images, int(self._order[before % len(self.images)])
        else:
            source, inner = self.videos, index - before
        return dataclasses.replace(source.item(inner), index=index)

    def vocabulary_texts(self) -> list[str]:
        texts = self.videos.vocabulary_texts() if self.videos is not None else []
        return texts + self.images.vocabulary_texts()

    def describe(self) -> dict[str, Any]:
        sampling = self.images.sampling or ClipSampling()
        return {**(self.videos.describe() if self.videos is not None else {"dataset": "images"}),
                "image_captions_file": self.images.path, "pseudo_video_ratio": self.ratio,
                "pseudo_videos": self.num_pseudo, "zoom_range": list(sampling.zoom_range), "pan": sampling.pan}


# --- construction from the config -------------------------------------------------------------------
def _video_source(config: Any, sampling: ClipSampling) -> Source:
    data = config.data
    if data.dataset == "dynamic_shapes":
        return SyntheticSource(data.num_train, config.seed, data.num_frames, data.resolution, data.max_actions)
    if data.dataset == "captions":
        path = data.get("captions_file", "")
        if not path:
            raise ValueError("config.data.dataset='captions' needs config.data.captions_file=PATH: a .jsonl file "
                             "of {\"caption\": ..., \"video\": ...} objects or a .csv with a caption,video header")
        return CaptionFileSource.from_file(path, "video", sampling)
    raise ValueError(f"config.data.dataset={data.dataset!r} is not a known dataset; valid choices: "
                     f"{', '.join(DATASETS)}")


def source_from_config(config: Any) -> Source:
    """The source config.data describes (dataset, num_train / captions_file, sizes, seed, and the
    pseudo-videos of image_captions_file / pseudo_video_ratio)."""
    data = config.data
    sampling = ClipSampling.from_config(config)
    ratio = float(data.get("pseudo_video_ratio", 0.0))
    images_file = data.get("image_captions_file", "")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"config.data.pseudo_video_ratio={ratio} must be in [0, 1] (the fraction of items that are "
                         "pseudo-videos made from config.data.image_captions_file; 1 = images only)")
    if ratio > 0 and not images_file:
        raise ValueError(f"config.data.pseudo_video_ratio={ratio} needs config.data.image_captions_file=PATH: a "
                         ".jsonl file of {\"caption\": ..., \"image\": ...} objects or a .csv with a caption,image header")
    if images_file and ratio == 0:
        raise ValueError(f"config.data.image_captions_file={images_file!r} is set but config.data.pseudo_video_ratio=0:"
                         " set the fraction of pseudo-videos (e.g. 0.2; 1 = images only), or unset the file")
    if ratio == 0:
        return _video_source(config, sampling)
    images = CaptionFileSource.from_file(images_file, "image", sampling)
    if ratio == 1:
        return MixedSource(None, images, len(images), ratio, config.seed)
    videos = _video_source(config, sampling)
    return MixedSource(videos, images, pseudo_video_count(len(videos), ratio), ratio, config.seed)


# --- clips --------------------------------------------------------------------------------------------
def load_video(item: Item, num_frames: int, resolution: int) -> np.ndarray:
    """The item's clip as uint8 [num_frames, resolution, resolution, 3], cut as item.sampling says (None:
    frames spread over the video, centre square); VideoError with the reason."""
    sampling = item.sampling or ClipSampling()
    stride = sampling.frame_stride
    frame_rng = sampling.rng(item.index, 0) if sampling.random_start else None
    crop_rng = sampling.rng(item.index, 1) if sampling.crop == "random" else None
    if item.video is not None:
        return fit_video(item.video, num_frames, resolution, stride, frame_rng, crop_rng)
    if item.image_path:
        return pseudo_video(read_image(item.image_path), num_frames, resolution, sampling.rng(item.index, 2),
                            sampling.zoom_range, sampling.pan)
    if not item.video_path:
        raise VideoError("the item has no video")
    return read_clip(item.video_path, num_frames, resolution, stride, frame_rng, crop_rng)
