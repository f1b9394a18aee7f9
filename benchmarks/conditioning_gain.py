"""How much a trained model uses its conditions: held-out loss with text + DSG, without the DSG, and
with neither (the learned nulls replace them), on the held-out dynamic-shapes clips.

    python benchmarks/conditioning_gain.py --config=configs/tiny.py --workdir=checkpoints/tiny [--videos=32]
    python benchmarks/conditioning_gain.py --config=configs/tiny.py:no_dysen --workdir=/tmp/table4/no_dysen/seed0,...

One JSON line per workdir: loss_text_dsg, loss_text (DSG nulled; = loss_text_dsg for text-only
models), loss_none (both nulled), and the gains loss_none - loss_text (what the text explains) and
loss_text - loss_text_dsg (what the DSG adds given the text). Same clips, timesteps and noise for every
setting and workdir (metrics/heldout_loss.py), so the differences are paired. Table 4 rows that differ
only in conditioning can differ only by what these gains are at that budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.dynamic_shapes_eval import load_config  # noqa: E402
from benchmarks.machine import cpu_name  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="configs/<file>.py[:variant] the runs were trained with.")
    parser.add_argument("--workdir", required=True, help="Comma-separated trained workdirs.")
    parser.add_argument("--videos", type=int, default=32, help="Held-out clips (evaluate.num_videos).")
    args = parser.parse_args()

    from dysen_jax.dsg.build import plan_from_events
    from dysen_jax.evaluate import heldout_split
    from dysen_jax.experiment import load_experiment
    from dysen_jax.metrics.heldout_loss import heldout_loss
    from dysen_jax.sample import load_params

    config = load_config(args.config)
    ev = config.evaluate
    items = heldout_split(args.videos, config.data.num_frames, config.data.resolution, ev.max_actions, ev.split_seed)
    videos = [it.video for it in items]
    prompts, plans = [it.caption for it in items], [plan_from_events(it.events) for it in items]
    for workdir in filter(None, args.workdir.split(",")):
        experiment = load_experiment(config, workdir)
        params = load_params(experiment, workdir)
        loss = lambda text, dsg: heldout_loss(experiment, params, videos, prompts, plans, int(ev.split_seed),
                                              use_text=text, use_dsg=dsg)
        both, text_only, none = loss(True, True), loss(True, False), loss(False, False)
        print(json.dumps({"workdir": workdir, "config": args.config, "videos": len(items),
                          "loss_text_dsg": round(both, 5), "loss_text": round(text_only, 5),
                          "loss_none": round(none, 5), "text_gain": round(none - text_only, 5),
                          "dsg_gain": round(text_only - both, 5), "cpu": cpu_name()}), flush=True)


if __name__ == "__main__":
    main()
