"""The TFRecord format of preprocessed examples: feature spec, encoding and the manifest.

One record = one clip: `video` (raw uint8 bytes, [F, H, W, 3]), `caption` and `plan` (the planner's
JSON, for inspection and evaluation) as bytes, `text_tokens` [S] and the DSG arrays of
`dysen_jax.dsg.tensorize` under `dsg/<name>`, all as int64 lists. The manifest (manifest.json next
to the shards) records the spec, the vocabulary and the counts, so readers never guess shapes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from dysen_jax.dsg.tensorize import DSGShape
from dysen_jax.dsg.vocab import WordVocab

MANIFEST = "manifest.json"
FAILURES = "failures.jsonl"
SHARD_PATTERN = "train-{index:05d}-of-{count:05d}.tfrecord"


@dataclasses.dataclass(frozen=True)
class RecordSpec:
    """Shapes of one record's arrays, and which tokenizer made `text_tokens` ("tiny" = the data's word
    vocabulary; "clip" / "minilm" = the pretrained text encoder's, from `model.text_encoder`)."""

    num_frames: int
    resolution: int
    text_len: int
    dsg: DSGShape
    text_tokenizer: str = "tiny"

    def encode_caption(self, caption: str, vocab: WordVocab) -> np.ndarray:
        """The caption's int32 [text_len] ids for this spec's tokenizer."""
        if self.text_tokenizer == "tiny":
            return np.asarray(vocab.encode(caption, self.text_len, bos=True), np.int32)
        from dysen_jax.text import tokenize

        return tokenize(self.text_tokenizer, [caption], self.text_len)[0]

    @property
    def video_shape(self) -> tuple[int, int, int, int]:
        return (self.num_frames, self.resolution, self.resolution, 3)

    def int_features(self) -> dict[str, tuple[int, ...]]:
        """Integer features (name -> shape), stored flattened as int64."""
        shapes = {"text_tokens": (self.text_len,)}
        shapes.update({f"dsg/{k}": s for k, s in self.dsg.array_shapes().items()})
        return shapes

    def to_json(self) -> dict[str, Any]:
        return {"num_frames": self.num_frames, "resolution": self.resolution, "text_len": self.text_len,
                "dsg": dataclasses.asdict(self.dsg), "text_tokenizer": self.text_tokenizer}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "RecordSpec":
        return cls(obj["num_frames"], obj["resolution"], obj["text_len"], DSGShape(**obj["dsg"]),
                   obj.get("text_tokenizer", "tiny"))

    @classmethod
    def from_config(cls, config: Any) -> "RecordSpec":
        return cls(config.data.num_frames, config.data.resolution, config.text.max_len,
                   DSGShape(config.dsg.max_steps, config.dsg.max_nodes, config.dsg.max_label_words,
                            config.data.num_frames), str(config.model.get("text_encoder", "tiny")))


def encode_example(spec: RecordSpec, video: np.ndarray, caption: str, plan_json: str,
                   text_tokens: np.ndarray, dsg_arrays: dict[str, np.ndarray]) -> bytes:
    """Serialises one clip as a tf.train.Example (validated against `spec`)."""
    import tensorflow as tf

    if video.shape != spec.video_shape or video.dtype != np.uint8:
        raise ValueError(f"video has shape {video.shape} {video.dtype}, the record spec needs "
                         f"{spec.video_shape} uint8 (config.data.num_frames / resolution)")
    ints = {"text_tokens": text_tokens, **{f"dsg/{k}": v for k, v in dsg_arrays.items()}}
    feature = {
        "video": tf.train.Feature(bytes_list=tf.train.BytesList(value=[video.tobytes()])),
        "caption": tf.train.Feature(bytes_list=tf.train.BytesList(value=[caption.encode()])),
        "plan": tf.train.Feature(bytes_list=tf.train.BytesList(value=[plan_json.encode()])),
    }
    for name, shape in spec.int_features().items():
        value = np.asarray(ints[name])
        if value.shape != shape:
            raise ValueError(f"feature {name} has shape {value.shape}, the record spec needs {shape}")
        feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=value.astype(np.int64).ravel()))
    # deterministic=True: map entries sorted by key, so the same clip gives the same bytes in every process
    # (resumed, split or Beam runs write identical files).
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def write_manifest(directory: str, manifest: dict[str, Any]) -> None:
    """Atomically writes manifest.json (write to a temp file, then rename)."""
    tmp = os.path.join(directory, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, os.path.join(directory, MANIFEST))


def read_manifest(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no {MANIFEST} in {directory!r}: run `python -m dysen_jax.preprocess --config=... "
            f"--output_dir={directory}` first, or set config.data.data_dir to a preprocessed directory")
    with open(path) as f:
        return json.load(f)


def manifest_spec_and_vocab(manifest: dict[str, Any]) -> tuple[RecordSpec, WordVocab]:
    return RecordSpec.from_json(manifest["spec"]), WordVocab.from_json(manifest["vocab"])
