"""Preprocess: records match the spec, failures are side-filed and counted, reruns resume (also after
SIGKILL), several processes split one job, caption files are read, the LLM cache saves every call."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dysen_jax import preprocess as preprocess_lib
from dysen_jax.data import sources, video_decode
from dysen_jax.data.pipeline import make_dataset
from dysen_jax.data.records import FAILURES, manifest_spec_and_vocab, read_manifest
from dysen_jax.data.video_io import read_video, write_video
from tests.helpers import tiny_test_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def test_rerun_with_a_different_config_is_refused(tmp_path):
    preprocess_lib.preprocess(tiny_test_config(), str(tmp_path), show_progress=False)
    with pytest.raises(ValueError, match="different config.*new --output_dir"):
        preprocess_lib.preprocess(tiny_test_config(**{"text.max_len": 12}), str(tmp_path), show_progress=False)


def test_shard_ranges_cover_every_item_once():
    ranges = preprocess_lib.shard_ranges(10, 3)
    assert [i for r in ranges for i in r] == list(range(10))


# --- helpers ------------------------------------------------------------------------------------------


def records(directory: str) -> dict[str, list[bytes]]:
    """Every TFRecord file of `directory` (name -> its records in order); also checks no temp files remain."""
    import tensorflow as tf

    assert not glob.glob(os.path.join(directory, "*.tmp")), os.listdir(directory)
    return {os.path.basename(p): [r.numpy() for r in tf.data.TFRecordDataset(p)]
            for p in sorted(glob.glob(os.path.join(directory, "*.tfrecord")))}


def _rules_answer(body: dict) -> str:
    """A perfect LLM: the offline planner's events for the caption of the last 'Text: ...' user turn."""
    from dysen_jax.planner.prompts import format_events
    from dysen_jax.planner.rules import RulesPlanner

    caption = next(m["content"][len("Text: "):] for m in reversed(body["messages"])
                   if m["role"] == "user" and m["content"].startswith("Text: "))
    return format_events(RulesPlanner().plan(caption).events)


def _llm_overrides(server, **extra) -> dict[str, object]:
    """Config keys for the openai backend against the scripted server (step I only, so calls = items)."""
    return {"planner.backend": "openai", "planner.imagination": False, "planner.num_demonstrations": 2,
            "planner.llm.base_url": server.base_url, "planner.llm.api_key_env": "EMPTY",
            "planner.llm.requests_per_minute": 0, **extra}


def _configure(config, overrides: dict[str, object]):
    for key, value in overrides.items():
        *path, name = key.split(".")
        section = config
        for part in path:
            section = section[part]
        section[name] = value
    return config


@pytest.fixture
def server():
    from tests.llm_test_server import ScriptedLLMServer

    with ScriptedLLMServer() as s:
        s.set_mode("ok", answer=_rules_answer)
        yield s


# --- resume after SIGKILL -----------------------------------------------------------------------------
def test_sigkill_midway_then_rerun_gives_exactly_the_uninterrupted_records(tmp_path, server):
    # A slow LLM server (0.3 s per answer, 4 concurrent per shard) makes the run last ~2.5 s after start-up,
    # so killing it as soon as the first shard's marker appears lands midway.
    overrides = _llm_overrides(server, **{"data.num_train": 32, "data.num_shards": 8, "data.plan_batch_size": 4})
    reference = str(tmp_path / "reference")
    preprocess_lib.preprocess(_configure(tiny_test_config(), overrides), reference, show_progress=False)

    server.set_mode("slow", delay_s=0.3)
    killed = str(tmp_path / "killed")
    command = [sys.executable, "-m", "dysen_jax.preprocess", "--config=configs/tiny.py:smoke",
               f"--output_dir={killed}", *(f"--config.{k}={v}" for k, v in overrides.items())]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not glob.glob(os.path.join(killed, "*.done.json")):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no shard finished within 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    done_before = len(glob.glob(os.path.join(killed, "*.done.json")))
    assert 1 <= done_before < 8 and not os.path.exists(os.path.join(killed, "manifest.json"))

    server.set_mode("ok")
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert records(killed) == records(reference)
    manifest = read_manifest(killed)
    assert manifest["counts"]["written"] == 32 and manifest["counts"]["shards_skipped_on_resume"] >= done_before
    assert manifest["report"]["planned"]["llm"] == 32


