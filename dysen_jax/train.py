"""Train Dysen-VDM: tf.data -> jitted sharded train step -> orbax checkpoints, resumable.

    python -m dysen_jax.train --config=configs/tiny.py --workdir=DIR [--config.train.num_steps=N]

Params and optimizer state are FSDP-sharded over the ("data", "fsdp") mesh, the batch over both
axes. The run resumes automatically from the newest checkpoint in DIR/checkpoints, and an
interrupted run resumed this way ends with the same params as an uninterrupted one (the step's
randomness is fold_in(seed, step) and the input pipeline skips the batches already seen).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax
import numpy as np

from dysen_jax import logs
from dysen_jax.data.pipeline import make_dataset
from dysen_jax.experiment import Experiment, init_params, load_experiment
from dysen_jax.parallel.distributed import local_input
from dysen_jax.parallel import logical
from dysen_jax.parallel.mesh import batch_sharding, make_mesh, replicated
from dysen_jax.training import checkpoint
from dysen_jax.training.state import frozen_params, TrainState, create_train_state, make_optimizer
from dysen_jax.training.step import make_train_step


class MetricWriter:
    """Scalars to TensorBoard event files in <workdir>/tb (process 0 only; tensorboardX, no TF needed)."""

    def __init__(self, workdir: str):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(os.path.join(workdir, "tb")) if jax.process_index() == 0 else None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._writer is None:
            return
        for name, value in values.items():
            self._writer.add_scalar(name, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def state_layout(experiment: Experiment, optimizer: Any, mesh: Any) -> tuple[Callable, TrainState, Any]:
    """(init function, abstract train state, its shardings under config.mesh's logical axis rules)
    without allocating anything."""

    def init(key: jax.Array) -> TrainState:
        return create_train_state(init_params(experiment, key), optimizer)

    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    rules = logical.ShardingRules.from_config(experiment.config.mesh)
    return init, abstract, logical.state_shardings(abstract, mesh, rules)


def initial_state(experiment: Experiment, optimizer: Any, mesh: Any) -> tuple[TrainState, Any]:
    """A fresh train state created directly in its sharded layout (with the config's pretrained parts,
    training/pretrained.py), and that layout."""
    from dysen_jax.training.pretrained import with_pretrained

    init, _, shardings = state_layout(experiment, optimizer, mesh)
    state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(experiment.config.seed))
    return with_pretrained(state, experiment.config, shardings), shardings


def to_global_batch(batch: dict[str, np.ndarray], sharding: Any) -> dict[str, jax.Array]:
    """This process's numpy batch -> global jax arrays sharded over the batch axes."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def train(config: Any, workdir: str, show_progress: bool = True) -> dict[str, Any]:
    """Trains to config.train.num_steps (resuming if possible); returns a summary of the run."""
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
        state = jax.jit(init, out_shardings=state_shardings)(jax.random.PRNGKey(config.seed))
        start_step = 0
    else:
        state, start_step = restored
        logs.info(f"resumed from step {start_step} in {manager.directory}")
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    logs.info(f"model: {num_params / 1e6:.2f}M params, mesh {dict(mesh.shape)}, "
              f"{jax.device_count()} devices, {jax.process_count()} process(es)")

    data_sharding = batch_sharding(mesh)
    train_step = jax.jit(
        make_train_step(experiment.model, experiment.schedule, optimizer, config),
        in_shardings=(state_shardings, data_sharding, replicated(mesh)),
        out_shardings=(state_shardings, replicated(mesh)),
        donate_argnums=(0,))
    base_key = jax.device_put(jax.random.PRNGKey(config.seed + 1), replicated(mesh))
    num_streams = int(config.data.get("input_streams", 1))  # data order independent of the process count
    input_streams, local_batch = local_input(data_sharding, config.train.batch_size, num_streams)
    dataset = make_dataset(experiment.data_dir, experiment.spec, local_batch, config.seed,
                           start_step=start_step, shuffle_buffer=config.data.shuffle_buffer,
                           num_streams=num_streams, streams=input_streams)
    writer = MetricWriter(workdir)
    history: list[dict[str, float]] = []
    batches = dataset.as_numpy_iterator()
    window_start, window_steps, window_metrics = time.time(), 0, []
    bar = tqdm(total=config.train.num_steps, initial=start_step, desc="train", unit="step",
               disable=not show_progress or jax.process_index() != 0)
    for step in range(start_step, config.train.num_steps):
        state, metrics = train_step(state, to_global_batch(next(batches), data_sharding), base_key)
        if window_metrics:  # keep one step in flight, so the bar counts finished steps, not dispatched ones
            jax.block_until_ready(window_metrics[-1])
        window_metrics.append(metrics)
        window_steps += 1
        bar.update(1)
        done = step + 1
        if done % config.train.log_every == 0 or done == config.train.num_steps or done == start_step + 1:
            fetched = jax.device_get(window_metrics)  # mean over the steps since the last log line
            values = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
            window_metrics = []
            elapsed = time.time() - window_start
            values["steps_per_sec"] = window_steps / max(elapsed, 1e-9)
            window_start, window_steps = time.time(), 0
            history.append({"step": done, **values})
            writer.scalars(done, values)
            bar.set_postfix(loss=f"{values['loss']:.4f}")
            logs.info(f"step {done}: loss {values['loss']:.4f} grad_norm {values['grad_norm']:.3f} "
                      f"{values['steps_per_sec']:.2f} steps/s")
        if done % config.train.checkpoint_every == 0 or done == config.train.num_steps:
            checkpoint.save(manager, done, state)
    bar.close()
    writer.close()
    manager.wait_until_finished()
    summary = {"start_step": start_step, "final_step": int(jax.device_get(state.step)), "history": history,
               "num_params": num_params}
    if config.train.sample_at_end and jax.process_index() == 0 and start_step < config.train.num_steps:
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
