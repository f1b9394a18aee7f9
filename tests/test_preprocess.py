"""Preprocess: records match the spec, failures are side-filed and counted, reruns resume."""

from __future__ import annotations

import json
import os

import numpy as np

from dysen_jax import preprocess as preprocess_lib
from dysen_jax.data.pipeline import make_dataset
from dysen_jax.data.records import FAILURES, manifest_spec_and_vocab, read_manifest
from tests.helpers import tiny_test_config


def test_records_round_trip_through_tf_data(tmp_path):
    config = tiny_test_config()
    manifest = preprocess_lib.preprocess(config, str(tmp_path), show_progress=False)
    assert manifest["counts"]["written"] == 16 and manifest["counts"]["failed"] == 0
    # The rules planner reproduces the generator's gold events on these captions.
    assert manifest["counts"]["planner_matches_gold"] == 16
    spec, vocab = manifest_spec_and_vocab(read_manifest(str(tmp_path)))
    batch = next(make_dataset(str(tmp_path), spec, 4, seed=0, shuffle_buffer=1).as_numpy_iterator())
    assert batch["video"].shape == (4, *spec.video_shape) and batch["video"].dtype == np.float32
    assert -1.0 <= batch["video"].min() and batch["video"].max() <= 1.0
    assert batch["dsg/node_mask"].dtype == bool and batch["dsg/node_mask"].shape == (4, *spec.dsg.array_shapes()["node_mask"])
    from dysen_jax.data.shapes import make_example

    first = make_example(0, seed=config.seed, num_frames=config.data.num_frames, resolution=config.data.resolution,
                         max_actions=config.data.max_actions)
    np.testing.assert_array_equal(np.round((batch["video"][0] + 1) * 127.5).astype(np.uint8), first.video)
    np.testing.assert_array_equal(batch["text_tokens"][0], vocab.encode(first.caption, spec.text_len, bos=True))


def test_failures_side_file_and_resume(tmp_path):
    config = tiny_test_config()
    config.dsg.max_nodes = 4  # clips with two or more events need more slots: they must fail, not crash
    out = str(tmp_path)
    manifest = preprocess_lib.preprocess(config, out, show_progress=False)
    counts = manifest["counts"]
    assert counts["failed"] > 0 and counts["written"] + counts["failed"] == 16
    failures = [json.loads(line) for line in open(os.path.join(out, FAILURES))]
    assert len(failures) == counts["failed"]
    assert all("max_nodes" in f["error"] and f["caption"] for f in failures)
    # A crash mid-run loses at most the shard in flight: remove one finished shard and rerun.
    shard = manifest["shards"][1]["name"]
    os.remove(os.path.join(out, shard))
    before = os.path.getmtime(os.path.join(out, manifest["shards"][0]["name"]))
    again = preprocess_lib.preprocess(config, out, show_progress=False)
    assert again["counts"]["shards_skipped_on_resume"] == 1
    assert os.path.getmtime(os.path.join(out, manifest["shards"][0]["name"])) == before
    assert again["counts"]["written"] == counts["written"] and again["counts"]["failed"] == counts["failed"]
    assert len(open(os.path.join(out, FAILURES)).readlines()) == counts["failed"]


def test_shard_ranges_cover_every_item_once():
    ranges = preprocess_lib.shard_ranges(10, 3)
    assert [i for r in ranges for i in r] == list(range(10))
