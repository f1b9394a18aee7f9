"""Sample videos: prompt -> planner -> DSG -> RGTrm + 3D-UNet under DDIM/DDPM with text + DSG guidance -> files.

    python -m dysen_jax.sample --config=configs/tiny.py --workdir=DIR --prompt "..." --output out.mp4
    python -m dysen_jax.sample --config=... --workdir=DIR --prompts prompts.txt --output out/clip.mp4 \
        --num_frames 32 --steps 50 --guidance 7.5 --dsg_guidance 3 --seed 0

Writes the video (mp4 or gif by extension), `out.dsg.json` (the plan, schema of `python -m dysen_jax.plan`)
and `out.dsg.png` (the DSG over time above the frames that show it). With `--prompts FILE` (one prompt a
line, blank lines skipped) line k's files are `out_000k.*` with seed `--seed + k - 1`; finished outputs are
skipped on a rerun (resumable), prompts that fail go to `out.failures.jsonl`.

Uses the EMA parameters of the newest checkpoint in DIR/checkpoints. A `--num_frames` above the model's clip
length N (data.num_frames) is a VidRD long video of num_frames / N clips (diffusion/long_video.py), where
clip i is conditioned on the scene graphs of its own time span of the plan (`clip_dsg`). Latent configs
(`model.latent`) sample the VAE's latents and decode them with the config's frozen VAE (`experiment.codec`).
Every sampling flag is also the config key `sample.<flag>`; the flag wins.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from dysen_jax import logs
from dysen_jax.data.video_io import VIDEO_EXTENSIONS, to_uint8, write_video
from dysen_jax.diffusion.long_video import VidRDSettings, long_video
from dysen_jax.diffusion.samplers import SamplerSettings, item_keys
from dysen_jax.dsg.schema import DSG, DSGError, Plan
from dysen_jax.dsg.tensorize import frame_steps, tensorize
from dysen_jax.experiment import Experiment, init_params, load_experiment


def clip_dsg(dsg: DSG, clip: int, num_clips: int, clip_frames: int) -> tuple[DSG, np.ndarray]:
    """The scene graphs of clip `clip`'s time span, re-timed to start at 0, and its frames' steps [N].

    A plan of duration D unrolls over num_clips·N frames (frame f shows time f·D/(num_clips·N)); clip i
    spans times [floor(i·D/K), ceil((i+1)·D/K)) and gets the scene graphs in force then, as a training
    clip gets the DSG of its own duration. With one clip this is `dsg.merged()` and `frame_steps`.
    """
    dsg = dsg.merged()
    total, d = num_clips * clip_frames, dsg.duration
    start, end = (clip * d) // num_clips, -((-(clip + 1) * d) // num_clips)
    bounds = [g.t for g in dsg.graphs] + [d]
    used = [m for m in range(len(dsg.graphs)) if bounds[m] < end and bounds[m + 1] > start]
    graphs = tuple(dataclasses.replace(dsg.graphs[m], t=max(dsg.graphs[m].t, start) - start) for m in used)
    steps = frame_steps(dsg, total)[clip * clip_frames:(clip + 1) * clip_frames]
    local = np.asarray([used.index(int(m)) for m in steps], np.int32)
    return DSG(graphs, end - start), local


def condition_arrays(experiment: Experiment, prompts: Sequence[str], plans: Sequence[Plan], clip: int = 0,
                     num_clips: int = 1) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Text tokens [B, S] and DSG arrays [B, ...] of clip `clip` (of `num_clips`) for each prompt and plan."""
    tokens = np.stack([experiment.spec.encode_caption(p, experiment.vocab) for p in prompts])
    dsgs = []
    for plan in plans:
        span, steps = clip_dsg(plan.dsg, clip, num_clips, experiment.spec.dsg.num_frames)
        arrays = tensorize(span, experiment.vocab, experiment.spec.dsg)
        arrays["frame_step"] = steps
        dsgs.append(arrays)
    return jnp.asarray(tokens), {k: jnp.asarray(np.stack([d[k] for d in dsgs])) for k in dsgs[0]}


