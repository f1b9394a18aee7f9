"""Dysen steps I-III with an LLM: ICL prompts -> parse and validate -> repair -> offline fallback.

Step I (action planning) answers are parsed by `dysen_jax.planner.parse` (regular expressions and
json, never eval) and validated (`check_action_plan`: the schema's names and times, at most
`max_events`, every agent and target named in the caption; a plan that starts after 0v is shifted
to start at 0v). A bad answer is sent back with the error up to
`max_repairs` times; an item still without a valid plan (or whose requests failed) falls back to
the offline rules planner and is counted as such. Step II is the deterministic `events_to_dsg`.
Step III (`SceneImaginer`) enriches the DSG of every LLM-planned item; fallback items keep the
offline plan whole.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from dysen_jax.dsg.build import plan_from_events
from dysen_jax.dsg.schema import DSGError, Event, Plan
from dysen_jax.planner.bank import Demonstration
from dysen_jax.planner.base import PlanOutcome
from dysen_jax.planner.imagination import SceneImaginer
from dysen_jax.planner.llm_client import LLMClient
from dysen_jax.planner.parse import PlanParseError, parse_events
from dysen_jax.planner.prompts import ACTION_PLANNING_REMINDER, action_planning_messages
from dysen_jax.planner.repair import ask_with_repair


def ungrounded_names(events: Sequence[Event], caption: str) -> list[str]:
    """Agents and targets the caption does not name (as a phrase; forgiving case, articles, plurals).

    Small LLMs copy names from their demonstrations (a "green heart" in a text about a red one); a
    plan about objects the text never mentions is wrong however well formed, so it is sent back
    like a parse error. The price: a pronoun resolved to a noun the text does not contain is sent
    back too.
    """
    from dysen_jax.planner.metrics import normalize_name

    text = f" {normalize_name(caption)} "
    names = [n for e in events for n in (e.agent, e.target) if n is not None]
    return [n for n in dict.fromkeys(names) if f" {normalize_name(n)} " not in text]


def check_action_plan(text: str, max_events: int, caption: str | None = None) -> Plan:
    """The step-I answer as a Plan; raises PlanParseError saying what breaks the DSG rules.

    With `caption`, every agent and target must be named in it (`ungrounded_names`).
    """
    events = parse_events(text)
    if len(events) > max_events:
        raise PlanParseError(f"{len(events)} actions is more than {max_events}: keep the key actions only")
    if caption is not None:
        unknown = ungrounded_names(events, caption)
        if unknown:
            raise PlanParseError(f"{', '.join(repr(n) for n in unknown)} are not in the text: plan only the "
                                 "agents and objects the text mentions, with its words")
    first = min(e.start for e in events)
    if first:
        events = [dataclasses.replace(e, start=e.start - first, end=e.end - first) for e in events]
    return plan_from_events(events)


class LLMPlanner:
    """Plans captions in batches through an OpenAI-compatible server (see module docstring)."""

    def __init__(self, client: LLMClient, selector: Any, num_demonstrations: int = 5, max_repairs: int = 2,
                 fallback: Any = None, imaginer: SceneImaginer | None = None, max_events: int = 8,
                 json_mode: bool = False) -> None:
        from dysen_jax.planner.rules import RulesPlanner

        self.client = client
        self.selector = selector
        self.num_demonstrations = num_demonstrations
        self.max_repairs = max_repairs
        self.fallback = fallback if fallback is not None else RulesPlanner()
        self.imaginer = imaginer
        self.max_events = max_events
        self.json_mode = json_mode

    def plan(self, caption: str) -> Plan:
        """The plan of one caption; raises DSGError when neither the LLM nor the fallback could plan it."""
        outcome = self.plan_many([caption])[0]
        if outcome.plan is None:
            raise DSGError(f"could not plan {caption!r}: {'; '.join(outcome.errors)}")
        return outcome.plan

    def _fall_back(self, caption: str, errors: Sequence[str]) -> PlanOutcome:
        """The offline planner's plan ('fallback'), or 'failed' when it cannot plan the caption either."""
        try:
            return PlanOutcome(self.fallback.plan(caption), "fallback", tuple(errors))
        except DSGError as err:
            return PlanOutcome(None, "failed", (*errors, f"fallback: {err}"))

    def plan_many(self, captions: Sequence[str],
                  shots: Sequence[Sequence[Demonstration]] | None = None) -> list[PlanOutcome]:
        """One outcome per caption, in order; `shots` overrides the step-I demonstrations per caption."""
        for caption in captions:
            if not caption or not caption.strip():
                raise DSGError("caption is empty: nothing to plan")
        if shots is None:
            shots = [self.selector.select(c, self.num_demonstrations) for c in captions]
        elif len(shots) != len(captions):
            raise ValueError(f"got {len(shots)} demonstration lists for {len(captions)} captions")
        conversations = [action_planning_messages(c, s, self.json_mode) for c, s in zip(captions, shots)]
        checks = [lambda text, c=c: check_action_plan(text, self.max_events, c) for c in captions]
        answers = ask_with_repair(self.client, conversations, checks, self.max_repairs,
                                  ACTION_PLANNING_REMINDER, {"type": "json_object"} if self.json_mode else None)
        outcomes = [PlanOutcome(a.value, "repaired" if a.repairs else "llm", tuple(a.errors)) if a.ok else
                    self._fall_back(c, a.errors) for c, a in zip(captions, answers)]
        if self.imaginer is None:
            return outcomes
        planned = [i for i, o in enumerate(outcomes) if o.source in ("llm", "repaired")]
        if planned:
            enriched = self.imaginer.imagine_many([captions[i] for i in planned],
                                                  [outcomes[i].plan.dsg for i in planned])
            for i, (dsg, counts) in zip(planned, enriched):
                o = outcomes[i]
                outcomes[i] = PlanOutcome(Plan(o.plan.events, dsg), o.source, o.errors, counts)
        return outcomes
