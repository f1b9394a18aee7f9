"""Train Dysen-VDM: tf.data -> jitted sharded train step -> orbax checkpoints, resumable.

    python -m dysen_jax.train --config=configs/tiny.py --workdir=DIR [--config.train.num_steps=N]

Params and optimizer state are FSDP-sharded over the ("data", "fsdp") mesh, the batch over both
axes. The run resumes automatically from the newest checkpoint in DIR/checkpoints, and an
interrupted run resumed this way ends with the same params as an uninterrupted one (the step's
randomness is fold_in(seed, step) and the input pipeline skips the batches already seen).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dysen_jax import logs
from dysen_jax.data.pipeline import make_dataset
from dysen_jax.experiment import Experiment, init_params, load_experiment
from dysen_jax.models.init_compile import jit_init
from dysen_jax.parallel.distributed import local_input
from dysen_jax.parallel import logical
from dysen_jax.parallel.mesh import batch_sharding, make_mesh, replicated
from dysen_jax.training import checkpoint
from dysen_jax.training.summaries import MetricWriter  # noqa: F401  (re-exported: other stages log with it)
from dysen_jax.training.flops import compiled_flops, peak_flops_per_device
from dysen_jax.training.monitor import NonFiniteGuard, ThroughputMeter
from dysen_jax.training.preemption import PreemptionWatch
from dysen_jax.training.state import frozen_params, TrainState, create_train_state, make_optimizer
from dysen_jax.training.step import make_train_step


def state_layout(experiment: Experiment, optimizer: Any, mesh: Any) -> tuple[Callable, TrainState, Any]:
    """(init function, abstract train state, its shardings under config.mesh's logical axis rules)
    without allocating anything."""

    frozen = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), frozen_parts(experiment))

    def init(key: jax.Array) -> TrainState:  # frozen parts as zeros of their shapes: with_frozen fills them
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), frozen)
        return create_train_state(init_params(experiment, key), optimizer, zeros)

    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    rules = logical.ShardingRules.from_config(experiment.config.mesh)
    return init, abstract, logical.state_shardings(abstract, mesh, rules)


def frozen_parts(experiment: Experiment) -> dict[str, Any]:
    """Params the step needs but never trains, kept in `TrainState.frozen`: the VAE of a latent model."""
    codec = getattr(experiment, "codec", None)
    return {} if codec is None else {"vae": codec.params}


def with_frozen(state: TrainState, experiment: Experiment, shardings: Any) -> TrainState:
    """The state with its frozen parts loaded and laid out as `shardings.frozen` says."""
    parts = frozen_parts(experiment)
    if not parts:
        return state
    placed = jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), parts, shardings.frozen)
    return state.replace(frozen=placed)


def fresh_state(experiment: Experiment, init: Callable, shardings: Any) -> TrainState:
    """`init` run straight into its sharded layout, then the frozen parts and the config's pretrained
    parts (previous stage, converted weights: training/pretrained.py) loaded in."""
    from dysen_jax.training.pretrained import with_pretrained

    state = jit_init(init, out_shardings=shardings)(jax.random.PRNGKey(experiment.config.seed))
    return with_pretrained(with_frozen(state, experiment, shardings), experiment.config, shardings)


def initial_state(experiment: Experiment, optimizer: Any, mesh: Any) -> tuple[TrainState, Any]:
    """A fresh train state in its sharded layout (`fresh_state`), and that layout."""
    init, _, shardings = state_layout(experiment, optimizer, mesh)
    return fresh_state(experiment, init, shardings), shardings


def to_global_batch(batch: dict[str, np.ndarray], sharding: Any) -> dict[str, jax.Array]:
    """This process's numpy batch -> global jax arrays sharded over the batch axes."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def experiment_model_input(experiment: Experiment) -> Callable[[Any, dict, jax.Array], jax.Array] | None:
    """What the step diffuses: None = the pixels; for a latent model, VAE latents of the batch (stored in
    the records, or encoded in the step with the frozen VAE params in `state.frozen["vae"]`)."""
    codec = getattr(experiment, "codec", None)
    if codec is None:
        return None
    from dysen_jax.training.latents import model_input

    return lambda frozen, batch, key: model_input(codec, frozen["vae"], batch, key)


def sample_to_tensorboard(experiment: Experiment, state: TrainState, writer: MetricWriter, step: int) -> None:
    """One clip of config.sample.prompt from the EMA params, as a GIF summary (single-process runs:
    the sampler gathers the params on one host)."""
    if jax.process_count() > 1:
        return
    from dysen_jax.sample import generate

    config = experiment.config
    frames, _ = generate(experiment, state.ema_params, config.sample.prompt, seed=config.seed)
    writer.video(step, "sample", frames, fps=int(config.sample.fps))


def train(config: Any, workdir: str, show_progress: bool = True) -> dict[str, Any]:
    """Trains to config.train.num_steps (resuming if possible); returns a summary of the run.
    `train.stage` picks what trains: "diffusion" (this loop) or "autoencoder" (stage I, VidRD's
    temporal VAE decoder: training/autoencoder.py)."""
    stage = str(config.train.get("stage", "diffusion"))
    if stage == "autoencoder":
        from dysen_jax.training.autoencoder import train_autoencoder

        return train_autoencoder(config, workdir, show_progress)
    if stage != "diffusion":
        raise ValueError(f"train.stage={stage!r}: use 'diffusion' (stages II/III) or 'autoencoder' (stage I)")
    from tqdm import tqdm

    os.makedirs(workdir, exist_ok=True)
    experiment = load_experiment(config, workdir)
    config = experiment.config
    mesh = make_mesh(config.mesh)
    optimizer = make_optimizer(config.train, frozen_params(config))
    num_batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if config.train.batch_size % num_batch_shards:
        raise ValueError(f"config.train.batch_size={config.train.batch_size} must be divisible by the "
                         f"{num_batch_shards} data x fsdp devices")

    init, abstract_state, state_shardings = state_layout(experiment, optimizer, mesh)
    manager = checkpoint.checkpoint_manager(workdir, config.train.keep_checkpoints)
    restored = checkpoint.restore_latest(manager, checkpoint.abstract_like(abstract_state, state_shardings))
    if restored is None:  # only a fresh run pays for compiling init
        state = fresh_state(experiment, init, state_shardings)
        start_step = 0
    else:
        state, start_step = restored
        logs.info(f"resumed from step {start_step} in {manager.directory}")
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    logs.info(f"model: {num_params / 1e6:.2f}M params, mesh {dict(mesh.shape)}, "
              f"{jax.device_count()} devices, {jax.process_count()} process(es)")

    data_sharding = batch_sharding(mesh)
    step_fn = jax.jit(
        make_train_step(experiment.model, experiment.schedule, optimizer, config, experiment_model_input(experiment)),
        in_shardings=(state_shardings, data_sharding, replicated(mesh)),
        out_shardings=(state_shardings, replicated(mesh)),
        donate_argnums=(0,))
    base_key = jax.device_put(jax.random.PRNGKey(config.seed + 1), replicated(mesh))
    num_streams = int(config.data.input_streams)  # data order independent of the process count
    input_streams, local_batch = local_input(data_sharding, config.train.batch_size, num_streams)
    dataset = make_dataset(experiment.data_dir, experiment.spec, local_batch, config.seed,
                           start_step=start_step, shuffle_buffer=config.data.shuffle_buffer,
                           num_streams=num_streams, streams=input_streams)
    batches = dataset.as_numpy_iterator()
    batch = to_global_batch(next(batches), data_sharding)
    train_step = step_fn.lower(state, batch, base_key).compile()  # compiled once, also for its FLOP count
    flops = compiled_flops(train_step)
    meter = ThroughputMeter(config.train.batch_size, flops, peak_flops_per_device(config.train) if flops else 0.0)
    writer = MetricWriter(workdir)
    preemption = PreemptionWatch(manager)
    guard = NonFiniteGuard(int(config.train.get("max_nonfinite_steps", 10)))
    history: list[dict[str, float]] = []
    summary: dict[str, Any] = {"start_step": start_step, "num_params": num_params, "preempted": False}
    bar = tqdm(total=config.train.num_steps, initial=start_step, desc="train", unit="step",
               disable=not show_progress or jax.process_index() != 0)
    pending = None  # the newest step's metrics: fetched one step later, so a step is always in flight
    for step in range(start_step, config.train.num_steps):
        batch = batch if batch is not None else to_global_batch(next(batches), data_sharding)
        state, metrics = train_step(state, batch, base_key)
        batch = None
        if pending is not None:
            meter.add(guard.check(jax.device_get(pending), step, manager, state))
        pending = metrics
        bar.update(1)
        done = step + 1
        if done % config.train.log_every == 0 or done == config.train.num_steps or done == start_step + 1:
            meter.add(guard.check(jax.device_get(pending), done, manager, state))
            pending = None
            values = meter.flush()
            history.append({"step": done, **values})
            writer.scalars(done, values)
            bar.set_postfix(loss=f"{values['loss']:.4f}")
            logs.info(f"step {done}: loss {values['loss']:.4f} grad_norm {values['grad_norm']:.3f} "
                      f"{values['steps_per_sec']:.2f} steps/s {values['examples_per_sec']:.1f} examples/s"
                      + (f" MFU {100 * values['mfu']:.1f}%" if values.get("mfu") else "")
                      + (f" skipped {guard.skipped} non-finite" if guard.skipped else ""))
        sample_every = int(config.train.get("sample_every", 0))
        if sample_every and done % sample_every == 0 and done < config.train.num_steps:
            sample_to_tensorboard(experiment, state, writer, done)
        if done % config.train.checkpoint_every == 0 or done == config.train.num_steps:
            checkpoint.save(manager, done, state)
        if preemption.should_stop(done) and done < config.train.num_steps:
            checkpoint.save(manager, done, state, force=True)
            summary["preempted"] = True
            logs.info(f"SIGTERM: saved the checkpoint of step {done} in {manager.directory} and stopped; "
                      "run the same command again to resume")
            break
    if pending is not None:
        meter.add(guard.check(jax.device_get(pending), int(jax.device_get(state.step)), manager, state))
    bar.close()
    preemption.close()
    writer.close()
    manager.wait_until_finished()
    summary.update(final_step=int(jax.device_get(state.step)), history=history, nonfinite_skipped=guard.skipped)
    if (config.train.sample_at_end and jax.process_index() == 0 and start_step < config.train.num_steps
            and not summary["preempted"] and jax.process_count() == 1):
        from dysen_jax.sample import generate_to_files

        out = os.path.join(workdir, "samples", f"step_{summary['final_step']}.mp4")
        generate_to_files(experiment, state.ema_params, config.sample.prompt, out, seed=config.seed)
        summary["sample"] = out
    summary["state"] = state
    return summary


def main(argv: list[str]) -> None:
    del argv
    from dysen_jax.cli import FLAGS

    train(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    from dysen_jax.cli import run

    run(main, extra_flags=("workdir", "distributed"), required=("workdir",))
