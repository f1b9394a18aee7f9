"""In-context-learning prompts of Dysen (paper appendix A.3): instruction + D demonstrations + test.

Step I (action planning) answers events in the paper's line format; step III's step-wise scene
imagination answers the full triplet list of one scene graph given the sliding window context
[previous enriched SG, current SG, next SG]; global polishing answers the whole DSG, one `t=<step>:`
line per scene graph. Demonstrations are user/assistant turns. With `json_mode` the instruction
asks for the JSON the parsers also accept, for servers with structured output.
"""

from __future__ import annotations

import functools
from typing import Sequence

from dysen_jax.dsg.build import events_to_dsg
from dysen_jax.dsg.schema import DSG, Event, SceneGraph
from dysen_jax.planner.bank import Demonstration

Messages = list[dict[str, str]]

ACTION_PLANNING_INSTRUCTION = (
    "You are a video director. List the key actions of the scene described by the text, one per line, "
    "as (agent, event-predicate, target, (start-time, end-time)). Times are integers in units of an atomic "
    "interval v, the first action starts at 0v, an action lasts from its start up to (not including) its "
    "end, actions that happen at the same time overlap, and the order follows what happens, not the order "
    "of the words. Use the gerund for the predicate and none when there is no target. Answer with the "
    "lines only.")
ACTION_PLANNING_JSON = (' Answer with a JSON object {"events": [[agent, predicate, target or null, start, end], '
                        '...]} instead of lines.')
ACTION_PLANNING_REMINDER = "Give one (agent, event-predicate, target, (start-time, end-time)) line per action."

IMAGINATION_INSTRUCTION = (
    "You are a video director imagining one moment of a video. You get the text, the previous scene "
    "(already imagined), the current scene and the next scene, each as (subject, predicate, object) "
    "triplets and (object, attribute) pairs. Enrich the current scene so that it is visually rich and "
    "leads smoothly from the previous scene to the next: add attributes of the objects, add plausible "
    "relations between objects, and change an action into the stage it is in at this moment (e.g. "
    "approaching, near, sitting) where that helps. Keep every object of the current scene and keep each "
    "acting object acting. Answer with the full current scene only: one (subject, predicate, object) "
    "triplet or (object, attribute) pair per line, object none for actions without one.")
IMAGINATION_NO_WINDOW_INSTRUCTION = (
    "You are a video director imagining one moment of a video. You get the text and the current scene as "
    "(subject, predicate, object) triplets and (object, attribute) pairs. Enrich the scene so that it is "
    "visually rich: add attributes of the objects and plausible relations between objects. Keep every object "
    "of the scene and keep each acting object acting. Answer with the full scene only: one (subject, "
    "predicate, object) triplet or (object, attribute) pair per line, object none for actions without one.")
SCENE_JSON = (' Answer with a JSON object {"triplets": [[subject, predicate, object or null], ...], '
              '"attributes": [[object, attribute], ...]} instead of lines.')
SCENE_REMINDER = "Give one (subject, predicate, object) triplet or (object, attribute) pair per line."

POLISH_INSTRUCTION = (
    "You are a video director reviewing the scenes of a whole video. You get the text and the dynamic scene "
    "graph: one line per time step, `t=<step>:` followed by that moment's (subject, predicate, object) "
    "triplets and (object, attribute) pairs. Polish it from a global viewpoint so that all the actions go "
    "reasonably and consistently: keep objects' attributes consistent over time, remove relations that "
    "contradict each other, and make changes between steps smooth. Keep every time step, every object and "
    "every acting object. Answer with the same lines, one `t=<step>:` line per time step.")
POLISH_JSON = (' Answer with a JSON object {"dsg": [{"t": step, "triplets": [...], "attributes": [...]}, ...]} '
               'instead of lines.')
POLISH_REMINDER = "Give one `t=<step>: (subject, predicate, object) (object, attribute) ...` line per time step."


def format_events(events: Sequence[Event]) -> str:
    """Events in the paper's line format, `(agent, predicate, target, (start v, end v))`."""
    return "\n".join(f"({e.agent}, {e.predicate}, {e.target or 'none'}, ({e.start}v, {e.end}v))" for e in events)


def format_scene(sg: SceneGraph | None, separator: str = "\n") -> str:
    """A scene graph as `(s, p, o)` triplets then `(object, attribute)` pairs; `none` for no scene."""
    if sg is None:
        return "none"
    items = [f"({s}, {p}, {o or 'none'})" for s, p, o in sg.triplets] + [f"({o}, {a})" for o, a in sg.attributes]
    return separator.join(items) if items else "none"


def format_dsg(dsg: DSG) -> str:
    """The DSG, one `t=<step>: (s, p, o) (object, attribute) ...` line per scene graph."""
    return "\n".join(f"t={sg.t}: {format_scene(sg, ' ')}" for sg in dsg.graphs)


def _system(instruction: str, json_suffix: str, json_mode: bool) -> dict[str, str]:
    return {"role": "system", "content": instruction + (json_suffix if json_mode else "")}


