"""tf.data input pipeline over the preprocessed TFRecord shards.

Deterministic and independent of the process count: the global batch is config.data.input_streams
blocks, each from one stream (files in sorted order, every S-th of them, a seeded shuffle and
`skip(start_step * rows)` so a resumed run sees exactly the batches an uninterrupted run would);
each process builds only the streams whose rows its devices hold.
(Skipping re-reads the skipped raw records: cheap at our scales; a pod-scale run keeps it cheap by
resuming at epoch boundaries or with tf.data iterator checkpoints.)
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import numpy as np

from dysen_jax.data.records import RecordSpec


def shard_files(data_dir: str, stream_index: int = 0, num_streams: int = 1) -> list[str]:
    """The TFRecord files of input stream `stream_index` of `num_streams` (round-robin over sorted names).
    `data_dir` may be local or any filesystem tf.io.gfile reads (gs://... on TPU pods)."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, "*.tfrecord")))
    if not files:
        raise FileNotFoundError(f"no *.tfrecord files in {data_dir!r}: run `python -m dysen_jax.preprocess` "
                                "or fix config.data.data_dir")
    if not 0 <= stream_index < num_streams:
        raise ValueError(f"input stream {stream_index} does not exist: there are {num_streams} "
                         "(config.data.input_streams)")
    mine = files[stream_index::num_streams]
    if not mine:
        raise ValueError(f"{len(files)} TFRecord files cannot feed config.data.input_streams={num_streams}: "
                         "preprocess with config.data.num_shards >= data.input_streams, or use fewer streams")
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


def stream_seed(seed: int, stream_index: int) -> int:
    """Shuffle seed of input stream s (stream 0 keeps `seed`, so one stream is the historical order)."""
    return seed + 1_000_003 * stream_index


def make_dataset(data_dir: str, spec: RecordSpec, batch_size: int, seed: int, *, start_step: int = 0,
                 shuffle_buffer: int = 512, num_streams: int = 1, streams: Sequence[int] | None = None,
                 process_index: int = 0, process_count: int = 1, repeat: bool = True, video: bool | None = None):
    """Batched tf.data.Dataset of this process's rows of every global batch (`batch_size` rows per batch).

    The global batch is `num_streams` (config.data.input_streams) blocks of equal size, block s from
    stream s: files[s::num_streams], its own seeded shuffle, and `skip(start_step * rows)` for exact
    resume. This process builds `streams` (default: the contiguous block of num_streams/process_count
    streams of `process_index`; train.py passes the ones its devices hold, parallel/distributed.py:
    local_input) and concatenates them in order, so the data order is the same for any process count.
    `video` as in `parse_fn`: None = the pixels only when the records hold no latents; True = always
    (the autoencoder stage reads pixels from latent-precomputed records).
    """
    import tensorflow as tf

    if streams is None:
        if num_streams % process_count:
            raise ValueError(f"config.data.input_streams={num_streams} must be a multiple of the "
                             f"{process_count} processes")
        per_process = num_streams // process_count
        streams = range(process_index * per_process, (process_index + 1) * per_process)
    streams = list(streams)
    if not streams or batch_size % len(streams):
        raise ValueError(f"batch of {batch_size} rows cannot be split over input streams {streams}: "
                         "config.train.batch_size must be divisible by config.data.input_streams")
    rows = batch_size // len(streams)
    parse = parse_fn(spec, video)

    def stream(index: int):
        files = shard_files(data_dir, index, num_streams)
        ds = tf.data.Dataset.from_tensor_slices(files)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if shuffle_buffer > 1:
            ds = ds.shuffle(shuffle_buffer, seed=stream_seed(seed, index), reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        if start_step:
            ds = ds.skip(start_step * rows)
        ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(rows, drop_remainder=True)

    if len(streams) == 1:
        ds = stream(streams[0])
    else:
        ds = tf.data.Dataset.zip(tuple(stream(s) for s in streams)).map(
            lambda *parts: {k: tf.concat([p[k] for p in parts], axis=0) for k in parts[0]},
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(2)


def numpy_batches(dataset: Any) -> Iterator[dict[str, np.ndarray]]:
    """Iterates a tf.data.Dataset as dicts of numpy arrays."""
    for batch in dataset.as_numpy_iterator():
        yield batch
