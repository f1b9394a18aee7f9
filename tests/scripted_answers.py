"""What a perfect LLM answers to each Dysen prompt, for the scripted test server's `answer` callback.

Step I: the rules planner's events of the caption (gold on synthetic captions). Step III: the
current scene plus one imagined attribute per object ("shiny"). Polishing: the draft with
"polished" added to every object. Tests tweak these to script bad answers.
"""

from __future__ import annotations

from dysen_jax.planner.parse import parse_dsg_lines, parse_scene
from dysen_jax.planner.prompts import ACTION_PLANNING_INSTRUCTION, POLISH_INSTRUCTION, format_events
from dysen_jax.planner.rules import RulesPlanner


def last_user_turn(body: dict) -> str:
    return next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")


def prompt_kind(body: dict) -> str:
    """'plan' (step I), 'imagine' (step III) or 'polish', from the system instruction."""
    system = body["messages"][0]["content"]
    if system.startswith(ACTION_PLANNING_INSTRUCTION[:60]):
        return "plan"
    if system.startswith(POLISH_INSTRUCTION[:60]):
        return "polish"
    return "imagine"


def caption_of(body: dict) -> str:
    """The caption of the test input (the last 'Text: ...' user turn)."""
    turn = next(m["content"] for m in reversed(body["messages"])
                if m["role"] == "user" and m["content"].startswith("Text: "))
    return turn[6:].split("\n")[0]


def _scene_lines(triplets, attributes) -> list[str]:
    return [f"({s}, {p}, {o or 'none'})" for s, p, o in triplets] + [f"({o}, {a})" for o, a in attributes]


def perfect_answer(body: dict) -> str:
    kind = prompt_kind(body)
    if kind == "plan":
        return "Sure! Here is the plan:\n" + format_events(RulesPlanner().plan(caption_of(body)).events)
    query = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user"
                 and m["content"].startswith("Text: "))
    if kind == "imagine":
        current = query.split("Current scene:\n", 1)[1].split("\nNext scene:", 1)[0]
        triplets, attributes = parse_scene(current)
        objects = dict.fromkeys([s for s, _, _ in triplets] + [o for _, _, o in triplets if o])
        return "\n".join(_scene_lines(triplets, attributes + [(o, "shiny") for o in objects]))
    scenes = parse_dsg_lines(query.split("Scenes:\n", 1)[1])
    lines = []
    for t, (triplets, attributes) in sorted(scenes.items()):
        objects = dict.fromkeys([s for s, _, _ in triplets] + [o for _, _, o in triplets if o])
        lines.append(f"t={t}: " + " ".join(_scene_lines(triplets, attributes + [(o, "polished") for o in objects])))
    return "\n".join(lines)
