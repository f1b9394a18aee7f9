"""Sample a video: prompt -> planner -> DSG -> RGTrm + 3D-UNet under DDIM with guidance -> files.

    python -m dysen_jax.sample --config=configs/tiny.py --workdir=DIR --prompt "..." --output out.mp4

Writes the video (mp4 or gif by extension), `out.dsg.json` (the plan, schema of
`python -m dysen_jax.plan`) and `out.dsg.png` (the DSG over time above the frames that show it).
Uses the EMA parameters of the newest checkpoint in DIR/checkpoints. Latent configs (`model.latent`)
run DDIM on the VAE's latents and decode the result to pixels with the config's frozen VAE
(`experiment.codec`) before writing, so the files have the data's pixel resolution either way.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dysen_jax import logs
from dysen_jax.data.video_io import VIDEO_EXTENSIONS, to_uint8, write_video
from dysen_jax.diffusion.samplers import ddim_sample
from dysen_jax.dsg.schema import DSGError, Plan
from dysen_jax.dsg.tensorize import tensorize
from dysen_jax.experiment import Experiment, init_params, load_experiment


def condition_arrays(experiment: Experiment, prompt: str, plan: Plan) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Text tokens [1, S] and DSG arrays [1, ...] for one prompt and its plan."""
    tokens = experiment.spec.encode_caption(prompt, experiment.vocab)
    dsg = tensorize(plan.dsg, experiment.vocab, experiment.spec.dsg)
    return jnp.asarray(tokens)[None], {k: jnp.asarray(v)[None] for k, v in dsg.items()}


def _tile_to(x: jax.Array, batch: int) -> jax.Array:
    return jnp.tile(x, (batch // x.shape[0],) + (1,) * (x.ndim - 1))


@dataclasses.dataclass(frozen=True)
class _ConditionedDenoiser:
    """model.apply with the conditions repeated to the (guidance-doubled) batch.

    A hashable callable, so `Partial(_ConditionedDenoiser(model), params, tokens, dsg)` passes params
    and conditions to the jitted DDIM step as arguments: a new prompt does not recompile.
    """

    model: Any

    def __call__(self, params: Any, tokens: jax.Array, dsg: dict[str, jax.Array], x: jax.Array, t: jax.Array,
                 use_cond: jax.Array) -> jax.Array:
        batch = x.shape[0]
        return self.model.apply({"params": params}, x, t, _tile_to(tokens, batch),
                                {k: _tile_to(v, batch) for k, v in dsg.items()},
                                use_text=use_cond, use_dsg=use_cond, deterministic=True)


def generate(experiment: Experiment, params: Any, prompt: str, seed: int = 0, plan: Plan | None = None,
             progress: bool = False) -> tuple[np.ndarray, Plan]:
    """Samples one clip for `prompt`; returns uint8 frames [F, H, W, 3] and the plan used."""
    from dysen_jax.planner.base import planner_from_config

    if not prompt or not prompt.strip():
        raise ValueError("the prompt is empty: pass --prompt 'a red circle moves left, then ...'")
    config = experiment.config
    if plan is None:
        plan = planner_from_config(config.planner).plan(prompt)
    tokens, dsg = condition_arrays(experiment, prompt, plan)
    denoise = jax.tree_util.Partial(_ConditionedDenoiser(experiment.model), params, tokens, dsg)
    codec = experiment.codec
    # Pixels live in [-1, 1], so x0 estimates are clipped there; scaled latents have no such bound.
    x0 = ddim_sample(denoise, (1, *experiment.input_shape), jax.random.PRNGKey(seed), experiment.schedule,
                     num_steps=config.sample.steps, prediction=config.diffusion.prediction,
                     guidance_scale=config.sample.guidance, eta=config.sample.eta,
                     clip_x0=1.0 if codec is None else None, progress=progress)
    if codec is not None:
        x0 = decode_latents(codec, x0)
    return to_uint8(jax.device_get(x0)[0]), plan


def decode_latents(codec: Any, latents: jax.Array) -> jax.Array:
    """Scaled latents [B, F, h, w, C] -> video [B, F, H, W, 3] in [-1, 1] with the codec's VAE (jitted)."""
    return _jitted_decode(codec)(codec.params, latents)


@functools.lru_cache(maxsize=4)
def _jitted_decode(codec: Any) -> Any:
    return jax.jit(codec.decode)


def generate_to_files(experiment: Experiment, params: Any, prompt: str, output: str, seed: int = 0,
                      progress: bool = False) -> dict[str, str]:
    """generate() then write the video, the plan JSON and the DSG picture next to it."""
    from dysen_jax.dsg.render import render_dsg
    from dysen_jax.dsg.tensorize import frame_steps

    frames, plan = generate(experiment, params, prompt, seed=seed, progress=progress)
    stem = os.path.splitext(output)[0]
    paths = {"video": write_video(output, frames, fps=experiment.config.sample.fps, scale=4),
             "plan": stem + ".dsg.json", "picture": stem + ".dsg.png"}
    with open(paths["plan"], "w") as f:
        json.dump(plan.to_json(), f, indent=1)
    merged = plan.dsg.merged()
    render_dsg(merged, paths["picture"], frames=frames, frame_steps=frame_steps(merged, len(frames)))
    logs.info(f"sample: {prompt!r} -> {', '.join(paths.values())}")
    return paths


def load_params(experiment: Experiment, workdir: str, use_ema: bool = True) -> Any:
    """The (EMA) params of the newest checkpoint in <workdir>/checkpoints, on one device (only they are
    read, not the optimizer state)."""
    from flax.traverse_util import unflatten_dict

    from dysen_jax.training import checkpoint

    shapes = jax.eval_shape(lambda k: init_params(experiment, k), jax.random.PRNGKey(0))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    name = "ema_params" if use_ema else "params"
    loaded, missing = checkpoint.restore_matching_params(
        workdir, checkpoint.abstract_like(shapes, jax.tree.map(lambda _: device, shapes)), name, what="--workdir")
    if missing:
        raise ValueError(f"the checkpoint in {workdir} lacks {len(missing)} params of this config's model (e.g. "
                         f"{', '.join(missing[:3])}): sample with the config it was trained with")
    logs.info(f"loaded {name} from {workdir}")
    return unflatten_dict(loaded, sep="/")


def main(argv: list[str]) -> None:
    del argv
    from dysen_jax.cli import FLAGS

    if os.path.splitext(FLAGS.output)[1].lower() not in VIDEO_EXTENSIONS:
        raise SystemExit(f"--output={FLAGS.output}: use a .mp4 or .gif file name")
    try:
        experiment = load_experiment(FLAGS.config, FLAGS.workdir)
        params = load_params(experiment, FLAGS.workdir)
        prompt = FLAGS.prompt if FLAGS.prompt is not None else experiment.config.sample.prompt
        generate_to_files(experiment, params, prompt, FLAGS.output, seed=FLAGS.seed, progress=True)
    except (DSGError, ValueError, FileNotFoundError) as err:
        raise SystemExit(f"sample: {err}") from err


if __name__ == "__main__":
    from dysen_jax.cli import run

    run(main, extra_flags=("workdir", "prompt", "output", "seed"), required=("workdir",))
