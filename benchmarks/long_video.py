"""VidRD long videos: smoothness at clip joins and sampling cost per frame vs the number of clips.

    python -m dysen_jax.preprocess --config=configs/tiny.py --output_dir=/tmp/h6_run/data
    python -m dysen_jax.train --config=configs/tiny.py --workdir=/tmp/h6_run --config.train.num_steps=400
    python benchmarks/long_video.py --workdir=/tmp/h6_run [--clips=4 --seeds=4 --steps=25]

On the EMA params of a model trained on the dynamic-shapes data (configs/tiny.py: 8 frames of 32 px per
clip), samples `--clips`-clip videos of a three-action prompt (each clip on the scene graphs of its own
time span) for `--seeds` seeds in one batch, three ways: `naive` (independent noise per clip, no
guidance), `fnr` (frame-level noise reversion alone: α = inf, β = 0) and `vidrd` (FNR + past-dependent
noise α = 4 + staged guidance β = 0.4, M = 4). For each it reports the mean absolute frame-to-frame
change of pixels in [-1, 1] at the clip joins (frame kN-1 -> kN) and inside the clips, and their ratio
(1 = joins as smooth as insides). Then the sampling seconds per frame for 1, 2 and 4 clips (after a
warm-up compile; the goal is flat). Prints one JSON line.

Measured on "Intel(R) Xeon(R) Processor" (2 cores shared with other agents' jobs, load 4-7, so the
times are noisy), CPU jax, the EMA params of configs/tiny.py trained 400 steps of batch 8 in /tmp/h6_run
(loss 0.77 at step 1 -> 0.13 at step 400), 25 DDIM steps, guidance 3 (text) / 3 (DSG), 4 seeds x 4 clips:

    mode    join change  inside change  join / inside
    naive   0.3195       0.3021         1.058
    fnr     0.0610       0.3029         0.201
    vidrd   0.0283       0.3017         0.094
    seconds per frame (batch of 4 videos): 1 clip 0.680, 2 clips 0.575, 4 clips 0.715 (flat within the noise)

The bundled model (`--workdir=checkpoints/tiny`, stage 5: trained with the frame-correlated noise prior,
≈ 14 900 steps; AMD EPYC, idle), same settings:

    mode    join change  inside change  join / inside
    naive   0.1076       0.0649         1.657
    fnr     0.0728       0.0667         1.091
    vidrd   0.0205       0.0690         0.297
    seconds per frame (batch of 4 videos): 1 clip 0.214, 2 clips 0.191, 4 clips 0.192

Naive clips jump at every join (a little more change than inside a clip); noise reversion makes the
first frame of clip k+1 nearly the last frame of clip k, and staged guidance halves what is left, so
joins change *less* than consecutive frames inside a clip (the model at 400 CPU steps is noisy, hence
the large inside change).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.machine import cpu_name  # noqa: E402
from dysen_jax.diffusion.long_video import VidRDSettings  # noqa: E402
from dysen_jax.experiment import load_experiment  # noqa: E402
from dysen_jax.sample import generate_batch, load_params, plan_prompts  # noqa: E402

PROMPT = "the red circle moves right, then the blue square jumps, then the green triangle moves left"
MODES = {
    "naive": VidRDSettings(pns_alpha=0.0, staged_beta=0.0, reuse_noise=False),
    "fnr": VidRDSettings(pns_alpha=math.inf, staged_beta=0.0),
    "vidrd": VidRDSettings(prompt_frames=4, pns_alpha=4.0, staged_beta=0.4),
}


def frame_changes(videos: np.ndarray, clip_frames: int) -> tuple[float, float]:
    """(mean |frame f+1 - frame f| over the clip joins, over the pairs inside clips), pixels in [-1, 1]."""
    x = videos.astype(np.float32) / 127.5 - 1.0
    change = np.abs(np.diff(x, axis=1)).mean(axis=(0, 2, 3, 4))   # [F-1]: pair f -> f+1
    is_join = (np.arange(len(change)) + 1) % clip_frames == 0
    return float(change[is_join].mean()), float(change[~is_join].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/h6_run")
    parser.add_argument("--config", default="configs/tiny.py")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--timing_clips", default="1,2,4")
    args = parser.parse_args()

    from ml_collections.config_flags.config_flags import ConfigFileFlagParser

    config = ConfigFileFlagParser("config").parse(args.config)   # configs/x.py[:variant], as --config=... does
    config.sample.steps = args.steps
    experiment = load_experiment(config, args.workdir)
    params = load_params(experiment, args.workdir)
    n = int(experiment.spec.dsg.num_frames)
    plan = plan_prompts(experiment, [args.prompt])[0].plan
    prompts, plans, seeds = [args.prompt] * args.seeds, [plan] * args.seeds, list(range(args.seeds))

    def run(num_clips: int, vidrd: VidRDSettings) -> np.ndarray:
        experiment.config.sample.num_frames = num_clips * n
        return generate_batch(experiment, params, prompts, plans, seeds, vidrd=vidrd)

    quality = {}
    for name, vidrd in MODES.items():
        joins, inside = frame_changes(run(args.clips, vidrd), n)
        quality[name] = {"join_change": round(joins, 4), "inside_change": round(inside, 4),
                         "join_over_inside": round(joins / inside, 3)}
    timing = {}
    for num_clips in (int(c) for c in args.timing_clips.split(",")):
        run(num_clips, MODES["vidrd"])                           # warm-up: compiles both step variants
        start = time.perf_counter()
        run(num_clips, MODES["vidrd"])
        seconds = time.perf_counter() - start
        timing[str(num_clips)] = round(seconds / (num_clips * n * args.seeds), 4)
    print(json.dumps({"machine": cpu_name(), "devices": str(jax.devices()[0].platform), "workdir": args.workdir,
                      "prompt": args.prompt, "clip_frames": n, "clips": args.clips, "seeds": args.seeds,
                      "steps": args.steps, "guidance": [experiment.config.sample.guidance,
                                                        experiment.config.sample.dsg_guidance],
                      "frame_change": quality, "seconds_per_frame_by_clips": timing}))


if __name__ == "__main__":
    main()
