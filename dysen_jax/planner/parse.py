"""Tolerant parsers of LLM planner answers, by regular expressions and json only (never eval).

Step I answers use the paper's line format `(agent, event-predicate, target, (start, end))`, e.g.
`(woman, putting, bottle of water, (0v, 1v))`; step III answers list `(subject, predicate, object)`
triplets. Both parsers also accept the JSON a server with structured output returns. Bullets,
numbering, code fences, quotes, a `v` unit after times and `none`/`null`/`-` targets are tolerated;
anything else raises PlanParseError naming the line and what is wrong, so the message can be fed
back to the LLM in a repair prompt.
"""

from __future__ import annotations

import json
import re
from typing import Any

from dysen_jax.dsg.schema import DSGError, Event, Triplet

_NO_TARGET = {"", "none", "null", "nil", "-", "n/a", "na", "nothing"}
_TIME = r"\s*(-?\d+(?:\.\d+)?)\s*v?\s*"
_EVENT_LINE = re.compile(r"\(\s*([^(),]*?)\s*,\s*([^(),]*?)\s*,\s*([^(),]*?)\s*,\s*\(" + _TIME + "," + _TIME
                         + r"\)\s*\)")
_TRIPLET_LINE = re.compile(r"\(\s*([^(),]+?)\s*,\s*([^(),]+?)\s*(?:,\s*([^(),]*?)\s*)?\)")
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*$")


class PlanParseError(DSGError):
    """An LLM answer that is not a plan; the message says which line and why."""


def _clean(name: str) -> str:
    return name.strip().strip("'\"`*").strip()


def _target(name: str) -> str | None:
    name = _clean(name)
    return None if name.lower() in _NO_TARGET else name


def _time(text: str, line_no: int) -> int:
    value = float(text)
    if not value.is_integer():
        raise PlanParseError(f"line {line_no}: time {text} is not a whole number of units v")
    return int(value)


def _content_lines(text: str) -> list[tuple[int, str]]:
    return [(i + 1, line) for i, line in enumerate(text.splitlines())
            if line.strip() and not _FENCE.match(line)]


def _json_payload(text: str) -> Any | None:
    stripped = "\n".join(line for _, line in _content_lines(text)).strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        return None


def parse_events(text: str) -> list[Event]:
    """Events of a step-I answer (line format or JSON); raises PlanParseError when there are none."""
    payload = _json_payload(text)
    if payload is not None:
        items = payload.get("events") if isinstance(payload, dict) else payload
        if not isinstance(items, list) or not items:
            raise PlanParseError("the JSON answer has no non-empty 'events' list")
        events = []
        for i, item in enumerate(items):
            try:
                events.append(Event.from_json(item))
            except DSGError as err:
                raise PlanParseError(f"event {i + 1}: {err}") from None
        return events
    events = []
    for line_no, line in _content_lines(text):
        match = _EVENT_LINE.search(line)
        if match is None:
            if "(" in line:
                raise PlanParseError(f"line {line_no}: {line.strip()[:120]!r} is not "
                                     "(agent, predicate, target, (start, end))")
            continue  # prose around the plan
        agent, predicate, target, start, end = match.groups()
        try:
            events.append(Event(_clean(agent), _clean(predicate), _target(target),
                                _time(start, line_no), _time(end, line_no)))
        except PlanParseError:
            raise
        except DSGError as err:
            raise PlanParseError(f"line {line_no}: {err}") from None
    if not events:
        raise PlanParseError("no (agent, predicate, target, (start, end)) line in the answer")
    return events


def parse_triplets(text: str) -> list[Triplet]:
    """Triplets of a step-III answer (`(s, p, o)` lines or a JSON list of lists / {'triplets': ...})."""
    payload = _json_payload(text)
    if payload is not None:
        items = payload.get("triplets") if isinstance(payload, dict) else payload
        if not isinstance(items, list):
            raise PlanParseError("the JSON answer has no 'triplets' list")
        triplets = []
        for i, item in enumerate(items):
            if not isinstance(item, (list, tuple)) or len(item) not in (2, 3) or not all(
                    isinstance(x, str) or x is None for x in item):
                raise PlanParseError(f"triplet {i + 1}: {item!r} is not [subject, predicate, object|null]")
            subject, predicate = _clean(item[0] or ""), _clean(item[1] or "")
            if not subject or not predicate:
                raise PlanParseError(f"triplet {i + 1}: {item!r} has an empty subject or predicate")
            triplets.append((subject, predicate, _target(item[2] or "") if len(item) == 3 else None))
        return triplets
    triplets = []
    for line_no, line in _content_lines(text):
        matches = _TRIPLET_LINE.findall(line)
        if not matches:
            if "(" in line:
                raise PlanParseError(f"line {line_no}: {line.strip()[:120]!r} is not (subject, predicate, object)")
            continue
        for subject, predicate, obj in matches:
            subject, predicate = _clean(subject), _clean(predicate)
            if not subject or not predicate:
                raise PlanParseError(f"line {line_no}: a triplet has an empty subject or predicate")
            triplets.append((subject, predicate, _target(obj)))
    return triplets
