"""Dysen step I with an LLM: ICL prompt -> parse -> repair with the error fed back -> offline fallback.

Every answer is parsed by `dysen_jax.planner.parse` (regular expressions and json, never eval) and
checked by the DSG schema. A bad answer is sent back with the error up to `max_repairs` times; an
item still without a valid plan (or whose requests failed) falls back to the offline rules planner
and is counted as such. Step II is the deterministic `events_to_dsg`.
"""

from __future__ import annotations

from typing import Any

from dysen_jax.dsg.build import plan_from_events
from dysen_jax.planner.base import PlanOutcome
from dysen_jax.dsg.schema import DSGError, Plan
from dysen_jax.planner.llm_client import Completion, LLMClient
from dysen_jax.planner.parse import parse_events
from dysen_jax.planner.prompts import Demonstration, action_planning_messages, repair_messages

class LLMPlanner:
    """Plans captions in batches through an OpenAI-compatible server (see module docstring)."""

    def __init__(self, client: LLMClient, demonstrations: list[Demonstration], max_repairs: int = 2,
                 fallback: Any = None):
        from dysen_jax.planner.rules import RulesPlanner

        self.client = client
        self.demonstrations = list(demonstrations)
        self.max_repairs = max_repairs
        self.fallback = fallback if fallback is not None else RulesPlanner()

    def plan(self, caption: str) -> Plan:
        return self.plan_many([caption])[0].plan

    def plan_many(self, captions: list[str]) -> list[PlanOutcome]:
        """One outcome per caption, in order; requests of a round run concurrently."""
        for caption in captions:
            if not caption or not caption.strip():
                raise DSGError("caption is empty: nothing to plan")
        conversations = {i: action_planning_messages(c, self.demonstrations) for i, c in enumerate(captions)}
        errors: dict[int, list[str]] = {i: [] for i in conversations}
        outcomes: dict[int, PlanOutcome] = {}
        for attempt in range(self.max_repairs + 1):
            pending = sorted(conversations)
            if not pending:
                break
            answers = self.client.complete_many([conversations[i] for i in pending])
            for i, answer in zip(pending, answers):
                if not isinstance(answer, Completion):
                    errors[i].append(f"request failed: {answer}")
                    del conversations[i]  # the client already retried; no point re-asking
                    continue
                try:
                    plan = plan_from_events(parse_events(answer.text))
                except DSGError as err:
                    errors[i].append(str(err))
                    conversations[i] = repair_messages(conversations[i], answer.text, str(err))
                    continue
                outcomes[i] = PlanOutcome(plan, "llm" if attempt == 0 else "repaired", tuple(errors[i]))
                del conversations[i]
        for i, caption in enumerate(captions):
            if i not in outcomes:
                outcomes[i] = PlanOutcome(self.fallback.plan(caption), "fallback", tuple(errors[i]))
        return [outcomes[i] for i in range(len(captions))]
