"""Preprocess: captions (+ videos) -> planner -> DSG tensors + text tokens -> TFRecord shards + manifest.

    python -m dysen_jax.preprocess --config=configs/tiny.py --output_dir=DIR

Resumable: each shard is written to a temporary file and renamed when complete, with a small
`.done.json` marker holding its counts and failures; a rerun skips completed shards. Items the
planner or the DSG tensorizer rejects are not fatal: they go to failures.jsonl with the reason and
are counted in the manifest.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from dysen_jax import logs
from dysen_jax.data.records import (FAILURES, SHARD_PATTERN, RecordSpec, encode_example, write_manifest)
from dysen_jax.dsg.schema import DSGError
from dysen_jax.dsg.tensorize import tensorize
from dysen_jax.dsg.vocab import WordVocab


def build_vocab(config: Any) -> WordVocab:
    """The dataset's word vocabulary (every word the synthetic generator can emit) + hash buckets."""
    from dysen_jax.data.shapes import vocabulary_texts

    return WordVocab.from_texts(vocabulary_texts(), config.dsg.num_hash_buckets)


def shard_ranges(num_examples: int, num_shards: int) -> list[range]:
    """Contiguous, near-equal example index ranges, one per shard."""
    if num_shards < 1 or num_shards > max(num_examples, 1):
        raise ValueError(f"config.data.num_shards={num_shards} must be in [1, num_train={num_examples}]")
    bounds = [num_examples * s // num_shards for s in range(num_shards + 1)]
    return [range(bounds[s], bounds[s + 1]) for s in range(num_shards)]


def _write_shard(path: str, indices: range, config: Any, spec: RecordSpec, vocab: WordVocab,
                 planner: Any, progress: Any) -> dict[str, Any]:
    """Writes one shard atomically; returns its counts and failures."""
    import tensorflow as tf

    from dysen_jax.data.shapes import make_example

    failures, written, gold_matches = [], 0, 0
    tmp = path + ".tmp"
    with tf.io.TFRecordWriter(tmp) as writer:
        for index in indices:
            example = make_example(index, seed=config.seed, num_frames=config.data.num_frames,
                                   resolution=config.data.resolution, max_actions=config.data.max_actions)
            try:
                plan = planner.plan(example.caption)
                arrays = tensorize(plan.dsg, vocab, spec.dsg)
            except DSGError as err:
                failures.append({"index": index, "caption": example.caption, "error": str(err)})
            else:
                tokens = vocab.encode(example.caption, spec.text_len, bos=True)
                writer.write(encode_example(spec, example.video, example.caption, plan.dumps(), tokens, arrays))
                written += 1
                gold_matches += int(tuple(plan.events) == tuple(example.events))
            progress.update(1)
    os.replace(tmp, path)
    return {"written": written, "failed": len(failures), "planner_matches_gold": gold_matches,
            "failures": failures}


def preprocess(config: Any, output_dir: str, show_progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) preprocessing into `output_dir`; returns the manifest."""
    from tqdm import tqdm

    from dysen_jax.planner.base import planner_from_config

    if config.data.dataset != "dynamic_shapes":
        raise ValueError(f"config.data.dataset={config.data.dataset!r}: only 'dynamic_shapes' is supported")
    os.makedirs(output_dir, exist_ok=True)
    spec = RecordSpec.from_config(config)
    vocab = build_vocab(config)
    planner = planner_from_config(config.planner)
    ranges = shard_ranges(config.data.num_train, config.data.num_shards)
    started = time.time()
    shards, skipped = [], 0
    with tqdm(total=config.data.num_train, desc="preprocess", unit="clip", disable=not show_progress) as bar:
        for s, indices in enumerate(ranges):
            name = SHARD_PATTERN.format(index=s, count=len(ranges))
            path = os.path.join(output_dir, name)
            marker = path + ".done.json"
            if os.path.exists(path) and os.path.exists(marker):
                with open(marker) as f:
                    info = json.load(f)
                skipped += 1
                bar.update(len(indices))
            else:
                info = _write_shard(path, indices, config, spec, vocab, planner, bar)
                info.update(name=name, first_index=indices.start, num_items=len(indices))
                with open(marker + ".tmp", "w") as f:
                    json.dump(info, f)
                os.replace(marker + ".tmp", marker)
            shards.append(info)
    failures = [f for info in shards for f in info["failures"]]
    with open(os.path.join(output_dir, FAILURES), "w") as f:
        for item in failures:
            f.write(json.dumps(item) + "\n")
    written = sum(i["written"] for i in shards)
    manifest = {
        "spec": spec.to_json(),
        "vocab": vocab.to_json(),
        "counts": {"items": config.data.num_train, "written": written, "failed": len(failures),
                   "planner_matches_gold": sum(i["planner_matches_gold"] for i in shards),
                   "shards": len(shards), "shards_skipped_on_resume": skipped},
        "shards": [{k: i[k] for k in ("name", "first_index", "num_items", "written", "failed")} for i in shards],
        "source": {"dataset": config.data.dataset, "seed": config.seed, "max_actions": config.data.max_actions,
                   "planner": config.planner.backend},
    }
    write_manifest(output_dir, manifest)
    counts = manifest["counts"]
    logs.info(f"preprocess: {counts['written']}/{counts['items']} written, {counts['failed']} failed "
              f"(see {FAILURES}), planner = gold events on {counts['planner_matches_gold']}, "
              f"{skipped} shard(s) already done, {time.time() - started:.1f}s -> {output_dir}")
    return manifest


def main(argv: list[str]) -> None:
    del argv
    from dysen_jax.cli import FLAGS

    config = FLAGS.config
    output_dir = FLAGS.output_dir or config.data.data_dir
    if not output_dir:
        raise SystemExit("preprocess needs --output_dir=DIR (or --config.data.data_dir=DIR)")
    preprocess(config, output_dir)


if __name__ == "__main__":
    from dysen_jax.cli import run

    run(main, extra_flags=("output_dir",))
