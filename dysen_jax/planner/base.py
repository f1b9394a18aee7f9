"""The planner interface (Dysen steps I-III behind one call) and the backend registry."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from dysen_jax.dsg.schema import Plan

BACKENDS: tuple[str, ...] = ("rules", "openai")


@runtime_checkable
class Planner(Protocol):
    """Turns a caption into events and their DSG; implementations must be deterministic per input."""

    def plan(self, caption: str) -> Plan:
        """The plan for `caption`; raises DSGError for captions that cannot be planned (e.g. empty)."""
        ...


def get_planner(backend: str, **kwargs: Any) -> Planner:
    """The planner named by `planner.backend`; kwargs go to it.

    "rules": offline and rule-based. "openai": step I through any OpenAI-compatible server, with
    repair and rules fallback (kwargs: client, demonstrations, max_repairs).
    """
    if backend == "rules":
        from dysen_jax.planner.rules import RulesPlanner
        return RulesPlanner(**kwargs)
    if backend == "openai":
        from dysen_jax.planner.llm_planner import LLMPlanner
        if "client" not in kwargs or "demonstrations" not in kwargs:
            raise ValueError("planner.backend='openai' needs an LLM client and demonstrations: build it with "
                             "planner_from_config(config.planner) (settings under planner.llm)")
        return LLMPlanner(**kwargs)
    raise ValueError(f"planner.backend={backend!r} is not a known planner backend; "
                     f"valid choices: {', '.join(BACKENDS)}")


def planner_from_config(planner_cfg: Any) -> Planner:
    """The planner a config's `planner` section describes (see configs/tiny.py)."""
    if planner_cfg.backend != "openai":
        return get_planner(planner_cfg.backend)
    from dysen_jax.planner.llm_client import LLMClient, LLMConfig
    from dysen_jax.planner.prompts import synthetic_demonstrations

    client = LLMClient(LLMConfig.from_config(planner_cfg.llm))
    return get_planner("openai", client=client,
                       demonstrations=synthetic_demonstrations(planner_cfg.num_demonstrations),
                       max_repairs=planner_cfg.max_repairs)
