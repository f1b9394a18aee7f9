"""The demonstration bank: solved examples (caption, gold events, gold enriched DSG) for ICL prompts.

A bank is a JSONL file, one demonstration per line:

    {"caption": str, "events": [[agent, predicate, target|null, start, end], ...],
     "dsg": [{"t": int, "triplets": [...], "attributes": [...]}, ...] | null}

"dsg" is the gold enriched DSG that step-III demonstrations show; a line without one serves step I
only. The built-in bank is synthetic dynamic-shapes clips (gold DSG read off the rendered object
states, `gold_scene_dsg`) plus the hand-written everyday examples in planner/data/everyday.jsonl.

    python -m dysen_jax.plan build-bank --output bank.jsonl [--num_synthetic 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
from typing import Any, Sequence

from dysen_jax.dsg.schema import DSG, DSGError, Event, Plan

EVERYDAY_FILE = os.path.join(os.path.dirname(__file__), "data", "everyday.jsonl")
BANK_SEED = 12345          # the dataset seed of built-in synthetic demonstrations (not a training seed)
NUM_SYNTHETIC = 48         # synthetic demonstrations in the built-in bank


@dataclasses.dataclass(frozen=True)
class Demonstration:
    """One solved example: a caption, its gold events and (for step III) its gold enriched DSG."""

    caption: str
    events: tuple[Event, ...]
    dsg: DSG | None = None

    def to_json(self) -> dict[str, Any]:
        return {"caption": self.caption,
                "events": [[e.agent, e.predicate, e.target, e.start, e.end] for e in self.events],
                "dsg": self.dsg.to_json() if self.dsg is not None else None}

    @classmethod
    def from_json(cls, obj: Any) -> "Demonstration":
        if not isinstance(obj, dict) or not isinstance(obj.get("caption"), str) or not obj["caption"].strip():
            raise DSGError("a demonstration needs a non-empty 'caption' string")
        if not isinstance(obj.get("events"), list) or not obj["events"]:
            raise DSGError("a demonstration needs a non-empty 'events' list of [agent, predicate, target, start, end]")
        events = tuple(Event.from_json(e) for e in obj["events"])
        dsg = Plan.from_json({"events": obj["events"], "dsg": obj["dsg"]}).dsg if obj.get("dsg") else None
        return cls(obj["caption"].strip(), events, dsg)


def load_bank(path: str) -> list[Demonstration]:
    """Demonstrations of a bank JSONL file; errors name the file and line."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"demonstration bank {path!r} does not exist: write one with "
                                "`python -m dysen_jax.plan build-bank --output FILE` or set planner.demonstrations=''")
    bank = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                bank.append(Demonstration.from_json(json.loads(line)))
            except (json.JSONDecodeError, DSGError) as err:
                raise DSGError(f"{path}:{line_no}: {err}") from None
    if not bank:
        raise DSGError(f"demonstration bank {path!r} is empty")
    return bank


def save_bank(bank: Sequence[Demonstration], path: str) -> None:
    """Writes the bank atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        for demo in bank:
            f.write(json.dumps(demo.to_json()) + "\n")
    os.replace(path + ".tmp", path)


def synthetic_demonstrations(count: int, seed: int = BANK_SEED, max_actions: int = 4) -> list[Demonstration]:
    """`count` dynamic-shapes demonstrations with gold events and enriched DSGs, most complex first."""
    from dysen_jax.data.shapes import gold_scene_dsg, make_example

    examples = [make_example(i, seed=seed, max_actions=max_actions) for i in range(max(2 * count, 8))]
    examples.sort(key=lambda e: -len(e.events))
    return [Demonstration(e.caption, tuple(e.events), gold_scene_dsg(e)) for e in examples[:count]]


def builtin_bank(num_synthetic: int = NUM_SYNTHETIC) -> list[Demonstration]:
    """Synthetic demonstrations first (most complex first), then the everyday ones."""
    return list(_builtin_bank(num_synthetic))


@functools.lru_cache(maxsize=2)
def _builtin_bank(num_synthetic: int) -> tuple[Demonstration, ...]:
    bank = synthetic_demonstrations(num_synthetic)
    if os.path.exists(EVERYDAY_FILE):
        bank += load_bank(EVERYDAY_FILE)
    return tuple(bank)


def bank_from_config(planner_cfg: Any) -> list[Demonstration]:
    """The bank `planner.demonstrations` names ("" = built-in)."""
    return load_bank(planner_cfg.demonstrations) if planner_cfg.demonstrations else builtin_bank()


def main(argv: Sequence[str] | None = None) -> int:
    """`build-bank`: writes the built-in bank (or its synthetic part at another size) to --output."""
    parser = argparse.ArgumentParser(prog="python -m dysen_jax.plan build-bank", description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="bank JSONL to write")
    parser.add_argument("--num_synthetic", type=int, default=NUM_SYNTHETIC, help="synthetic demonstrations")
    parser.add_argument("--no_everyday", action="store_true", help="leave out the hand-written everyday examples")
    args = parser.parse_args(argv)
    if args.num_synthetic < 0:
        print("error: --num_synthetic must be >= 0", file=sys.stderr)
        return 2
    bank = synthetic_demonstrations(args.num_synthetic) if args.num_synthetic else []
    if not args.no_everyday and os.path.exists(EVERYDAY_FILE):
        bank += load_bank(EVERYDAY_FILE)
    save_bank(bank, args.output)
    print(f"wrote {len(bank)} demonstrations ({sum(d.dsg is not None for d in bank)} with a gold DSG) "
          f"to {args.output}")
    return 0
