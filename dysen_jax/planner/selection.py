"""Which D demonstrations an ICL prompt shows for a caption: fixed, random, or a trained RL policy.

`fixed` shows the bank's first D (the built-in bank lists its most complex synthetic examples
first); `random` draws D per caption, reproducibly (seeded by planner.seed and the caption), which
is the paper's "w/o RL-ICL" row; `rl` asks the policy trained by `python -m dysen_jax.plan
train-selector` (dysen_jax/planner/selector.py).
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol, Sequence

import numpy as np

from dysen_jax.planner.bank import Demonstration


class Selector(Protocol):
    """Picks k demonstrations for a caption (only ones with a gold DSG when require_dsg)."""

    def select(self, caption: str, k: int, require_dsg: bool = False) -> list[Demonstration]:
        ...


def candidates(bank: Sequence[Demonstration], caption: str, require_dsg: bool) -> list[Demonstration]:
    """The bank minus the caption itself (no leaking the answer), with a gold DSG if required."""
    key = " ".join(caption.lower().split())
    return [d for d in bank if " ".join(d.caption.lower().split()) != key and (d.dsg is not None or not require_dsg)]


class FixedSelector:
    """The first k eligible demonstrations of the bank, for every caption."""

    def __init__(self, bank: Sequence[Demonstration]):
        self.bank = list(bank)

    def select(self, caption: str, k: int, require_dsg: bool = False) -> list[Demonstration]:
        return candidates(self.bank, caption, require_dsg)[:k]


class RandomSelector:
    """k eligible demonstrations drawn without replacement, reproducibly per (seed, caption)."""

    def __init__(self, bank: Sequence[Demonstration], seed: int = 0):
        self.bank = list(bank)
        self.seed = int(seed)

    def select(self, caption: str, k: int, require_dsg: bool = False) -> list[Demonstration]:
        pool = candidates(self.bank, caption, require_dsg)
        digest = hashlib.sha256(f"{self.seed}\0{caption}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        picks = rng.choice(len(pool), size=min(k, len(pool)), replace=False) if pool else []
        return [pool[i] for i in picks]


def selector_from_config(planner_cfg: Any, bank: Sequence[Demonstration]) -> Selector:
    """The selector `planner.selection` names."""
    if planner_cfg.selection == "fixed":
        return FixedSelector(bank)
    if planner_cfg.selection == "random":
        return RandomSelector(bank, planner_cfg.seed)
    if planner_cfg.selection == "rl":
        from dysen_jax.planner.selector import PolicySelector
        return PolicySelector.load(planner_cfg.selector_path, bank)
    raise ValueError(f"planner.selection={planner_cfg.selection!r}: use fixed, random or rl")
