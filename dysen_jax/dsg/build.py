"""Step II of Dysen: events -> DSG, deterministically.

One scene graph per time step t = 0 ... max(end) - 1; SG_t holds the triplet of every event with
start <= t < end, ordered by (start, position in the plan). Attributes are left to step III.
"""

from __future__ import annotations

from typing import Sequence

from dysen_jax.dsg.schema import DSG, DSGError, Event, Plan, SceneGraph


def events_to_dsg(events: Sequence[Event], merge: bool = False) -> DSG:
    """Builds the skeleton DSG; `merge=True` drops scene graphs identical to their predecessor."""
    if not events:
        raise DSGError("events is empty: a plan needs at least one (agent, predicate, target, (start, end))")
    ordered = sorted(enumerate(events), key=lambda ie: (ie[1].start, ie[0]))
    duration = max(e.end for e in events)
    graphs = tuple(
        SceneGraph(t, tuple(e.triplet for _, e in ordered if e.start <= t < e.end))
        for t in range(duration))
    dsg = DSG(graphs, duration)
    return dsg.merged() if merge else dsg


def plan_from_events(events: Sequence[Event]) -> Plan:
    """A Plan whose DSG is the step-II skeleton of `events`."""
    return Plan(tuple(events), events_to_dsg(events))
