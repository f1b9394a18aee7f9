"""Tolerant parsers of LLM planner answers, by regular expressions and json only (never eval).

Step I answers use the paper's line format `(agent, event-predicate, target, (start, end))`, e.g.
`(woman, putting, bottle of water, (0v, 1v))`; step III answers list `(subject, predicate, object)`
triplets and `(object, attribute)` pairs. Both parsers also accept the JSON a server with
structured output returns. Bullets, numbering, code fences, quotes, a `v` unit after times and
`none`/`null`/`-` targets are tolerated;
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
_SCENE_ITEM = re.compile(r"\(\s*([^(),]+?)\s*,\s*([^(),]+?)\s*(,\s*[^(),]*?\s*)?\)")
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


def _scene_item(item: Any, where: str) -> tuple[str, str, str | None] | tuple[str, str]:
    if not isinstance(item, (list, tuple)) or len(item) not in (2, 3) or not all(
            isinstance(x, str) or x is None for x in item):
        raise PlanParseError(f"{where}: {item!r} is not [subject, predicate, object|null] or [object, attribute]")
    first, second = _clean(item[0] or ""), _clean(item[1] or "")
    if not first or not second:
        raise PlanParseError(f"{where}: {item!r} has an empty name")
    return (first, second, _target(item[2] or "")) if len(item) == 3 else (first, second)


def parse_scene(text: str) -> tuple[list[Triplet], list[tuple[str, str]]]:
    """Triplets and attributes of a step-III answer.

    Line format: `(subject, predicate, object)` triplets (object `none` for intransitive actions) and
    `(object, attribute)` pairs, any number per line. JSON: {"triplets": [[s, p, o|null], ...],
    "attributes": [[object, attribute], ...]} or a bare list of such items.
    """
    triplets: list[Triplet] = []
    attributes: list[tuple[str, str]] = []

    def add(item: tuple) -> None:
        (triplets if len(item) == 3 else attributes).append(item)

    payload = _json_payload(text)
    if payload is not None:
        if isinstance(payload, dict):
            if not isinstance(payload.get("triplets", []), list) or not isinstance(payload.get("attributes", []), list):
                raise PlanParseError("'triplets' and 'attributes' must be lists")
            for i, item in enumerate(payload.get("triplets", [])):
                item = _scene_item(item, f"triplet {i + 1}")
                if len(item) == 2:
                    item = (item[0], item[1], None)
                triplets.append(item)
            for i, item in enumerate(payload.get("attributes", [])):
                item = _scene_item(item, f"attribute {i + 1}")
                if len(item) != 2:
                    raise PlanParseError(f"attribute {i + 1}: {list(item)!r} is not [object, attribute]")
                attributes.append(item)
        elif isinstance(payload, list):
            for i, item in enumerate(payload):
                add(_scene_item(item, f"item {i + 1}"))
        else:
            raise PlanParseError("the JSON answer is neither a list nor an object with 'triplets'")
    else:
        for line_no, line in _content_lines(text):
            matches = _SCENE_ITEM.findall(line)
            if not matches:
                if "(" in line:
                    raise PlanParseError(f"line {line_no}: {line.strip()[:120]!r} is not "
                                         "(subject, predicate, object) or (object, attribute)")
                continue
            for first, second, third in matches:
                first, second = _clean(first), _clean(second)
                if not first or not second:
                    raise PlanParseError(f"line {line_no}: an item has an empty name")
                add((first, second, _target(third[1:])) if third else (first, second))
    if not triplets:
        raise PlanParseError("the answer has no (subject, predicate, object) triplet")
    return triplets, attributes


_STEP_PREFIX = re.compile(r"^\s*(?:[-*]\s*)?t\s*=\s*(\d+)\s*:?(.*)$", re.IGNORECASE)


def parse_dsg_lines(text: str) -> dict[int, tuple[list[Triplet], list[tuple[str, str]]]]:
    """Scenes of a polishing answer by time step: `t=<step>: (s, p, o) (obj, attr) ...` lines or JSON
    {"dsg": [{"t": step, "triplets": [...], "attributes": [...]}, ...]}."""
    payload = _json_payload(text)
    scenes: dict[int, tuple[list[Triplet], list[tuple[str, str]]]] = {}
    if payload is not None:
        items = payload.get("dsg") if isinstance(payload, dict) else payload
        if not isinstance(items, list) or not items:
            raise PlanParseError("the JSON answer has no non-empty 'dsg' list")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("t"), int):
                raise PlanParseError(f"dsg item {i + 1} is not {{'t': int, 'triplets': [...], 'attributes': [...]}}")
            try:
                scenes[item["t"]] = parse_scene(json.dumps({"triplets": item.get("triplets", []),
                                                            "attributes": item.get("attributes", [])}))
            except PlanParseError as err:
                raise PlanParseError(f"t={item['t']}: {err}") from None
        return scenes
    for line_no, line in _content_lines(text):
        match = _STEP_PREFIX.match(line)
        if match is None:
            if "(" in line:
                raise PlanParseError(f"line {line_no}: {line.strip()[:120]!r} does not start with t=<step>:")
            continue
        t = int(match.group(1))
        if t in scenes:
            raise PlanParseError(f"line {line_no}: time step t={t} appears twice")
        try:
            scenes[t] = parse_scene(match.group(2))
        except PlanParseError as err:
            raise PlanParseError(f"line {line_no} (t={t}): {err}") from None
    if not scenes:
        raise PlanParseError("no `t=<step>: ...` line in the answer")
    return scenes
