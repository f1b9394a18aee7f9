"""Tolerant parsing of LLM planner answers (line format and JSON), with clear errors, never eval."""

from __future__ import annotations

import pytest

from dysen_jax.dsg.schema import Event
from dysen_jax.planner.parse import PlanParseError, parse_events, parse_scene


def test_paper_line_format_with_noise_around_it():
    answer = """Here is the action plan:
```
1. (woman, putting, bottle of water, (0v, 1v))
- (woman, drinking from, "bottle", (1 v, 3v))
* (dog, barking, none, (0, 2))
```
Let me know if you need more."""
    assert parse_events(answer) == [
        Event("woman", "putting", "bottle of water", 0, 1),
        Event("woman", "drinking from", "bottle", 1, 3),
        Event("dog", "barking", None, 0, 2),
    ]


def test_json_answers():
    assert parse_events('{"events": [{"agent": "man", "predicate": "running", "target": null, "start": 0, '
                        '"end": 2}]}') == [Event("man", "running", None, 0, 2)]
    assert parse_events('[["cat", "jumping", null, 1, 2]]') == [Event("cat", "jumping", None, 1, 2)]


@pytest.mark.parametrize("answer, message", [
    ("(woman, putting, bottle, (2v, 1v))", "line 1: event (woman, putting) has an empty interval"),
    ("ok\n(woman, putting, bottle)", "line 2"),
    ("(woman, putting, bottle, (0.5v, 1v))", "not a whole number"),
    ("I cannot help with that.", "no (agent, predicate, target, (start, end)) line"),
    ('{"events": []}', "non-empty 'events'"),
    ("(, putting, bottle, (0v, 1v))", "empty"),
])
def test_bad_answers_name_the_problem(answer, message):
    with pytest.raises(PlanParseError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_events(answer)


def test_nothing_is_evaluated():
    answer = "(__import__('os').system('false'), running, None, (0v, 1v))"
    with pytest.raises(PlanParseError):
        parse_events(answer)
    [event] = parse_events("(os.system, running, eval, (0v, 1v))")
    assert event.agent == "os.system" and event.target == "eval"  # names are plain strings


def test_scene_lines_and_json():
    triplets, attributes = parse_scene("(woman, holding, bottle), (bottle, on, table)\n"
                                       "- (dog, sleeping, none) (dog, brown)")
    assert triplets == [("woman", "holding", "bottle"), ("bottle", "on", "table"), ("dog", "sleeping", None)]
    assert attributes == [("dog", "brown")]
    assert parse_scene('{"triplets": [["man", "near", "chair"], ["man", "sitting", null]], '
                       '"attributes": [["man", "old"]]}') == (
        [("man", "near", "chair"), ("man", "sitting", None)], [("man", "old")])
    assert parse_scene('[["man", "near", "chair"], ["man", "old"]]') == ([("man", "near", "chair")], [("man", "old")])
    with pytest.raises(PlanParseError, match="item 1"):
        parse_scene('[["man"]]')
    with pytest.raises(PlanParseError, match="line 1"):
        parse_scene("(man near chair")
    with pytest.raises(PlanParseError, match="no .*triplet"):
        parse_scene("(man, old)")
