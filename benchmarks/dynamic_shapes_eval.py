"""The dynamic-shapes evaluation benchmark: the held-out split, the parser's exactness, trained runs per number of actions.

    python benchmarks/dynamic_shapes_eval.py                                   # the split + parser check only
    python benchmarks/dynamic_shapes_eval.py --num_videos 256 --num_frames 8 --resolution 32
    python benchmarks/dynamic_shapes_eval.py --config configs/tiny.py --workdirs RUN_A,RUN_B --seeds 0,1 \
        [--label dysen] [--table runs/table4/evaluation] [--plan gold]

The held-out split (`dysen_jax.evaluate.heldout_split`, dataset seed 20261, never a training seed):
equally many captions with 1..--max_actions actions; for 2+ actions half are told out of time
order ("the blue square jumps after the red circle moves left"), sequential and concurrent clips
share the rest. This is the split the Table 4 reproduction evaluates on.

Always: the split's composition, and the exact parser (`dysen_jax.metrics.shapes_parser`) run on
the split's own ground-truth clips: TriRec / timed recall / order accuracy / exact per number of
actions (they must be 1.0; anything less is a parser error on this split), parse time per clip.
With --perturbed also on ground truth with Gaussian noise (sigma 15), blur (sigma 1 px) + noise 10,
and a drifted palette (0.85 x + 20): how much a generated clip could lose to the parser itself.
With --workdirs: every run (trained with --config) x --seeds generates the split and is scored
exactly as `python -m dysen_jax.evaluate` does (same code, same table files with --table); the
JSON then holds mean ± std per number of actions.

Prints one JSON object (machine, settings, results).

Measured here (`python benchmarks/dynamic_shapes_eval.py --perturbed`; "Intel(R) Xeon(R) Processor",
2 cores shared with other jobs), defaults (256 clips, 8 x 32 x 32, 1-4 actions; 64 per count):
ground truth parsed exactly in 256/256 clips (TriRec, timed recall, order accuracy 1.0 at every
number of actions), 0.014 s per clip. Perturbed (exact clips of 256; TriRec / order accuracy over
2-4 actions): noise 15: 244, >= 0.977 / >= 0.953; blur 1 + noise 10: 236, >= 0.969 / >= 0.938;
palette drift: 256, 1.0 / 1.0. 17 s in all.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.machine import cpu_name  # noqa: E402
from dysen_jax.dsg.build import plan_from_events  # noqa: E402
from dysen_jax.evaluate import heldout_split  # noqa: E402
from dysen_jax.metrics.trirec import ShapesParser, mean_scores, score_video  # noqa: E402


def load_config(spec: str):
    """configs/x.py[:variant] -> its get_config(variant) (what --config=... gives the entry points)."""
    import importlib.util

    path, _, variant = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("benchmark_config", path)
    if module_spec is None or not os.path.exists(path):
        raise SystemExit(f"--config={spec}: no such config file")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(variant) if variant else module.get_config()


PERTURBATIONS = {
    "noise_15": lambda v, rng: v + rng.normal(0.0, 15.0, v.shape),
    "blur_1_noise_10": lambda v, rng: _blur(v, 1.0) + rng.normal(0.0, 10.0, v.shape),
    "palette_drift": lambda v, rng: 0.85 * v + 20.0,
}


def _blur(video, sigma: float):
    from scipy import ndimage

    return ndimage.gaussian_filter(video, (0, sigma, sigma, 0))


def ground_truth_check(items, perturb=None) -> dict:
    """The exact parser on the split's own clips (optionally perturbed), per number of actions."""
    import numpy as np

    parser = ShapesParser()
    rng = np.random.default_rng(0)
    per_n: dict[int, list] = collections.defaultdict(list)
    failures = []
    start = time.perf_counter()
    for index, it in enumerate(items):
        video = it.video
        if perturb is not None:
            video = np.clip(np.rint(perturb(video.astype(np.float32), rng)), 0, 255).astype(np.uint8)
        scores = score_video(parser(video, plan_from_events(it.events)), it.events)
        per_n[it.num_actions].append(scores)
        if scores["exact"] < 1.0:
            failures.append({"index": index, "caption": it.caption})
    seconds = time.perf_counter() - start
    return {"by_actions": {str(n): mean_scores(s) for n, s in sorted(per_n.items())},
            "exact_clips": sum(1 for s in per_n.values() for x in s if x["exact"] == 1.0), "clips": len(items),
            "failures": failures[:10], "seconds_per_clip": round(seconds / max(len(items), 1), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_videos", type=int, default=256)
    parser.add_argument("--num_frames", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--max_actions", type=int, default=4)
    parser.add_argument("--split_seed", type=int, default=20261)
    parser.add_argument("--perturbed", action="store_true",
                        help="also parse the ground truth with pixel noise, blur and a drifted palette")
    parser.add_argument("--config", default="", help="config file[:variant] of the runs (with --workdirs)")
    parser.add_argument("--workdirs", default="", help="comma-separated trained run directories")
    parser.add_argument("--seeds", default="0", help="comma-separated sampling seeds")
    parser.add_argument("--plan", default="planner", choices=("planner", "gold"), help="conditioning plan")
    parser.add_argument("--label", default="run", help="table row name")
    parser.add_argument("--table", default="", help="write/merge PREFIX.json and PREFIX.md as evaluate does")
    args = parser.parse_args()

    items = heldout_split(args.num_videos, args.num_frames, args.resolution, args.max_actions, args.split_seed)
    composition = collections.Counter(f"{it.num_actions} actions, {it.structure}, "
                                      f"{'reordered' if it.reordered else 'in order'}" for it in items)
    out = {"benchmark": "dynamic_shapes_eval", "machine": cpu_name(), "split": {
        "num_videos": len(items), "num_frames": args.num_frames, "resolution": args.resolution,
        "max_actions": args.max_actions, "split_seed": args.split_seed, "composition": dict(sorted(composition.items()))},
        "ground_truth_parse": ground_truth_check(items)}
    if args.perturbed:   # how much of a generated clip's score the parser itself could lose to noise and drift
        out["perturbed_ground_truth"] = {name: {k: v for k, v in ground_truth_check(items, fn).items() if k != "failures"}
                                         for name, fn in PERTURBATIONS.items()}

    if args.workdirs:
        if not args.config:
            raise SystemExit("--workdirs needs --config (the config the runs were trained with)")
        from dysen_jax.evaluate import evaluate_runs, write_table

        config = load_config(args.config)
        config.evaluate.num_videos = args.num_videos
        config.evaluate.max_actions = args.max_actions
        config.evaluate.split_seed = args.split_seed
        config.evaluate.plan = args.plan
        config.evaluate.parser = "shapes"
        if (config.data.num_frames, config.data.resolution) != (args.num_frames, args.resolution):
            raise SystemExit(f"the runs make {config.data.num_frames} x {config.data.resolution}^2 clips: pass "
                             f"--num_frames {config.data.num_frames} --resolution {config.data.resolution}")
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        with contextlib.redirect_stdout(sys.stderr):   # progress lines: stdout is the JSON
            result = evaluate_runs(config, [w for w in args.workdirs.split(",") if w.strip()], seeds, items=items)
        out["runs"] = {"label": args.label, "summary": result["summary"], "plans": result["plans"],
                       "per_run": [{"workdir": r["workdir"], "seed": r["seed"],
                                    **{k: v for k, v in r["metrics"].items() if k != "by_actions"}}
                                   for r in result["runs"]]}
        if args.table:
            json_path, md_path, _ = write_table(result, args.label, args.table)
            out["runs"]["table"] = [json_path, md_path]
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