# --- several processes share one job ------------------------------------------------------------------
def test_shard_index_split_over_two_processes_equals_one_process(tmp_path):
    config = tiny_test_config(**{"data.num_shards": 4})
    config.dsg.max_nodes = 4  # some items fail: their failures must merge too
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    expected = preprocess_lib.preprocess(config, whole, show_progress=False)
    assert preprocess_lib.preprocess(config, split, show_progress=False, shard_index=1, num_shards=2) is None
    assert sorted(records(split)) == ["train-00001-of-00004.tfrecord", "train-00003-of-00004.tfrecord"]
    assert not os.path.exists(os.path.join(split, "manifest.json"))
    with pytest.raises(RuntimeError, match="not done"):
        preprocess_lib.finalize_only(config, split)
    manifest = preprocess_lib.preprocess(config, split, show_progress=False, shard_index=0, num_shards=2)
    assert records(split) == records(whole)
    assert manifest["counts"] == expected["counts"] and manifest["shards"] == expected["shards"]
    assert open(os.path.join(split, FAILURES)).read() == open(os.path.join(whole, FAILURES)).read()
    assert preprocess_lib.finalize_only(config, split)["counts"]["written"] == expected["counts"]["written"]
    with pytest.raises(ValueError, match="shard_index"):
        preprocess_lib.preprocess(config, split, show_progress=False, shard_index=2, num_shards=2)


