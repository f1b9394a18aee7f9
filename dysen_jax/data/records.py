"""The TFRecord format of preprocessed examples: feature spec, encoding and the manifest.

One record = one clip: `video` (raw uint8 bytes, [F, H, W, 3]), `caption` and `plan` (the planner's
JSON, for inspection and evaluation) as bytes, `text_tokens` [S] and the DSG arrays of
`dysen_jax.dsg.tensorize` under `dsg/<name>`, all as int64 lists. The manifest (manifest.json next
to the shards) records the spec, the vocabulary and the counts, so readers never guess shapes.

With precomputed latents (`data.precompute_latents`, latent diffusion) a record also holds the frozen
VAE encoder's posterior over the clip's latents, `latent/mean` and `latent/logvar` (raw float32 bytes,
[F, h, w, C] each, unscaled and with logvar clamped as `DiagonalGaussian` does), so training draws
z = mean + exp(logvar / 2) * eps and scales it without running the encoder. The moments, not a
sample, are stored: each epoch then sees a fresh posterior sample, as with live encoding; logvar
rather than std because it is the encoder's own output (std is one exp away, computed on device).
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
LATENT_MEAN = "latent/mean"       # batch / record keys of the stored posterior moments
LATENT_LOGVAR = "latent/logvar"


@dataclasses.dataclass(frozen=True)
class RecordSpec:
    """Shapes of one record's arrays, and which tokenizer made `text_tokens` ("tiny" = the data's word
    vocabulary; "clip" / "minilm" = the pretrained text encoder's, from `model.text_encoder`)."""

    num_frames: int
    resolution: int
    text_len: int
    dsg: DSGShape
    text_tokenizer: str = "tiny"
    latent_shape: tuple[int, ...] = ()   # [F, h, w, C] of the stored VAE posterior moments; () = none stored

    def __post_init__(self) -> None:
        object.__setattr__(self, "latent_shape", tuple(int(d) for d in self.latent_shape))

    @property
    def stores_latents(self) -> bool:
        return bool(self.latent_shape)

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

    def parsed_arrays(self, video: bool | None = None) -> dict[str, tuple[tuple[int, ...], Any]]:
        """name -> (shape, numpy dtype) of one parsed example (what `pipeline.parse_fn` yields).

        `video` None: the float video only when no latents are stored (training on stored latents
        never needs the pixels); True / False force it in or out.
        """
        with_video = not self.stores_latents if video is None else video
        arrays: dict[str, tuple[tuple[int, ...], Any]] = {}
        if with_video:
            arrays["video"] = (self.video_shape, np.float32)
        if self.stores_latents:
            arrays[LATENT_MEAN] = arrays[LATENT_LOGVAR] = (self.latent_shape, np.float32)
        for name, shape in self.int_features().items():  # the DSG masks are bool, every other id int32
            arrays[name] = (shape, np.bool_ if name.endswith("_mask") else np.int32)
        return arrays

    def to_json(self) -> dict[str, Any]:
        out = {"num_frames": self.num_frames, "resolution": self.resolution, "text_len": self.text_len,
               "dsg": dataclasses.asdict(self.dsg), "text_tokenizer": self.text_tokenizer}
        if self.stores_latents:  # only then: pixel-space manifests and job fingerprints stay as they were
            out["latent_shape"] = list(self.latent_shape)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "RecordSpec":
        return cls(obj["num_frames"], obj["resolution"], obj["text_len"], DSGShape(**obj["dsg"]),
                   obj.get("text_tokenizer", "tiny"), tuple(obj.get("latent_shape", ())))

    @classmethod
    def from_config(cls, config: Any) -> "RecordSpec":
        return cls(config.data.num_frames, config.data.resolution, config.text.max_len,
                   DSGShape(config.dsg.max_steps, config.dsg.max_nodes, config.dsg.max_label_words,
                            config.data.num_frames), str(config.model.get("text_encoder", "tiny")),
                   stored_latent_shape(config))


def stored_latent_shape(config: Any) -> tuple[int, ...]:
    """[F, h, w, C] of the posterior moments preprocess stores for `config` (`data.precompute_latents`,
    sizes from the `vae` section), or () when it stores none."""
    if not bool(config.data.get("precompute_latents", False)):
        return ()
    if not bool(config.model.get("latent", False)) or "vae" not in config:
        raise ValueError("config.data.precompute_latents=True stores VAE latents for latent diffusion: it needs "
                         "config.model.latent=True and a config.vae section (or set precompute_latents=False)")
    factor = 2 ** (len(config.vae.block_out_channels) - 1)
    if config.data.resolution % factor:
        raise ValueError(f"config.data.resolution={config.data.resolution} is not divisible by the VAE's "
                         f"downsampling {factor} (config.vae.block_out_channels)")
    size = config.data.resolution // factor
    return (int(config.data.num_frames), size, size, int(config.vae.latent_channels))


def video_to_unit(video: np.ndarray) -> np.ndarray:
    """uint8 frames -> float32 in [-1, 1], exactly as `pipeline.parse_fn` converts them."""
    return np.asarray(video, np.uint8).astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def encode_example(spec: RecordSpec, video: np.ndarray, caption: str, plan_json: str,
                   text_tokens: np.ndarray, dsg_arrays: dict[str, np.ndarray],
                   latent_moments: tuple[np.ndarray, np.ndarray] | None = None) -> bytes:
    """Serialises one clip as a tf.train.Example (validated against `spec`); `latent_moments` =
    (mean, logvar) of the VAE posterior, required exactly when the spec stores latents."""
    import tensorflow as tf

    if video.shape != spec.video_shape or video.dtype != np.uint8:
        raise ValueError(f"video has shape {video.shape} {video.dtype}, the record spec needs "
                         f"{spec.video_shape} uint8 (config.data.num_frames / resolution)")
    if (latent_moments is not None) != spec.stores_latents:
        raise ValueError(f"the record spec {'stores' if spec.stores_latents else 'does not store'} VAE latents "
                         f"(config.data.precompute_latents) but latent moments were "
                         f"{'not ' if latent_moments is None else ''}given")
    ints = {"text_tokens": text_tokens, **{f"dsg/{k}": v for k, v in dsg_arrays.items()}}
    feature = {
        "video": tf.train.Feature(bytes_list=tf.train.BytesList(value=[video.tobytes()])),
        "caption": tf.train.Feature(bytes_list=tf.train.BytesList(value=[caption.encode()])),
        "plan": tf.train.Feature(bytes_list=tf.train.BytesList(value=[plan_json.encode()])),
    }
    for name, moment in zip((LATENT_MEAN, LATENT_LOGVAR), latent_moments or ()):
        moment = np.asarray(moment)
        if moment.shape != spec.latent_shape:
            raise ValueError(f"{name} has shape {moment.shape}, the record spec needs {spec.latent_shape}")
        data = moment.astype("<f4").tobytes()
        feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
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
