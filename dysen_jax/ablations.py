"""Table 4 of Dysen-VDM (ablations) as config switches, one definition for every config file.

`configs/<file>.py:<variant>` applies `ABLATIONS[variant]` on top of the file's config; variants
combine with commas (`:no_swc,no_rl_icl`).
"""

from __future__ import annotations

from typing import Any, Mapping

ABLATIONS: dict[str, dict[str, Any]] = {
    "no_dysen": {"model.use_dsg": False},             # w/o Dysen: no DSG reaches the model (text only)
    "no_imagination": {"planner.imagination": False},  # w/o step III (scene imagination)
    "no_swc": {"planner.sliding_window": False},       # step III without the sliding window context
    "no_rl_icl": {"planner.selection": "random"},      # random instead of RL-chosen demonstrations
    "gnn": {"model.dsg_encoder": "gnn"},               # RGTrm -> a plain GNN (models/gnn.py)
}


def apply_switches(config: Any, switches: Mapping[str, Any]) -> None:
    """Sets each "section.field" of `switches` on the ConfigDict `config` (in place)."""
    for key, value in switches.items():
        section, field = key.split(".")
        config[section][field] = value