def _tile_to(x: jax.Array, batch: int) -> jax.Array:
    return jnp.tile(x, (batch // x.shape[0],) + (1,) * (x.ndim - 1))


@dataclasses.dataclass(frozen=True)
class _ConditionedDenoiser:
    """model.apply with the conditions tiled to the guidance-stacked batch (branch-major, `guided_output`).

    A hashable callable, so `Partial(_ConditionedDenoiser(model), params, tokens, negative, dsg)` passes params
    and conditions to the jitted step as arguments: a new prompt does not recompile. With `negative`
    tokens (a negative prompt), the branches without text see the negative prompt instead of the null text.
    """

    model: Any

    def __call__(self, params: Any, tokens: jax.Array, negative: jax.Array | None, dsg: dict[str, jax.Array],
                 x: jax.Array, t: jax.Array, use_text: jax.Array, use_dsg: jax.Array) -> jax.Array:
        batch = x.shape[0]
        tokens = _tile_to(tokens, batch)
        if negative is not None:
            tokens = jnp.where(use_text[:, None], tokens, _tile_to(negative, batch))
            use_text = jnp.ones_like(use_text)
        return self.model.apply({"params": params}, x, t, tokens, {k: _tile_to(v, batch) for k, v in dsg.items()},
                                use_text=use_text, use_dsg=use_dsg, deterministic=True)


def sampler_settings(experiment: Experiment) -> SamplerSettings:
    """`config.sample` as SamplerSettings; pixels live in [-1, 1], so x̂0 is clipped there (not latents)."""
    return SamplerSettings.from_config(experiment.config, clip_x0=1.0 if experiment.codec is None else None)


def video_frames(experiment: Experiment) -> tuple[int, int]:
    """(frames of the video, clips): sample.num_frames (0 = one clip) must be a multiple of the clip length N."""
    n = int(experiment.spec.dsg.num_frames)
    frames = int(experiment.config.sample.get("num_frames", 0)) or n
    if frames < n or frames % n:
        raise ValueError(f"--num_frames (sample.num_frames)={frames}: this model makes clips of N={n} frames "
                         f"(data.num_frames), and a long video is whole clips (VidRD: clip k+1 follows clip k), "
                         f"so use a multiple of {n}: {n}, {2 * n}, {3 * n}, ...")
    return frames, frames // n


def vidrd_settings(experiment: Experiment, num_clips: int) -> VidRDSettings:
    s = experiment.config.sample
    return VidRDSettings(num_clips=num_clips, prompt_frames=int(s.get("prompt_frames", 4)),
                         pns_alpha=float(s.get("pns_alpha", 4.0)), staged_beta=float(s.get("staged_beta", 0.4)))


def check_prompt(prompt: str | None) -> str:
    if prompt is None or not prompt.strip():
        raise ValueError("the prompt is empty: pass --prompt 'a red circle moves left, then ...' (or --prompts FILE)")
    return prompt.strip()


def generate_batch(experiment: Experiment, params: Any, prompts: Sequence[str], plans: Sequence[Plan],
                   seeds: Sequence[int], progress: bool = False, vidrd: VidRDSettings | None = None) -> np.ndarray:
    """uint8 videos [B, F, H, W, 3] for prompts with their plans, item b from seeds[b] only (its result does
    not depend on its batch-mates), F = sample.num_frames (VidRD clips beyond one clip; `vidrd` replaces
    the config's VidRD settings, e.g. for the benchmark's baselines)."""
    prompts = [check_prompt(p) for p in prompts]
    config = experiment.config
    num_frames, num_clips = video_frames(experiment)
    settings = sampler_settings(experiment)
    vidrd = vidrd_settings(experiment, num_clips) if vidrd is None else dataclasses.replace(vidrd, num_clips=num_clips)
    negative = str(config.sample.get("negative_prompt", "") or "").strip()
    negative_tokens = None
    if negative:
        negative_tokens = jnp.asarray(np.stack([experiment.spec.encode_caption(negative, experiment.vocab)]
                                               * len(prompts)))
    denoiser = _ConditionedDenoiser(experiment.model)

    def denoiser_for_clip(clip: int) -> jax.tree_util.Partial:
        tokens, dsg = condition_arrays(experiment, prompts, plans, clip, num_clips)
        return jax.tree_util.Partial(denoiser, params, tokens, negative_tokens, dsg)

    x0 = long_video(denoiser_for_clip, item_keys(seeds), experiment.input_shape, experiment.schedule, settings,
                    vidrd, progress=progress)
    if experiment.codec is not None:
        x0 = decode_latents(experiment.codec, x0)
    return to_uint8(jax.device_get(x0))


def plan_prompts(experiment: Experiment, prompts: Sequence[str]) -> list[Any]:
    """One `PlanOutcome` per prompt with the config's planner (failures are outcomes, not exceptions)."""
    from dysen_jax.planner.base import plan_batch, planner_from_config

    return plan_batch(planner_from_config(experiment.config.planner), list(prompts))


def generate(experiment: Experiment, params: Any, prompt: str, seed: int = 0, plan: Plan | None = None,
             progress: bool = False) -> tuple[np.ndarray, Plan]:
    """Samples one video for `prompt`; returns uint8 frames [F, H, W, 3] and the plan used."""
    prompt = check_prompt(prompt)
    if plan is None:
        from dysen_jax.planner.base import planner_from_config

        plan = planner_from_config(experiment.config.planner).plan(prompt)
    return generate_batch(experiment, params, [prompt], [plan], [seed], progress)[0], plan


def decode_latents(codec: Any, latents: jax.Array) -> jax.Array:
    """Scaled latents [B, F, h, w, C] -> video [B, F, H, W, 3] in [-1, 1] with the codec's VAE (jitted)."""
    return _jitted_decode(codec)(codec.params, latents)


@functools.lru_cache(maxsize=4)
def _jitted_decode(codec: Any) -> Any:
    return jax.jit(codec.decode)


def output_paths(output: str) -> dict[str, str]:
    stem = os.path.splitext(output)[0]
    return {"video": output, "plan": stem + ".dsg.json", "picture": stem + ".dsg.png"}


def write_outputs(experiment: Experiment, prompt: str, plan: Plan, frames: np.ndarray, output: str) -> dict[str, str]:
    """The video, the DSG picture and (last, atomically: it marks the output finished) the plan JSON."""
    from dysen_jax.dsg.render import render_dsg

    paths = output_paths(output)
    write_video(output, frames, fps=int(experiment.config.sample.fps), scale=4)
    merged = plan.dsg.merged()
    render_dsg(merged, paths["picture"], frames=frames, frame_steps=frame_steps(merged, len(frames)),
               clip_frames=int(experiment.spec.dsg.num_frames), title=prompt)
    with open(paths["plan"] + ".tmp", "w") as f:
        json.dump(plan.to_json(), f, indent=1)
    os.replace(paths["plan"] + ".tmp", paths["plan"])
    logs.info(f"sample: {prompt!r} -> {', '.join(paths.values())}")
    return paths


def generate_to_files(experiment: Experiment, params: Any, prompt: str, output: str, seed: int = 0,
                      progress: bool = False) -> dict[str, str]:
    """generate() then write the video, the plan JSON and the DSG picture next to it."""
    frames, plan = generate(experiment, params, prompt, seed=seed, progress=progress)
    return write_outputs(experiment, prompt, plan, frames, output)


def read_prompts(path: str) -> list[tuple[int, str]]:
    """(line number, prompt) of each non-blank line of `path`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--prompts={path}: no such file (one prompt per line)")
    with open(path, encoding="utf-8") as f:
        prompts = [(i, line.strip()) for i, line in enumerate(f, start=1) if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts={path} holds no prompt: write one prompt per line")
    return prompts


def numbered_output(output: str, line: int) -> str:
    stem, ext = os.path.splitext(output)
    return f"{stem}_{line:04d}{ext}"


def sample_prompts_file(experiment: Experiment, params: Any, prompts_file: str, output: str, seed: int = 0,
                        progress: bool = False) -> dict[str, int]:
    """Every prompt of `prompts_file` to `numbered_output(output, line)` with seed `seed + line - 1`, in batches
    of sample.batch_size. Outputs whose plan JSON exists are skipped (a rerun resumes); prompts that fail
    (planning or sampling) are appended to `<output stem>.failures.jsonl` with the stage and error."""
    items = read_prompts(prompts_file)
    failures_path = os.path.splitext(output)[0] + ".failures.jsonl"
    if os.path.exists(failures_path):
        os.remove(failures_path)  # this run retries them
    todo = [(line, p) for line, p in items if not os.path.exists(output_paths(numbered_output(output, line))["plan"])]
    counts = {"prompts": len(items), "skipped": len(items) - len(todo), "written": 0, "failed": 0}

    def fail(line: int, prompt: str, stage: str, error: str) -> None:
        counts["failed"] += 1
        with open(failures_path, "a") as f:
            f.write(json.dumps({"line": line, "prompt": prompt, "stage": stage, "error": error}) + "\n")

    batch_size = max(1, int(experiment.config.sample.get("batch_size", 1)))
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    for batch in tqdm(batches, desc="prompts", disable=not progress or len(batches) < 2):
        planned = []
        for (line, prompt), outcome in zip(batch, plan_prompts(experiment, [p for _, p in batch])):
            if outcome.plan is None:
                fail(line, prompt, "plan", "; ".join(outcome.errors) or outcome.source)
            else:
                planned.append((line, prompt, outcome.plan))
        if not planned:
            continue
        try:
            videos = generate_batch(experiment, params, [p for _, p, _ in planned], [pl for _, _, pl in planned],
                                    [seed + line - 1 for line, _, _ in planned], progress)
        except (DSGError, ValueError) as err:  # e.g. a plan larger than dsg.max_nodes: the whole batch
            for line, prompt, _ in planned:
                fail(line, prompt, "sample", str(err))
            continue
        for (line, prompt, plan), frames in zip(planned, videos):
            write_outputs(experiment, prompt, plan, frames, numbered_output(output, line))
            counts["written"] += 1
    logs.info(f"sample: {counts['prompts']} prompts: {counts['written']} written, {counts['skipped']} already done, "
              f"{counts['failed']} failed" + (f" (see {failures_path})" if counts["failed"] else ""))
    return counts


def load_params(experiment: Experiment, workdir: str, use_ema: bool = True) -> Any:
    """The (EMA) params of the newest checkpoint in <workdir>/checkpoints, on one device (only they are
    read, not the optimizer state)."""
    from flax.traverse_util import unflatten_dict

    from dysen_jax.training import checkpoint

    shapes = jax.eval_shape(lambda k: init_params(experiment, k), jax.random.PRNGKey(0))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    name = "ema_params" if use_ema else "params"
    loaded, missing, unused = checkpoint.restore_matching_params(
        workdir, checkpoint.abstract_like(shapes, jax.tree.map(lambda _: device, shapes)), name, what="--workdir")
    if missing:
        raise ValueError(f"the checkpoint in {workdir} lacks {len(missing)} params of this config's model (e.g. "
                         f"{', '.join(missing[:3])}): sample with the config it was trained with")
    if unused:
        raise ValueError(f"the checkpoint in {workdir} has {len(unused)} params this config's model lacks (e.g. "
                         f"{', '.join(unused[:3])}): sample with the config it was trained with")
    logs.info(f"loaded {name} from {workdir}")
    return unflatten_dict(loaded, sep="/")


def apply_sampling_flags(config: Any, flag_values: Any) -> None:
    """The sampling flags (cli.SAMPLING_FLAGS) that were given override config.sample / config.planner."""
    from dysen_jax.cli import SAMPLING_FLAGS

    for name, key in SAMPLING_FLAGS.items():
        value = getattr(flag_values, name)
        if value is not None:
            section, field = key.split(".")
            config[section][field] = value


def main(argv: list[str]) -> None:
    del argv
    from dysen_jax.cli import FLAGS

    if os.path.splitext(FLAGS.output)[1].lower() not in VIDEO_EXTENSIONS:
        raise SystemExit(f"--output={FLAGS.output}: use a .mp4 or .gif file name")
    if FLAGS.prompt is not None and FLAGS.prompts is not None:
        raise SystemExit("sample: give --prompt TEXT or --prompts FILE, not both")
    try:
        experiment = load_experiment(FLAGS.config, FLAGS.workdir)
        apply_sampling_flags(experiment.config, FLAGS)
        video_frames(experiment)            # bad --num_frames fails before the checkpoint loads
        sampler_settings(experiment)
        if FLAGS.prompts is not None:
            read_prompts(FLAGS.prompts)
            params = load_params(experiment, FLAGS.workdir)
            counts = sample_prompts_file(experiment, params, FLAGS.prompts, FLAGS.output, seed=FLAGS.seed,
                                         progress=True)
            if counts["failed"]:
                raise SystemExit(1)
            return
        prompt = check_prompt(FLAGS.prompt if FLAGS.prompt is not None else experiment.config.sample.prompt)
        params = load_params(experiment, FLAGS.workdir)
        generate_to_files(experiment, params, prompt, FLAGS.output, seed=FLAGS.seed, progress=True)
    except (DSGError, ValueError, FileNotFoundError) as err:
        raise SystemExit(f"sample: {err}") from err


if __name__ == "__main__":
    from dysen_jax.cli import run

    run(main, extra_flags=("workdir", "prompt", "output", "seed", "sampling"), required=("workdir",))
