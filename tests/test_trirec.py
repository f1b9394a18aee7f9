"""TriRec (eq. 7) and action-order accuracy: 1 on ground-truth clips, lower on reversed or wrong ones."""

import numpy as np
import pytest

from dysen_jax.data.shapes import make_example
from dysen_jax.dsg.schema import Event
from dysen_jax.metrics.trirec import (ShapesParser, VideoParser, found_by_predicate, mean_scores, parser_by_name,
                                      recall_by_predicate, score_video, timed_recall, triplet_recall)
from dysen_jax.planner.metrics import normalize_event


@pytest.fixture(scope="module")
def examples():
    return [make_example(i, seed=5, max_actions=3) for i in range(16)]


def test_ground_truth_videos_score_one(examples):
    parser = ShapesParser()
    assert isinstance(parser, VideoParser)
    scores = mean_scores([score_video(parser(ex.video, ex.plan), ex.events) for ex in examples])
    assert scores == {"trirec": 1.0, "timed_recall": 1.0, "order_accuracy": 1.0, "triplet_precision": 1.0,
                      "exact": 1.0}


def test_reversed_and_wrong_videos_score_lower(examples):
    parser = parser_by_name("shapes")
    reversed_ = mean_scores([score_video(parser(ex.video[::-1].copy(), ex.plan), ex.events) for ex in examples])
    wrong = mean_scores([score_video(parser(examples[(i + 1) % len(examples)].video, ex.plan), ex.events)
                         for i, ex in enumerate(examples)])
    multi = [ex for ex in examples if len({e.start for e in ex.events}) > 1]
    order_reversed = np.mean([score_video(parser(ex.video[::-1].copy(), ex.plan), ex.events)["order_accuracy"]
                              for ex in multi])
    assert reversed_["timed_recall"] < 0.5 and order_reversed < 0.8
    assert wrong["trirec"] < 0.3 and wrong["order_accuracy"] < 0.5


def test_metric_definitions():
    gold = [Event("red circle", "moving left", None, 0, 2), Event("blue square", "jumping", None, 2, 4)]
    swapped = [Event("the red circle", "moves left", None, 2, 4), Event("blue square", "jumps", None, 0, 2)]
    assert triplet_recall(swapped, gold) == 1.0          # eq. 7 ignores time, names are normalised
    assert timed_recall(swapped, gold) == 0.0
    scores = score_video(swapped, gold)
    assert scores["order_accuracy"] == 0.0 and scores["exact"] == 0.0
    assert score_video([], gold)["trirec"] == 0.0
    unrelated = [Event("red circle", "jumping", None, 0, 2)]   # right agent, wrong action: no order credit
    assert score_video(unrelated, gold[:1])["order_accuracy"] == 0.0
    assert score_video(gold[:1], gold[:1])["order_accuracy"] == 1.0
    assert score_video(gold[:1], gold)["order_accuracy"] == 0.0   # the pair needs both actions
    assert triplet_recall(gold[:1], gold) == 0.5
    with pytest.raises(ValueError, match="gold"):
        score_video(gold, [])
    with pytest.raises(ValueError, match="unknown scene-graph parser"):
        parser_by_name("nope")


def test_recall_by_action_pools_eq7_over_clips(examples):
    gold = [Event("red circle", "moving left", None, 0, 2), Event("blue square", "jumping", None, 2, 4),
            Event("red circle", "moves left", None, 4, 6)]            # the same triplet twice: counted once
    shown = [Event("the red circle", "moves left", None, 6, 8)]      # eq. 7: time does not matter
    assert found_by_predicate(shown, gold) == {"moving left": (1, 1), "jumping": (0, 1)}
    other = found_by_predicate([], [Event("green heart", "jumping", None, 0, 2)])
    by = recall_by_predicate([found_by_predicate(shown, gold), other])
    assert by == {"jumping": {"recall": 0.0, "gold": 2}, "moving left": {"recall": 1.0, "gold": 1}}
    assert list(by) == ["jumping", "moving left"]                       # most frequent first
    parser = ShapesParser()
    truth = recall_by_predicate([found_by_predicate(parser(ex.video, ex.plan), ex.events) for ex in examples])
    assert all(v["recall"] == 1.0 for v in truth.values())
    assert sum(v["gold"] for v in truth.values()) == sum(len({normalize_event(e) for e in ex.events})
                                                          for ex in examples)   # eq. 7's triplet sets
    still = recall_by_predicate([found_by_predicate(parser(np.repeat(ex.video[:1], len(ex.video), 0), ex.plan),
                                                    ex.events) for ex in examples])
    assert still["jumping"]["recall"] == 0.0          # a frozen first frame shows no motion
