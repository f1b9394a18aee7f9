"""The planner interface (Dysen steps I-III behind one call) and the backend registry."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence, runtime_checkable

from dysen_jax.dsg.schema import DSGError, Plan

BACKENDS: tuple[str, ...] = ("rules", "openai")
# How an item's plan was obtained: by the offline planner, by the LLM (first answer), by the LLM
# after error feedback, by the offline planner after the LLM failed, or not at all.
SOURCES: tuple[str, ...] = ("rules", "llm", "repaired", "fallback", "failed")


@dataclasses.dataclass(frozen=True)
class PlanOutcome:
    """A plan (None when failed) and how it was obtained (one of SOURCES), with the errors met.

    `imagination` counts step-III work for LLM plans: scene graphs enriched by the LLM, after
    repair, kept unenriched after failing, and whether global polishing was applied.
    """

    plan: Plan | None
    source: str
    errors: tuple[str, ...] = ()
    imagination: dict[str, int] = dataclasses.field(default_factory=dict)


@runtime_checkable
class Planner(Protocol):
    """Turns a caption into events and their DSG; implementations must be deterministic per input."""

    def plan(self, caption: str) -> Plan:
        """The plan for `caption`; raises DSGError for captions that cannot be planned (e.g. empty)."""
        ...


def plan_batch(planner: Planner, captions: Sequence[str]) -> list[PlanOutcome]:
    """One outcome per caption, in order; never raises for a bad item (it becomes 'failed').

    Planners with `plan_many` (the LLM planner) get the whole batch, so their requests run
    concurrently; others are called one caption at a time.
    """
    if hasattr(planner, "plan_many"):
        good = [i for i, c in enumerate(captions) if c and c.strip()]
        outcomes = dict(zip(good, planner.plan_many([captions[i] for i in good])))
        return [outcomes.get(i) or PlanOutcome(None, "failed", ("caption is empty: nothing to plan",))
                for i in range(len(captions))]
    results = []
    for caption in captions:
        try:
            results.append(PlanOutcome(planner.plan(caption), "rules"))
        except DSGError as err:
            results.append(PlanOutcome(None, "failed", (str(err),)))
    return results


def get_planner(backend: str, **kwargs: Any) -> Planner:
    """The planner named by `planner.backend`; kwargs go to it.

    "rules": offline and rule-based. "openai": steps I-III through any OpenAI-compatible server, with
    repair and rules fallback (kwargs of LLMPlanner: client, selector, ...).
    """
    if backend == "rules":
        from dysen_jax.planner.rules import RulesPlanner
        return RulesPlanner(**kwargs)
    if backend == "openai":
        from dysen_jax.planner.llm_planner import LLMPlanner
        if "client" not in kwargs or "selector" not in kwargs:
            raise ValueError("planner.backend='openai' needs an LLM client and a demonstration selector: build it with "
                             "planner_from_config(config.planner) (settings under planner.llm)")
        return LLMPlanner(**kwargs)
    raise ValueError(f"planner.backend={backend!r} is not a known planner backend; "
                     f"valid choices: {', '.join(BACKENDS)}")


def planner_from_config(planner_cfg: Any) -> Planner:
    """The planner a config's `planner` section describes (dysen_jax/planner/settings.py)."""
    from dysen_jax.planner.settings import check_planner_config

    check_planner_config(planner_cfg)
    if planner_cfg.backend == "rules":  # the offline planner; its step III is planner.imagination
        return get_planner("rules", enrich=bool(planner_cfg.imagination))
    if planner_cfg.backend != "openai":
        return get_planner(planner_cfg.backend)  # raises, naming the valid backends
    from dysen_jax.planner.bank import bank_from_config
    from dysen_jax.planner.imagination import SceneImaginer
    from dysen_jax.planner.llm_client import LLMClient, LLMConfig
    from dysen_jax.planner.selection import selector_from_config

    client = LLMClient(LLMConfig.from_config(planner_cfg.llm))
    selector = selector_from_config(planner_cfg, bank_from_config(planner_cfg))
    common = dict(client=client, selector=selector, num_demonstrations=planner_cfg.num_demonstrations,
                  max_repairs=planner_cfg.max_repairs, json_mode=planner_cfg.json_mode)
    imaginer = SceneImaginer(sliding_window=planner_cfg.sliding_window, polish=planner_cfg.polish,
                             max_items=planner_cfg.max_scene_items, **common) if planner_cfg.imagination else None
    return get_planner("openai", imaginer=imaginer, max_events=planner_cfg.max_events, **common)