def action_planning_messages(caption: str, demonstrations: Sequence[Demonstration],
                             json_mode: bool = False) -> Messages:
    """Chat messages of the step-I ICL prompt (demonstrations as user/assistant turns)."""
    messages = [_system(ACTION_PLANNING_INSTRUCTION, ACTION_PLANNING_JSON, json_mode)]
    for demo in demonstrations:
        messages.append({"role": "user", "content": f"Text: {demo.caption}"})
        messages.append({"role": "assistant", "content": format_events(demo.events)})
    messages.append({"role": "user", "content": f"Text: {caption}"})
    return messages


def window_query(caption: str, previous: SceneGraph | None, current: SceneGraph, following: SceneGraph | None,
                 sliding_window: bool) -> str:
    """The test input of step-wise imagination: the text and the (windowed) scenes."""
    if not sliding_window:
        return f"Text: {caption}\nCurrent scene:\n{format_scene(current)}"
    return (f"Text: {caption}\nPrevious scene:\n{format_scene(previous)}\nCurrent scene:\n{format_scene(current)}\n"
            f"Next scene:\n{format_scene(following)}")


def demonstration_window(demo: Demonstration) -> tuple[SceneGraph | None, SceneGraph, SceneGraph | None,
                                                       SceneGraph]:
    """A demonstration's imagination example: (gold previous, skeleton current, skeleton next, gold current).

    The step shown is the first whose enriched scene differs most from its skeleton (deterministic),
    so the demonstration teaches additions, not copying.
    """
    if demo.dsg is None:
        raise ValueError(f"demonstration {demo.caption!r} has no gold DSG: step III needs one")
    skeleton = events_to_dsg(demo.events)
    steps = [sg.t for sg in skeleton.graphs]
    gold_at = lambda t: demo.dsg.at(t)  # noqa: E731 - the gold scene in force at t
    added = lambda t: len(set(gold_at(t).triplets) - set(skeleton.at(t).triplets)) + len(gold_at(t).attributes)
    m = max(range(len(steps)), key=lambda i: (added(steps[i]), -i))
    t = steps[m]
    previous = gold_at(steps[m - 1]) if m > 0 else None
    following = skeleton.graphs[m + 1] if m + 1 < len(steps) else None
    return previous, skeleton.graphs[m], following, SceneGraph(t, gold_at(t).triplets, gold_at(t).attributes)


def imagination_messages(caption: str, previous: SceneGraph | None, current: SceneGraph,
                         following: SceneGraph | None, demonstrations: Sequence[Demonstration],
                         sliding_window: bool = True, json_mode: bool = False) -> Messages:
    """Chat messages of step-wise scene imagination for one scene graph (with or without SWC)."""
    instruction = IMAGINATION_INSTRUCTION if sliding_window else IMAGINATION_NO_WINDOW_INSTRUCTION
    messages = [_system(instruction, SCENE_JSON, json_mode)]
    for demo in demonstrations:
        question, answer = _imagination_turn(demo, sliding_window)
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": window_query(caption, previous, current, following, sliding_window)})
    return messages


def polish_draft(demo: Demonstration) -> DSG:
    """A demonstration's polishing input: its skeleton with the gold attributes of the first step only."""
    skeleton = events_to_dsg(demo.events)
    first = demo.dsg.graphs[0].attributes if demo.dsg is not None else ()
    return DSG(tuple(SceneGraph(sg.t, sg.triplets, first if sg.t == 0 else ()) for sg in skeleton.graphs),
               skeleton.duration)


def polish_messages(caption: str, dsg: DSG, demonstrations: Sequence[Demonstration],
                    json_mode: bool = False) -> Messages:
    """Chat messages of global scene polishing of a whole (step-wise imagined) DSG."""
    messages = [_system(POLISH_INSTRUCTION, POLISH_JSON, json_mode)]
    for demo in demonstrations:
        question, answer = _polish_turn(demo)
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": f"Text: {caption}\nScenes:\n{format_dsg(dsg)}"})
    return messages


@functools.lru_cache(maxsize=1024)
def _imagination_turn(demo: Demonstration, sliding_window: bool) -> tuple[str, str]:
    """A demonstration's (question, answer) texts for step-wise imagination (cached: prompts reuse them)."""
    prev, cur, nxt, gold = demonstration_window(demo)
    return window_query(demo.caption, prev, cur, nxt, sliding_window), format_scene(gold)


@functools.lru_cache(maxsize=1024)
def _polish_turn(demo: Demonstration) -> tuple[str, str]:
    """A demonstration's (question, answer) texts for global polishing (cached)."""
    if demo.dsg is None:
        raise ValueError(f"demonstration {demo.caption!r} has no gold DSG: polishing needs one")
    return f"Text: {demo.caption}\nScenes:\n{format_dsg(polish_draft(demo))}", format_dsg(_per_step(demo.dsg))


def _per_step(dsg: DSG) -> DSG:
    """The DSG with one scene graph per time step (a merged DSG expanded)."""
    return DSG(tuple(SceneGraph(t, dsg.at(t).triplets, dsg.at(t).attributes) for t in range(dsg.duration)),
               dsg.duration)
