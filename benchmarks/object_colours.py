"""Does a model draw the objects its prompt names, and nothing else? Colour recall and precision of
generated held-out dynamic-shapes clips (objects are told apart by colour in this dataset).

    python benchmarks/object_colours.py --config=configs/tiny.py --workdir=checkpoints/tiny [--videos=32]
        [--seed=0] [--set sample.guidance=5 --set sample.dsg_guidance=5 ...]

For each held-out caption (evaluate's split, sampled like `python -m dysen_jax.evaluate`), the shapes
parser's detector (metrics/shapes_parser.detect_objects) lists the palette colours present in the clip;
object_recall = the share of the caption's colours found, object_precision = the share of found colours
the caption names, objects_per_clip vs gold_objects_per_clip. frame_jump is how far an object's centre
moves from one frame to the next (fractions of the frame side, mean over objects and consecutive frames
where it is measured in both): the real clips' value is their motion; a model whose shapes do not keep
their place from frame to frame scores far above it. The real clips through the same detector are the
check (1.0 / 1.0). One JSON line per workdir. TriRec asks for the actions too; this asks only whether
the right things are there and stay put, the first things a viewer sees.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.machine import cpu_name  # noqa: E402
from benchmarks.trained_runs import runs_config, runs_parser, trained_runs  # noqa: E402


def frame_jumps(states) -> list[float]:
    """Centre displacements (fractions of the frame side) between consecutive frames of each detected
    object (shapes_parser.ObjectStates), where both frames measure its position."""
    import numpy as np

    jumps: list[float] = []
    for s in states.values():
        ok = s.geometric()
        both = ok[1:] & ok[:-1]
        step = np.hypot(np.diff(s.x), np.diff(s.y))
        jumps.extend(float(v) for v in step[both])
    return jumps


def colour_scores(videos, items) -> dict[str, float]:
    """Mean object recall / precision, object counts and frame-to-frame jump of uint8 clips
    [N, F, H, W, 3] against the colours named by each item's gold events."""
    import numpy as np

    from dysen_jax.metrics.shapes_parser import detect_objects, names_from_events

    recall, precision, found, told, jumps = [], [], [], [], []
    for video, item in zip(videos, items):
        detected = detect_objects(video)
        jumps.extend(frame_jumps(detected))
        want, got = set(names_from_events(item.events)), set(detected)
        recall.append(len(want & got) / max(1, len(want)))
        precision.append(len(want & got) / max(1, len(got)) if got else 0.0)
        found.append(len(got))
        told.append(len(want))
    return {"object_recall": round(float(np.mean(recall)), 3), "object_precision": round(float(np.mean(precision)), 3),
            "objects_per_clip": round(float(np.mean(found)), 2), "gold_objects_per_clip": round(float(np.mean(told)), 2),
            "frame_jump": round(float(np.mean(jumps)), 4) if jumps else float("nan")}


def main() -> None:
    parser = runs_parser(__doc__, "sample.guidance=5")
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed (clip i uses evaluate's seed of item i).")
    args = parser.parse_args()

    import numpy as np

    from dysen_jax.evaluate import conditioning_plans, evaluation_items, generate_set

    config = runs_config(args)
    config.evaluate.num_videos = args.videos
    items = evaluation_items(config)
    if not all(it.events and it.video is not None for it in items):
        raise SystemExit("object_colours.py needs evaluate's dynamic-shapes split (evaluate.captions_file empty)")
    plans, _ = conditioning_plans(config, items)
    truth = colour_scores(np.stack([it.video for it in items]), items)
    for workdir, experiment, params in trained_runs(config, args.workdir):
        videos = generate_set(experiment, params, items, plans, args.seed, int(config.evaluate.batch_size))
        print(json.dumps({"workdir": workdir, "config": args.config, "set": args.set, "videos": len(items),
                          "seed": args.seed, **colour_scores(videos, items), "ground_truth": truth,
                          "cpu": cpu_name()}), flush=True)


if __name__ == "__main__":
    main()
