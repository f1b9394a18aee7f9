"""The planner interface (Dysen steps I-III behind one call) and the backend registry."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from dysen_jax.dsg.schema import Plan

BACKENDS: tuple[str, ...] = ("rules",)


@runtime_checkable
class Planner(Protocol):
    """Turns a caption into events and their DSG; implementations must be deterministic per input."""

    def plan(self, caption: str) -> Plan:
        """The plan for `caption`; raises DSGError for captions that cannot be planned (e.g. empty)."""
        ...


def get_planner(backend: str, **kwargs: Any) -> Planner:
    """The planner named by `planner.backend` ("rules": offline, rule-based); kwargs go to it."""
    if backend == "rules":
        from dysen_jax.planner.rules import RulesPlanner
        return RulesPlanner(**kwargs)
    raise ValueError(f"planner.backend={backend!r} is not a known planner backend; "
                     f"valid choices: {', '.join(BACKENDS)}")
