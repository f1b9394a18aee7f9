"""Pseudo-videos (VidRD §4.2) on the photographs scikit-image bundles: frames are the zoomed / panned
crops of the image, the camera move stays inside it and is seeded, and images mix with videos by ratio."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dysen_jax.data import sources
from dysen_jax.data.pseudo_video import motion_boxes, pseudo_video, read_image
from tests.helpers import tiny_test_config

skimage_data = pytest.importorskip("skimage.data")
PHOTOS = {"astronaut": "an astronaut smiles in front of a flag", "chelsea": "a cat looks at the camera",
          "coffee": "a cup of coffee on a saucer"}


def direct_crop(image: np.ndarray, box: np.ndarray, resolution: int) -> np.ndarray:
    """The box rounded to whole pixels, sliced out of the array and resized: what a frame must look like."""
    left, top, right, bottom = np.round(box).astype(int)
    return np.asarray(Image.fromarray(image[top:bottom, left:right]).resize((resolution, resolution),
                                                                             Image.Resampling.BICUBIC))


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_frames_are_the_zoomed_and_panned_crops(name):
    image = getattr(skimage_data, name)()
    height, width = image.shape[:2]
    boxes = motion_boxes(height, width, 8, np.random.default_rng(3), zoom_range=(1.2, 2.5), pan=0.4)
    # Square boxes inside the image; the side moves geometrically, the centre linearly.
    sides = boxes[:, 2] - boxes[:, 0]
    np.testing.assert_allclose(sides, boxes[:, 3] - boxes[:, 1], rtol=1e-9)
    assert boxes.min() >= 0 and (boxes[:, [0, 2]] <= width).all() and (boxes[:, [1, 3]] <= height).all()
    assert min(height, width) / 2.5 - 1e-6 <= sides.min() and sides.max() <= min(height, width) / 1.2 + 1e-6
    np.testing.assert_allclose(np.diff(np.log(sides)), np.log(sides[1] / sides[0]), atol=1e-9)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    np.testing.assert_allclose(np.diff(centres, axis=0), np.diff(centres, axis=0)[:1].repeat(7, 0), atol=1e-9)

    frames = pseudo_video(image, 8, 32, np.random.default_rng(3), zoom_range=(1.2, 2.5), pan=0.4)
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    crops = [direct_crop(image, box, 32) for box in boxes]
    own = [mean_abs(frame, crop) for frame, crop in zip(frames, crops)]
    assert max(own) < 2.5, own  # sub-pixel box vs the rounded slice: about one grey level (measured <= 1.6)
    # ... and not just any crop: each frame is far from the next frame's crop (measured 7-18 levels).
    assert all(mean_abs(frames[i], crops[i + 1]) > 3 * own[i] for i in range(7))
    # Same seed, same clip; another seed, another move.
    np.testing.assert_array_equal(frames, pseudo_video(image, 8, 32, np.random.default_rng(3), (1.2, 2.5), 0.4))
    assert not np.array_equal(frames, pseudo_video(image, 8, 32, np.random.default_rng(4), (1.2, 2.5), 0.4))


def test_no_zoom_no_pan_is_a_still_square_and_pan_is_bounded():
    image = skimage_data.coffee()  # 400 x 600
    still = motion_boxes(400, 600, 6, np.random.default_rng(0), zoom_range=(1.0, 1.0), pan=0.0)
    assert np.allclose(still, still[0]) and np.isclose(still[0, 3] - still[0, 1], 400)
    frames = pseudo_video(image, 6, 16, np.random.default_rng(0), (1.0, 1.0), 0.0)
    assert all(np.array_equal(f, frames[0]) for f in frames)
    for seed in range(20):  # the centre never moves more than pan x shorter side per axis
        boxes = motion_boxes(400, 600, 4, np.random.default_rng(seed), zoom_range=(1.5, 1.5), pan=0.1)
        move = np.abs(((boxes[-1, :2] + boxes[-1, 2:]) - (boxes[0, :2] + boxes[0, 2:])) / 2)
        assert (move <= 0.1 * 400 + 1e-9).all()


def write_images(directory) -> str:
    lines = []
    for name, caption in PHOTOS.items():
        Image.fromarray(getattr(skimage_data, name)()).save(directory / f"{name}.png")
        lines.append(json.dumps({"caption": caption, "image": f"{name}.png"}))
    path = directory / "images.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_ratio_mixing_counts_and_spreads(tmp_path):
    images = write_images(tmp_path)
    config = tiny_test_config(**{"data.image_captions_file": images, "data.pseudo_video_ratio": 0.25})
    source = sources.source_from_config(config)  # 16 synthetic clips + round(16 * 0.25 / 0.75) = 5
    assert isinstance(source, sources.MixedSource) and len(source) == 21
    items = [source.item(i) for i in range(len(source))]
    pseudo = [i for i, item in enumerate(items) if item.image_path]
    assert len(pseudo) == 5 and [item.index for item in items] == list(range(21))
    assert max(np.diff(pseudo)) <= 5  # spread evenly, not bunched at one end
    # Every synthetic clip once, in order; the three images cycle (each used, none more than twice).
    real = [item.caption for item in items if item.video is not None]
    assert real == [sources.SyntheticSource(16, 0, 8, 16, 3).item(i).caption for i in range(16)]
    used = [items[i].image_path for i in pseudo]
    assert set(used) == {str(tmp_path / f"{n}.png") for n in PHOTOS} and max(map(used.count, used)) == 2
    assert {items[i].caption for i in pseudo} == set(PHOTOS.values())
    # A repeated image gets a different camera move (seeded by the item index).
    first, second = [i for i in pseudo if items[i].image_path == used[0]][:2]
    clip_a = sources.load_video(items[first], 4, 16)
    clip_b = sources.load_video(items[second], 4, 16)
    assert not np.array_equal(clip_a, clip_b)
    np.testing.assert_array_equal(clip_a, sources.load_video(source.item(first), 4, 16))
    # The vocabulary knows the image captions; the manifest says what was mixed.
    assert "astronaut" in " ".join(source.vocabulary_texts())
    assert source.describe()["pseudo_videos"] == 5 and source.describe()["dataset"] == "dynamic_shapes"
    # Ratio 1: images only, each once.
    only = sources.source_from_config(tiny_test_config(**{"data.image_captions_file": images,
                                                          "data.pseudo_video_ratio": 1.0}))
    assert len(only) == 3 and sorted(only.item(i).caption for i in range(3)) == sorted(PHOTOS.values())


def test_pseudo_video_item_is_the_image_zoomed(tmp_path):
    images = write_images(tmp_path)
    config = tiny_test_config(**{"data.image_captions_file": images, "data.pseudo_video_ratio": 1.0,
                                 "data.zoom_range": (1.5, 2.0), "data.pan": 0.3})
    source = sources.source_from_config(config)
    item = source.item(1)
    clip = sources.load_video(item, 8, 16)
    expected = pseudo_video(read_image(item.image_path), 8, 16, np.random.default_rng([0, 1, 2]), (1.5, 2.0), 0.3)
    np.testing.assert_array_equal(clip, expected)


def test_clear_errors(tmp_path):
    images = write_images(tmp_path)
    with pytest.raises(ValueError, match="pseudo_video_ratio=0.5 needs config.data.image_captions_file"):
        sources.source_from_config(tiny_test_config(**{"data.pseudo_video_ratio": 0.5}))
    with pytest.raises(ValueError, match="image_captions_file=.* is set but config.data.pseudo_video_ratio=0"):
        sources.source_from_config(tiny_test_config(**{"data.image_captions_file": images}))
    with pytest.raises(ValueError, match=r"pseudo_video_ratio=1.5 must be in \[0, 1\]"):
        sources.source_from_config(tiny_test_config(**{"data.image_captions_file": images,
                                                       "data.pseudo_video_ratio": 1.5}))
    with pytest.raises(ValueError, match="zoom_range=.*1 <= min <= max"):
        sources.source_from_config(tiny_test_config(**{"data.zoom_range": (0.5, 2.0)}))
    with pytest.raises(ValueError, match=r"config.data.pan=2.0 must be in \[0, 1\]"):
        sources.source_from_config(tiny_test_config(**{"data.pan": 2.0}))
    with pytest.raises(ValueError, match=r"image_captions_file=.*lacks \['image'\]"):
        (tmp_path / "bad.csv").write_text("caption,video\na cat,cat.png\n")
        sources.read_caption_file(str(tmp_path / "bad.csv"), "image")
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"caption": "a dog", "image": "dog.png"}) + "\n")
    item = sources.CaptionFileSource.from_file(str(missing), "image").item(0)
    assert "image file" in item.error and "does not exist" in item.error
    from dysen_jax import preprocess as preprocess_lib  # the failure record names the image
    from dysen_jax.data.records import RecordSpec

    config = tiny_test_config()
    result = preprocess_lib.encode_item(item, None, RecordSpec.from_config(config), preprocess_lib.build_vocab(config))
    assert result.failure["stage"] == "read" and result.failure["image"] == str(tmp_path / "dog.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(sources.VideoError, match="cannot read image"):
        sources.load_video(sources.Item(0, "a dog", image_path=str(tmp_path / "broken.png")), 4, 16)
