"""The dynamic-shapes visual scene-graph parser reads the ground-truth events of rendered clips."""

import numpy as np
import pytest

from dysen_jax.data.shapes import make_example
from dysen_jax.metrics import shapes_parser as sp


def _timed(events):
    return sorted((e.agent, e.predicate, e.target, e.start, e.end) for e in events)


@pytest.mark.parametrize("num_frames,resolution,max_actions,count", [(8, 32, 3, 40), (8, 32, 4, 25), (16, 48, 4, 10)])
def test_parser_recovers_ground_truth_events_exactly(num_frames, resolution, max_actions, count):
    for index in range(count):
        ex = make_example(index, seed=11, num_frames=num_frames, resolution=resolution, max_actions=max_actions)
        parsed = sp.parse_video(ex.video, ex.dsg.duration, names=sp.names_from_events(ex.events))
        assert _timed(parsed.events) == _timed(ex.events), (index, ex.caption)


def test_objects_found_by_colour_and_named_by_shape_without_names():
    ex = make_example(3, seed=11)
    parsed = sp.parse_video(ex.video, ex.dsg.duration)
    assert set(parsed.names) == {o.colour for o in ex.objects}
    shape_hits = [parsed.names[o.colour] == o.name for o in ex.objects]
    assert sum(shape_hits) >= len(shape_hits) - 1


def test_static_and_blank_videos_have_no_events():
    ex = make_example(0, seed=11)
    still = np.repeat(ex.video[-1:], len(ex.video), axis=0)
    assert sp.parse_video(still, ex.dsg.duration).events == ()
    blank = np.zeros_like(ex.video)
    assert sp.parse_video(blank, 4).events == ()


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="uint8"):
        sp.parse_video(np.zeros((4, 8, 8, 3), np.float32), 2)
    with pytest.raises(ValueError, match="duration"):
        sp.parse_video(np.zeros((4, 8, 8, 3), np.uint8), 0)
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\]"):
        sp.parse_video(np.zeros((8, 8, 3), np.uint8), 2)


def test_names_from_events():
    ex = make_example(5, seed=11)
    names = sp.names_from_events(ex.events)
    assert all(names[n.split()[0]] == n for e in ex.events for n in (e.agent, e.target) if n)


def test_parser_tolerates_noise_and_a_drifted_palette():
    rng = np.random.default_rng(0)
    for index in range(8):   # clips the clean test parses exactly (seed 11), now noisy and colour-shifted
        ex = make_example(index, seed=11, max_actions=3)
        video = ex.video.astype(np.float32) * 0.85 + 20.0 + rng.normal(0.0, 5.0, ex.video.shape)
        video = np.clip(np.rint(video), 0, 255).astype(np.uint8)
        parsed = sp.parse_video(video, ex.dsg.duration, names=sp.names_from_events(ex.events))
        assert _timed(parsed.events) == _timed(ex.events), (index, ex.caption)
