"""tf.data input pipeline over the preprocessed TFRecord shards.

Deterministic and independent of the process count: the global batch is config.data.input_streams
blocks, each from one stream (files in sorted order, every S-th of them, a seeded shuffle and
`skip(start_step * rows)` so a resumed run sees exactly the batches an uninterrupted run would);
each process builds only the streams whose rows its devices hold.
(Skipping re-reads the skipped raw records: cheap at our scales; a pod-scale run keeps it cheap by
resuming at epoch boundaries or with tf.data iterator checkpoints.)
"""

from __future__ import annotations

import glob
import os
from typing import Any, Iterator

import numpy as np

from dysen_jax.data.records import RecordSpec


def shard_files(data_dir: str, process_index: int = 0, process_count: int = 1) -> list[str]:
    """This process's TFRecord files (round-robin over sorted names)."""
    files = sorted(glob.glob(os.path.join(data_dir, "*.tfrecord")))
    if not files:
        raise FileNotFoundError(f"no *.tfrecord files in {data_dir!r}: run `python -m dysen_jax.preprocess` "
                                "or fix config.data.data_dir")
    mine = files[process_index::process_count]
    if not mine:
        raise ValueError(f"{len(files)} TFRecord files cannot feed {process_count} processes: "
                         "write at least one shard per process (config.data.num_shards)")
    return mine


def parse_fn(spec: RecordSpec, video: bool | None = None):
    """tf.train.Example bytes -> dict of tensors, the arrays of `spec.parsed_arrays(video)`: video float32
    in [-1, 1] (by default only when the records hold no precomputed latents), the stored VAE posterior
    moments `latent/mean`, `latent/logvar` float32 [F, h, w, C] when they do, text tokens and DSG arrays."""
    import tensorflow as tf

    arrays = spec.parsed_arrays(video)
    features = {"caption": tf.io.FixedLenFeature([], tf.string)}
    int_shapes = spec.int_features()
    features.update({k: tf.io.FixedLenFeature(list(s), tf.int64) for k, s in int_shapes.items()})
    raw = [name for name in arrays if name not in int_shapes]   # video and latent moments: raw bytes
    features.update({name: tf.io.FixedLenFeature([], tf.string) for name in raw})

    def parse(record):
        ex = tf.io.parse_single_example(record, features)
        out = {}
        for name in raw:
            shape = arrays[name][0]
            if name == "video":
                frames = tf.reshape(tf.io.decode_raw(ex[name], tf.uint8), shape)
                out[name] = tf.cast(frames, tf.float32) / 127.5 - 1.0
            else:
                out[name] = tf.reshape(tf.io.decode_raw(ex[name], tf.float32, little_endian=True), shape)
        for name in int_shapes:
            out[name] = tf.cast(ex[name], tf.bool if arrays[name][1] == np.bool_ else tf.int32)
        return out

    return parse


def make_dataset(data_dir: str, spec: RecordSpec, batch_size: int, seed: int, *, start_step: int = 0,
                 shuffle_buffer: int = 512, process_index: int = 0, process_count: int = 1,
                 repeat: bool = True):
    """Batched tf.data.Dataset of this process's share of the data (batch_size = per-process)."""
    import tensorflow as tf

    files = shard_files(data_dir, process_index, process_count)
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if start_step:
        ds = ds.skip(start_step * batch_size)
    ds = ds.map(parse_fn(spec), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(2)


def numpy_batches(dataset: Any) -> Iterator[dict[str, np.ndarray]]:
    """Iterates a tf.data.Dataset as dicts of numpy arrays."""
    for batch in dataset.as_numpy_iterator():
        yield batch
