"""In-context-learning prompts of Dysen step I: instruction + D demonstrations + the test caption."""

from __future__ import annotations

import dataclasses

from dysen_jax.dsg.schema import Event

ACTION_PLANNING_INSTRUCTION = (
    "You are a video director. List the key actions of the scene described by the text, one per line, "
    "as (agent, event-predicate, target, (start-time, end-time)). Times are integers in units of an atomic "
    "interval v, the first action starts at 0v, an action lasts from its start up to (not including) its "
    "end, actions that happen at the same time overlap, and the order follows what happens, not the order "
    "of the words. Use the gerund for the predicate and none when there is no target. Answer with the "
    "lines only.")


@dataclasses.dataclass(frozen=True)
class Demonstration:
    """One solved example: a caption and its gold events."""

    caption: str
    events: tuple[Event, ...]


def format_events(events: tuple[Event, ...] | list[Event]) -> str:
    """Events in the paper's line format, `(agent, predicate, target, (start v, end v))`."""
    return "\n".join(f"({e.agent}, {e.predicate}, {e.target or 'none'}, ({e.start}v, {e.end}v))" for e in events)


def action_planning_messages(caption: str, demonstrations: list[Demonstration]) -> list[dict[str, str]]:
    """Chat messages of the step-I ICL prompt (demonstrations as user/assistant turns)."""
    messages = [{"role": "system", "content": ACTION_PLANNING_INSTRUCTION}]
    for demo in demonstrations:
        messages.append({"role": "user", "content": f"Text: {demo.caption}"})
        messages.append({"role": "assistant", "content": format_events(demo.events)})
    messages.append({"role": "user", "content": f"Text: {caption}"})
    return messages


def repair_messages(messages: list[dict[str, str]], answer: str, error: str) -> list[dict[str, str]]:
    """The conversation extended with the bad answer and the parser's complaint, asking again."""
    return messages + [
        {"role": "assistant", "content": answer},
        {"role": "user", "content": f"That answer is invalid: {error}. Answer again with one "
                                    "(agent, event-predicate, target, (start-time, end-time)) line per action."},
    ]


def synthetic_demonstrations(count: int, seed: int = 12345) -> list[Demonstration]:
    """`count` demonstrations from the dynamic-shapes generator (gold events), most complex first."""
    from dysen_jax.data.shapes import make_example

    examples = [make_example(i, seed=seed, max_actions=4) for i in range(max(4 * count, 8))]
    examples.sort(key=lambda e: -len(e.events))
    return [Demonstration(e.caption, tuple(e.events)) for e in examples[:count]]
