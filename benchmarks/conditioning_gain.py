"""How much a trained model uses its conditions: held-out loss with text + DSG, without the DSG, and
with neither (the learned nulls replace them), on the held-out dynamic-shapes clips.

    python benchmarks/conditioning_gain.py --config=configs/tiny.py --workdir=checkpoints/tiny [--videos=32]
        [--set model.pooled_conditions=False ...]
    python benchmarks/conditioning_gain.py --config=configs/tiny.py:no_dysen --workdir=/tmp/table4/no_dysen/seed0,...

One JSON line per workdir: loss_text_dsg, loss_text (DSG nulled; = loss_text_dsg for text-only
models), loss_none (both nulled), and the gains loss_none - loss_text (what the text explains) and
loss_text - loss_text_dsg (what the DSG adds given the text); loss_colours_swapped (text + DSG of the
caption with every colour word swapped for another, re-planned by the rules planner) and colour_gain =
loss_colours_swapped - loss_text_dsg (how much the model relies on the colours it is told: the easiest
thing a caption says). Same clips, timesteps and noise for every setting and workdir
(metrics/heldout_loss.py), so the differences are paired. Table 4 rows that differ only in
conditioning can differ only by what these gains are at that budget.
"""

from __future__ import annotations

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.machine import cpu_name  # noqa: E402
from benchmarks.trained_runs import heldout_items, runs_config, runs_parser, trained_runs  # noqa: E402


COLOUR_SWAP = {"red": "green", "green": "red", "blue": "yellow", "yellow": "blue", "purple": "orange",
               "orange": "purple"}


def swap_colours(caption: str) -> str:
    """The caption with every colour word replaced by its partner in COLOUR_SWAP (case kept)."""
    def swap(match: re.Match) -> str:
        word = match.group(0)
        new = COLOUR_SWAP[word.lower()]
        return new.capitalize() if word[0].isupper() else new

    return re.sub(r"\b(" + "|".join(COLOUR_SWAP) + r")\b", swap, caption, flags=re.IGNORECASE)


def main() -> None:
    parser = runs_parser(__doc__, "diffusion.frame_noise_share=0 for a model trained before that key existed")
    args = parser.parse_args()

    from dysen_jax.dsg.build import plan_from_events
    from dysen_jax.metrics.heldout_loss import heldout_loss
    from dysen_jax.planner.base import plan_batch, planner_from_config

    config = runs_config(args)
    ev = config.evaluate
    items = heldout_items(config, args.videos)
    videos = [it.video for it in items]
    prompts, plans = [it.caption for it in items], [plan_from_events(it.events) for it in items]
    swapped = [swap_colours(p) for p in prompts]
    rules = config.planner.copy_and_resolve_references()
    rules.backend = "rules"
    swapped_outcomes = plan_batch(planner_from_config(rules), swapped)
    if any(o.plan is None for o in swapped_outcomes):
        raise SystemExit("the rules planner failed on a colour-swapped caption: " +
                         next(s for s, o in zip(swapped, swapped_outcomes) if o.plan is None))
    swapped_plans = [o.plan for o in swapped_outcomes]
    for workdir, experiment, params in trained_runs(config, args.workdir):
        loss = lambda text, dsg, captions=prompts, plans=plans: heldout_loss(
            experiment, params, videos, captions, plans, int(ev.split_seed), use_text=text, use_dsg=dsg)
        both, text_only, none = loss(True, True), loss(True, False), loss(False, False)
        colours_swapped = loss(True, True, swapped, swapped_plans)
        print(json.dumps({"workdir": workdir, "config": args.config, "set": args.set, "videos": len(items),
                          "loss_text_dsg": round(both, 5), "loss_text": round(text_only, 5),
                          "loss_none": round(none, 5), "loss_colours_swapped": round(colours_swapped, 5),
                          "text_gain": round(none - text_only, 5), "dsg_gain": round(text_only - both, 5),
                          "colour_gain": round(colours_swapped - both, 5), "cpu": cpu_name()}), flush=True)


if __name__ == "__main__":
    main()
