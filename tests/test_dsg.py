"""Step II (events -> DSG), validation, JSON and tensorize round trips on hand-checked examples."""

import numpy as np
import pytest

from dysen_jax.dsg.build import events_to_dsg, plan_from_events
from dysen_jax.dsg.schema import DSG, DSGError, Event, Plan, SceneGraph
from dysen_jax.dsg.tensorize import DSGShape, NODE_OBJECT, detensorize, node_slots, tensorize
from dysen_jax.dsg.vocab import WordVocab

SHAPE = DSGShape(max_steps=8, max_nodes=16, max_label_words=4, num_frames=8)


def _triplets(dsg: DSG) -> list[set]:
    return [set(g.triplets) for g in dsg.graphs]


def test_sequential_events_one_graph_per_step():
    dsg = events_to_dsg([Event("woman", "putting", "bottle of water", 0, 1), Event("woman", "drinking", None, 1, 3)])
    assert dsg.duration == 3 and [g.t for g in dsg.graphs] == [0, 1, 2]
    assert _triplets(dsg) == [{("woman", "putting", "bottle of water")}, {("woman", "drinking", None)},
                              {("woman", "drinking", None)}]
    assert [g.t for g in dsg.merged().graphs] == [0, 1]


def test_overlapping_and_concurrent_events():
    a, b, c = Event("dog", "running", None, 0, 3), Event("man", "throwing", "ball", 2, 4), Event("cat", "sitting", None, 2, 4)
    dsg = events_to_dsg([a, b, c])
    assert _triplets(dsg) == [{a.triplet}, {a.triplet}, {a.triplet, b.triplet, c.triplet}, {b.triplet, c.triplet}]
    assert dsg.graphs[2].triplets == (a.triplet, b.triplet, c.triplet)  # ordered by (start, plan position)


def test_gap_gives_empty_scene_graph():
    dsg = events_to_dsg([Event("a", "jumping", None, 0, 1), Event("b", "spinning", None, 2, 3)])
    assert _triplets(dsg) == [{("a", "jumping", None)}, set(), {("b", "spinning", None)}]
    assert dsg.at(1).triplets == () and dsg.at(99).t == 2


@pytest.mark.parametrize("start,end", [(-1, 2), (2, 2), (3, 1)])
def test_bad_intervals_raise(start, end):
    with pytest.raises(DSGError):
        Event("a", "jumping", None, start, end)


@pytest.mark.parametrize("agent,predicate", [("", "jumping"), ("  ", "jumping"), ("a", "")])
def test_empty_names_raise(agent, predicate):
    with pytest.raises(DSGError):
        Event(agent, predicate, None, 0, 1)


def test_no_events_raise():
    with pytest.raises(DSGError):
        events_to_dsg([])


def test_json_round_trip():
    plan = plan_from_events([Event("red circle", "moving left", None, 0, 2),
                             Event("blue square", "moving toward", "red circle", 2, 4)])
    again = Plan.loads(plan.dumps())
    assert again.events == plan.events and again.dsg == plan.dsg
    assert plan.to_json()["events"][1] == {"agent": "blue square", "predicate": "moving toward",
                                           "target": "red circle", "start": 2, "end": 4}


def _vocab() -> WordVocab:
    return WordVocab.from_texts(["red circle moving left", "blue square jumping toward", "small"])


def test_tensorize_round_trip_and_stable_slots():
    events = [Event("red circle", "moving left", None, 0, 2), Event("blue square", "jumping", None, 1, 3),
              Event("red circle", "moving toward", "blue square", 3, 4)]
    dsg = DSG(tuple(SceneGraph(g.t, g.triplets, (("red circle", "small"),) if g.t == 0 else ())
                    for g in events_to_dsg(events).graphs), 4)
    arrays = tensorize(dsg, _vocab(), SHAPE)
    slots = node_slots(dsg.merged())
    assert detensorize(arrays, slots, dsg.duration) == dsg.merged()
    red = slots.index((NODE_OBJECT, ("red circle",)))
    m = int(arrays["step_mask"].sum())
    present = ["red circle" in g.objects for g in dsg.merged().graphs]
    assert m == len(present) == 4 and present == [True, True, False, True]
    assert list(arrays["node_mask"][:m, red]) == present  # one slot, on exactly where it appears
    assert list(arrays["frame_step"]) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_unseen_words_get_stable_hash_ids():
    vocab = _vocab()
    dsg = events_to_dsg([Event("zebra", "galloping", "xylophone", 0, 1)])
    a, b = tensorize(dsg, vocab, SHAPE), tensorize(dsg, _vocab(), SHAPE)
    np.testing.assert_array_equal(a["node_words"], b["node_words"])
    known = 2 + len(vocab.words)
    assert (a["node_words"][a["node_words"] > 0] >= known).all()
    assert vocab.word_id("zebra") == WordVocab(list(vocab.words)).word_id("ZEBRA") < vocab.size


def test_too_many_nodes_raise():
    events = [Event(f"object {i}", "jumping", None, 0, 1) for i in range(9)]
    with pytest.raises(DSGError, match="max_nodes"):
        tensorize(events_to_dsg(events), _vocab(), SHAPE)


def test_too_many_steps_raise():
    events = [Event(f"o{i}", "jumping", None, i, i + 1) for i in range(9)]
    with pytest.raises(DSGError, match="max_steps"):
        tensorize(events_to_dsg(events), _vocab(), DSGShape(8, 64, 4, 8))


def test_render_dsg_writes_png(tmp_path):
    from dysen_jax.dsg.render import render_dsg
    dsg = events_to_dsg([Event("red circle", "moving toward", "blue square", 0, 2),
                         Event("blue square", "jumping", None, 2, 3)]).merged()
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    path = tmp_path / "dsg.png"
    render_dsg(dsg, str(path), frames=frames)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
