"""Triplet recall (TriRec, the paper's eq. 7) and action-order accuracy of generated videos.

A visual scene-graph parser reads the events of a generated clip; they are scored against the
gold events of its caption:

* trirec = |G^PT ∩ G^GT| / |G^GT| over the *sets* of (subject, predicate, object) triplets of the
  video's DSG (eq. 7), names and predicates compared in the planner metrics' canonical forms
  (`dysen_jax.planner.metrics.normalize_event`).
* timed_recall: the fraction of gold events found with the same triplet *and* the same time slot
  [start, end): the action happened, and when the plan said.
* order_accuracy: over every pair of gold events, the fraction that the video shows both (same
  triplet, `match_events`) in the same temporal relation (before / together / after, by start
  time); a single-event caption scores 1 when its event is found. Unlike the planner metrics'
  alignment (which pairs events sharing only an agent or predicate), a pair counts only when both
  actions really happen, so a video of unrelated motion cannot score.
* triplet_precision and exact (the parsed events equal the gold ones, times included).
* recall by action (`recall_by_predicate`): eq. 7's recall pooled over a set of clips per gold
  predicate ("jumping", "moving right", ...): which actions a model draws and which it never does.

The parser is pluggable (`VideoParser`): anything that maps (video, conditioning plan) to events.
The plan gives the clip's time axis (frame f shows plan time f * duration / F) and the object names
the prompt used; a parser for real videos may ignore it. `ShapesParser` is the exact parser of the
dynamic-shapes dataset (`shapes_parser.py`).
"""

from __future__ import annotations

import collections
import itertools
from typing import Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from dysen_jax.dsg.schema import Event, Plan
from dysen_jax.planner.metrics import normalize_event, score_events

VIDEO_METRICS: tuple[str, ...] = ("trirec", "timed_recall", "order_accuracy", "triplet_precision", "exact")


@runtime_checkable
class VideoParser(Protocol):
    """Reads the events (agent, predicate, target, start, end) a video shows."""

    def __call__(self, video: np.ndarray, plan: Plan) -> Sequence[Event]:
        """video: uint8 [F, H, W, 3]; plan: the plan the video was generated from (time axis, names)."""
        ...


class ShapesParser:
    """The exact dynamic-shapes parser as a VideoParser (object names from the plan's events)."""

    def __call__(self, video: np.ndarray, plan: Plan) -> Sequence[Event]:
        from dysen_jax.metrics.shapes_parser import names_from_events, parse_video

        return parse_video(video, plan.dsg.duration, names=names_from_events(plan.events)).events


PARSERS: dict[str, type] = {"shapes": ShapesParser}


def parser_by_name(name: str) -> VideoParser:
    """A registered parser ("shapes"); a real-video parser registers itself in PARSERS."""
    if name not in PARSERS:
        raise ValueError(f"unknown scene-graph parser {name!r}: use one of {sorted(PARSERS)}")
    return PARSERS[name]()


def triplet_recall(predicted: Sequence[Event], gold: Sequence[Event]) -> float:
    """Eq. 7: |set(predicted triplets) ∩ set(gold triplets)| / |set(gold triplets)|."""
    gold_set = {normalize_event(e) for e in gold}
    if not gold_set:
        raise ValueError("gold has no events: TriRec needs at least one gold triplet")
    return len({normalize_event(e) for e in predicted} & gold_set) / len(gold_set)


def timed_recall(predicted: Sequence[Event], gold: Sequence[Event]) -> float:
    """Fraction of gold events (multiset) found with the same triplet and time slot."""
    key = lambda e: normalize_event(e) + (e.start, e.end)
    found = collections.Counter(map(key, predicted)) & collections.Counter(map(key, gold))
    return sum(found.values()) / len(gold)


def match_events(predicted: Sequence[Event], gold: Sequence[Event]) -> dict[int, int]:
    """{gold index: predicted index}: one-to-one on equal normalised triplets, closest start time first."""
    candidates = sorted((abs(p.start - g.start), j, i) for j, g in enumerate(gold) for i, p in enumerate(predicted)
                        if normalize_event(p) == normalize_event(g))
    matched: dict[int, int] = {}
    used: set[int] = set()
    for _, j, i in candidates:
        if j not in matched and i not in used:
            matched[j] = i
            used.add(i)
    return matched


def order_accuracy(predicted: Sequence[Event], gold: Sequence[Event]) -> float:
    """Fraction of gold event pairs shown, both, in the gold temporal relation (see the module docstring)."""
    matched = match_events(predicted, gold)
    if len(gold) == 1:
        return float(0 in matched)
    relation = lambda a, b: (a.start > b.start) - (a.start < b.start)
    pairs = list(itertools.combinations(range(len(gold)), 2))
    good = sum(j in matched and k in matched
               and relation(predicted[matched[j]], predicted[matched[k]]) == relation(gold[j], gold[k])
               for j, k in pairs)
    return good / len(pairs)


def score_video(predicted: Sequence[Event], gold: Sequence[Event]) -> dict[str, float]:
    """The VIDEO_METRICS of one clip."""
    if not gold:
        raise ValueError("gold has no events: every evaluation item needs at least one gold event")
    planner_scores = score_events(list(predicted), list(gold))
    return {"trirec": triplet_recall(predicted, gold), "timed_recall": timed_recall(predicted, gold),
            "order_accuracy": order_accuracy(predicted, gold),
            "triplet_precision": planner_scores["triplet_precision"], "exact": planner_scores["exact"]}


def found_by_predicate(predicted: Sequence[Event], gold: Sequence[Event]) -> dict[str, tuple[int, int]]:
    """{predicate: (gold triplets the video shows, gold triplets)} of one clip, on eq. 7's triplet sets."""
    shown = {normalize_event(e) for e in predicted}
    counts: dict[str, tuple[int, int]] = {}
    for triplet in {normalize_event(e) for e in gold}:
        found, total = counts.get(triplet[1], (0, 0))
        counts[triplet[1]] = (found + (triplet in shown), total + 1)
    return counts


def recall_by_predicate(per_clip: Sequence[Mapping[str, tuple[int, int]]]) -> dict[str, dict[str, float]]:
    """{predicate: {"recall": found / gold, "gold": gold triplets}} pooled over clips (`found_by_predicate`
    of each), most frequent predicate first."""
    pooled: dict[str, list[int]] = {}
    for counts in per_clip:
        for predicate, (found, total) in counts.items():
            pooled.setdefault(predicate, [0, 0])
            pooled[predicate][0] += found
            pooled[predicate][1] += total
    ranked = sorted(pooled.items(), key=lambda kv: (-kv[1][1], kv[0]))
    return {p: {"recall": found / total, "gold": total} for p, (found, total) in ranked}


def mean_scores(scores: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over clips."""
    if not scores:
        raise ValueError("no clip scores to average")
    return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
