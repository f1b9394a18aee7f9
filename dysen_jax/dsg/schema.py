"""Events, scene graphs and dynamic scene graphs (DSG): typed, validated, JSON round-trippable.

The JSON schema (stable; `python -m dysen_jax.plan` prints it and other tools read it):

    {"events": [{"agent": str, "predicate": str, "target": str | null, "start": int, "end": int}, ...],
     "dsg": [{"t": int, "triplets": [[s, p, o | null], ...], "attributes": [[obj, attr], ...]}, ...]}

Times are integers in units of the paper's atomic interval v; an event covers [start, end).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Sequence

Triplet = tuple[str, str, str | None]
Attribute = tuple[str, str]


class DSGError(ValueError):
    """A plan, scene graph or DSG that breaks the schema; the message names the field and the fix."""


def _clean_name(value: Any, field: str, allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise DSGError(f"{field} must be a string, got {type(value).__name__} {value!r}")
    name = " ".join(value.split())
    if not name:
        raise DSGError(f"{field} is empty: give every agent, predicate and object a non-empty name")
    return name


def _clean_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise DSGError(f"{field} must be an integer time step, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Event:
    """One planned action `(agent, predicate, target, (start, end))`, active for start <= t < end."""

    agent: str
    predicate: str
    target: str | None
    start: int
    end: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "agent", _clean_name(self.agent, "event.agent"))
        object.__setattr__(self, "predicate", _clean_name(self.predicate, "event.predicate"))
        object.__setattr__(self, "target", _clean_name(self.target, "event.target", allow_none=True))
        start = _clean_int(self.start, "event.start")
        end = _clean_int(self.end, "event.end")
        if start < 0:
            raise DSGError(f"event.start={start} is negative: times start at 0 (in units of v)")
        if end <= start:
            raise DSGError(
                f"event ({self.agent}, {self.predicate}) has an empty interval [start={start}, end={end}): "
                "end must be greater than start")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    @property
    def triplet(self) -> Triplet:
        return (self.agent, self.predicate, self.target)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: Any) -> "Event":
        if isinstance(obj, (list, tuple)):
            if len(obj) != 5:
                raise DSGError(f"an event list needs 5 items [agent, predicate, target, start, end], got {obj!r}")
            return cls(*obj)
        if not isinstance(obj, dict):
            raise DSGError(f"an event must be an object or a 5-item list, got {obj!r}")
        missing = {"agent", "predicate", "start", "end"} - set(obj)
        if missing:
            raise DSGError(f"event {obj!r} is missing field(s) {sorted(missing)}")
        return cls(obj["agent"], obj["predicate"], obj.get("target"), obj["start"], obj["end"])


def _clean_triplet(raw: Any, where: str) -> Triplet:
    if not isinstance(raw, (list, tuple)) or len(raw) not in (2, 3):
        raise DSGError(f"{where}: a triplet is [subject, predicate, object|null], got {raw!r}")
    s = _clean_name(raw[0], f"{where}.subject")
    p = _clean_name(raw[1], f"{where}.predicate")
    o = _clean_name(raw[2], f"{where}.object", allow_none=True) if len(raw) == 3 else None
    return (s, p, o)


def _clean_attribute(raw: Any, where: str) -> Attribute:
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        raise DSGError(f"{where}: an attribute is [object, attribute], got {raw!r}")
    return (_clean_name(raw[0], f"{where}.object"), _clean_name(raw[1], f"{where}.attribute"))


def _unique(items: Iterable) -> tuple:
    return tuple(dict.fromkeys(items))


@dataclasses.dataclass(frozen=True)
class SceneGraph:
    """The scene at time step t: relation triplets plus object attributes (duplicates dropped)."""

    t: int
    triplets: tuple[Triplet, ...] = ()
    attributes: tuple[Attribute, ...] = ()

    def __post_init__(self) -> None:
        t = _clean_int(self.t, "dsg[].t")
        if t < 0:
            raise DSGError(f"scene graph t={t} is negative: time steps start at 0")
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "triplets", _unique(
            _clean_triplet(x, f"dsg[t={t}].triplets[{i}]") for i, x in enumerate(self.triplets)))
        object.__setattr__(self, "attributes", _unique(
            _clean_attribute(x, f"dsg[t={t}].attributes[{i}]") for i, x in enumerate(self.attributes)))

    @property
    def objects(self) -> tuple[str, ...]:
        """Object names in order of first mention (subjects, objects, then attribute holders)."""
        names: list[str] = []
        for s, _, o in self.triplets:
            names.append(s)
            if o is not None:
                names.append(o)
        names.extend(obj for obj, _ in self.attributes)
        return _unique(names)

    def same_scene(self, other: "SceneGraph") -> bool:
        return set(self.triplets) == set(other.triplets) and set(self.attributes) == set(other.attributes)

    def to_json(self) -> dict[str, Any]:
        return {"t": self.t, "triplets": [list(x) for x in self.triplets],
                "attributes": [list(x) for x in self.attributes]}

    @classmethod
    def from_json(cls, obj: Any) -> "SceneGraph":
        if not isinstance(obj, dict) or "t" not in obj:
            raise DSGError(f"a scene graph is {{'t': int, 'triplets': [...], 'attributes': [...]}}, got {obj!r}")
        return cls(obj["t"], tuple(obj.get("triplets") or ()), tuple(obj.get("attributes") or ()))


@dataclasses.dataclass(frozen=True)
class DSG:
    """A dynamic scene graph: scene graphs in strictly increasing time order.

    `duration` is the number of time steps the plan covers; the scene graph in force at time tau is
    the last one with t <= tau, so consecutive identical scene graphs may be merged without loss.
    """

    graphs: tuple[SceneGraph, ...]
    duration: int

    def __post_init__(self) -> None:
        graphs = tuple(self.graphs)
        if not graphs:
            raise DSGError("the DSG has no scene graphs: a plan needs at least one event")
        if graphs[0].t != 0:
            raise DSGError(f"the first scene graph has t={graphs[0].t}: the DSG must start at t=0")
        for prev, cur in zip(graphs, graphs[1:]):
            if cur.t <= prev.t:
                raise DSGError(f"scene graph times must increase strictly, got t={prev.t} then t={cur.t}")
        duration = _clean_int(self.duration, "dsg.duration")
        if duration <= graphs[-1].t:
            raise DSGError(f"dsg.duration={duration} must exceed the last scene graph's t={graphs[-1].t}")
        object.__setattr__(self, "graphs", graphs)
        object.__setattr__(self, "duration", duration)

    def __len__(self) -> int:
        return len(self.graphs)

    def __iter__(self):
        return iter(self.graphs)

    @property
    def objects(self) -> tuple[str, ...]:
        return _unique(o for g in self.graphs for o in g.objects)

    def at(self, tau: int) -> SceneGraph:
        """The scene graph in force at time step tau (clamped to [0, duration))."""
        return self.graphs[self.step_index(tau)]

    def step_index(self, tau: int) -> int:
        tau = min(max(int(tau), 0), self.duration - 1)
        index = 0
        for i, g in enumerate(self.graphs):
            if g.t <= tau:
                index = i
        return index

    def merged(self) -> "DSG":
        """Drops each scene graph identical to its predecessor (time lookups are unchanged)."""
        kept = [self.graphs[0]]
        for g in self.graphs[1:]:
            if not g.same_scene(kept[-1]):
                kept.append(g)
        return DSG(tuple(kept), self.duration)

    def to_json(self) -> list[dict[str, Any]]:
        return [g.to_json() for g in self.graphs]

    @classmethod
    def from_json(cls, obj: Sequence[Any], duration: int | None = None) -> "DSG":
        if not isinstance(obj, (list, tuple)):
            raise DSGError(f"'dsg' must be a list of scene graphs, got {type(obj).__name__}")
        graphs = tuple(SceneGraph.from_json(g) for g in obj)
        if duration is None and graphs:
            duration = graphs[-1].t + 1
        return cls(graphs, duration if duration is not None else 0)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the planner returns: the events and their (possibly enriched) DSG."""

    events: tuple[Event, ...]
    dsg: DSG

    def to_json(self) -> dict[str, Any]:
        return {"events": [e.to_json() for e in self.events], "dsg": self.dsg.to_json()}

    def dumps(self, **kwargs: Any) -> str:
        return json.dumps(self.to_json(), **kwargs)

    @classmethod
    def from_json(cls, obj: Any) -> "Plan":
        if not isinstance(obj, dict) or "events" not in obj or "dsg" not in obj:
            raise DSGError("a plan is a JSON object with 'events' and 'dsg' keys")
        events = tuple(Event.from_json(e) for e in obj["events"])
        duration = max((e.end for e in events), default=None)
        if duration is not None and obj["dsg"] and duration <= obj["dsg"][-1].get("t", 0):
            duration = None
        return cls(events, DSG.from_json(obj["dsg"], duration))

    @classmethod
    def loads(cls, text: str) -> "Plan":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise DSGError(f"plan is not valid JSON: {err}") from err
        return cls.from_json(obj)
