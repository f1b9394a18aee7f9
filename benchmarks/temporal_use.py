"""Does a trained model use time? Its held-out loss at each timestep of the 8-point grid
(metrics/heldout_loss.py), as trained, with every temporal layer removed, and on the clips played
backwards, on the held-out dynamic-shapes clips:

    python benchmarks/temporal_use.py --config=configs/tiny.py --workdir=checkpoints/tiny [--videos=32]
        [--set model.temporal_attention_levels=() ...]

One JSON line per workdir: `timesteps` (the grid), `loss` (as trained), `loss_no_temporal` (every temporal
conv and temporal attention zeroed, `models.unet3d.without_temporal_layers`: each is residual, so the
UNet then denoises each frame on its own) and `loss_reversed` (each clip's frames in reverse order,
same captions, plans and noise), each per timestep and as `*_mean`. Where `loss_no_temporal` is close to
`loss` the model decides that noise level frame by frame; a `loss_reversed` close to `loss` means it
hardly cares which way its clips run (a model that renders "moves right" should not explain a clip
moving left as well). Same clips, timesteps and noise for every setting, so the differences are paired.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.machine import cpu_name  # noqa: E402
from benchmarks.trained_runs import heldout_items, runs_config, runs_parser, trained_runs  # noqa: E402


def temporal_use(experiment, params, items, seed: int) -> dict[str, list[float] | float]:
    """Per-timestep held-out losses of `items` (evaluate.heldout_split) as trained, without temporal
    layers and with reversed clips, plus their means."""
    import numpy as np

    from dysen_jax.dsg.build import plan_from_events
    from dysen_jax.metrics.heldout_loss import heldout_loss_per_timestep, timestep_grid
    from dysen_jax.models.unet3d import without_temporal_layers

    videos = np.stack([it.video for it in items])
    prompts, plans = [it.caption for it in items], [plan_from_events(it.events) for it in items]
    losses = {
        "loss": heldout_loss_per_timestep(experiment, params, videos, prompts, plans, seed),
        "loss_no_temporal": heldout_loss_per_timestep(experiment, without_temporal_layers(params), videos, prompts,
                                                      plans, seed),
        "loss_reversed": heldout_loss_per_timestep(experiment, params, videos, prompts, plans, seed,
                                                   reverse_frames=True),
    }
    out: dict[str, list[float] | float] = {"timesteps": timestep_grid(experiment.schedule.num_timesteps).tolist()}
    for name, per_t in losses.items():
        out[name] = [round(float(v), 5) for v in per_t]
        out[name + "_mean"] = round(float(per_t.mean()), 5)
    return out


def main() -> None:
    parser = runs_parser(__doc__, "'model.temporal_attention_levels=()' for a model from before tiny's default")
    args = parser.parse_args()
    config = runs_config(args)
    items = heldout_items(config, args.videos)
    for workdir, experiment, params in trained_runs(config, args.workdir):
        losses = temporal_use(experiment, params, items, int(config.evaluate.split_seed))
        print(json.dumps({"workdir": workdir, "config": args.config, "set": args.set, "videos": len(items),
                          **losses, "cpu": cpu_name()}), flush=True)


if __name__ == "__main__":
    main()