# --- caption files --------------------------------------------------------------------------------------
def _write_clips(directory) -> list[tuple[str, str]]:
    """Two 12-frame 32x40 mp4 clips (non-square, longer than F) with their captions."""
    from dysen_jax.data.shapes import make_example

    clips = []
    os.makedirs(directory / "clips")
    for i in range(2):
        example = make_example(i, seed=3, num_frames=12, resolution=32)
        frames = np.concatenate([example.video, np.zeros((12, 32, 8, 3), np.uint8)], axis=2)
        clips.append((example.caption, write_video(str(directory / "clips" / f"clip{i}.mp4"), frames)))
    (directory / "clips" / "broken.mp4").write_text("not a video")
    return clips


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_caption_file_input_and_bad_rows_go_to_failures(tmp_path, fmt):
    import csv

    (caption0, clip0), (caption1, clip1) = _write_clips(tmp_path)
    rows = [(caption0, "clips/clip0.mp4"),     # relative to the caption file
            (caption1, clip1),                 # absolute
            ("", "clips/clip0.mp4"),           # no caption
            ("the red circle jumps", "clips/missing.mp4"),
            ("the red circle jumps", "clips/broken.mp4")]
    path = tmp_path / f"captions.{fmt}"
    if fmt == "jsonl":
        lines = [json.dumps({"caption": c, "video": v}) for c, v in rows] + ["{not json"]
        path.write_text("\n".join(lines) + "\n")
    else:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["caption", "video"])
            writer.writerows(rows)
    config = tiny_test_config(**{"data.dataset": "captions", "data.captions_file": str(path), "data.num_shards": 2})
    out = str(tmp_path / "data")
    manifest = preprocess_lib.preprocess(config, out, show_progress=False)
    n = len(rows) + (fmt == "jsonl")
    assert manifest["counts"]["items"] == n and manifest["counts"]["written"] == 2
    failures = {f["index"]: f for f in map(json.loads, open(os.path.join(out, FAILURES)))}
    assert "no caption" in failures[2]["error"] and failures[2]["stage"] == "read"
    assert "does not exist" in failures[3]["error"] and failures[3]["stage"] == "read"
    assert "cannot read video" in failures[4]["error"] and failures[4]["stage"] == "video"
    if fmt == "jsonl":
        assert "not valid JSON" in failures[5]["error"]
    assert manifest["report"]["failed_by_stage"] == {"read": n - 3, "plan": 0, "video": 1, "tensorize": 0}
    assert manifest["source"]["dataset"] == "captions"
    # The records hold the clips sampled to F frames and resized to the config's resolution.
    spec, vocab = manifest_spec_and_vocab(manifest)
    batch = next(make_dataset(out, spec, 2, seed=0, shuffle_buffer=1, repeat=False).as_numpy_iterator())
    video = np.round((batch["video"] + 1) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(video[0], sources.fit_video(read_video(clip0), spec.num_frames, spec.resolution))
    np.testing.assert_array_equal(batch["text_tokens"][1], vocab.encode(caption1, spec.text_len, bos=True))
    from dysen_jax.dsg.vocab import split_words

    assert set(split_words(caption0)) <= set(vocab.words)  # the caption file's words are in the vocabulary


def test_fit_video_samples_evenly_and_crops_the_centre():
    np.testing.assert_array_equal(video_decode.sample_frame_indices(16, 8), [1, 3, 5, 7, 9, 11, 13, 15])
    np.testing.assert_array_equal(video_decode.sample_frame_indices(3, 6), [0, 0, 1, 1, 2, 2])
    frames = np.zeros((4, 20, 40, 3), np.uint8)
    frames[:, :, 10:30] = 200  # the centre square is bright, the side bands dark
    out = sources.fit_video(frames, 2, 10)
    assert out.shape == (2, 10, 10, 3) and out.min() == 200


def test_clear_errors_for_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="config.data.dataset='nope'.*dynamic_shapes, captions"):
        sources.source_from_config(tiny_test_config(**{"data.dataset": "nope"}))
    with pytest.raises(ValueError, match="needs config.data.captions_file"):
        sources.source_from_config(tiny_test_config(**{"data.dataset": "captions"}))
    with pytest.raises(FileNotFoundError, match="captions_file=.*does not exist"):
        sources.read_caption_file(str(tmp_path / "none.jsonl"))
    with pytest.raises(ValueError, match="extension"):
        sources.read_caption_file(str(tmp_path / "captions.txt"))
    (tmp_path / "bad.csv").write_text("text,path\nhello,a.mp4\n")
    with pytest.raises(ValueError, match=r"lacks \['caption', 'video'\]"):
        sources.read_caption_file(str(tmp_path / "bad.csv"))


# --- the LLM cache ------------------------------------------------------------------------------------
def test_second_run_with_the_llm_cache_makes_no_calls(tmp_path, server):
    config = _configure(tiny_test_config(), _llm_overrides(server, **{"planner.llm.cache_dir": str(tmp_path / "cache"),
                                                                      "data.plan_batch_size": 8}))
    # Each answer takes 0.5 s, so a batch's requests overlap even on a loaded CI machine.
    server.set_mode("slow", delay_s=0.5, answer=_rules_answer)
    first = preprocess_lib.preprocess(config, str(tmp_path / "first"), show_progress=False)
    assert server.calls == 16 and server.max_in_flight > 1  # a batch's requests run concurrently
    report = first["report"]
    assert report["planned"]["llm"] == 16 and report["llm"]["calls"] == 16 and report["llm"]["cache_hits"] == 0
    assert report["llm"]["prompt_tokens"] > 0 and report["llm"]["completion_tokens"] > 0
    second = preprocess_lib.preprocess(config, str(tmp_path / "second"), show_progress=False)
    assert server.calls == 16  # not one more HTTP request
    assert second["report"]["llm"]["calls"] == 0 and second["report"]["llm"]["cache_hits"] == 16
    assert second["report"]["this_run"]["llm"]["cache_hits"] == 16
    assert records(str(tmp_path / "second")) == records(str(tmp_path / "first"))
