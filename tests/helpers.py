"""Shared test building blocks."""

from __future__ import annotations

from typing import Any

import ml_collections

from configs import tiny


def tiny_test_config(**overrides) -> ml_collections.ConfigDict:
    """configs/tiny.py:smoke (the same programs as the CLI tests, so compiles hit the XLA cache)."""
    c = tiny.get_config("smoke")
    c.train.sample_at_end = False
    for key, value in overrides.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


def run_train_steps(config: ml_collections.ConfigDict, workdir: str, devices: list, mesh_shape: tuple[int, int, int],
                    num_steps: int = 2) -> tuple[Any, list[float], Any]:
    """`num_steps` jitted train steps on a (data, fsdp, tensor) = `mesh_shape` mesh over `devices`, from the
    same initial params and batches whatever the mesh: (final state, losses, state shardings)."""
    import jax

    from dysen_jax import train as train_lib
    from dysen_jax.data.pipeline import make_dataset
    from dysen_jax.experiment import load_experiment
    from dysen_jax.parallel.mesh import batch_sharding, make_mesh, replicated
    from dysen_jax.training.state import make_optimizer
    from dysen_jax.training.step import make_train_step

    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh_shape
    experiment = load_experiment(config, workdir)
    mesh = make_mesh(config.mesh, devices)
    optimizer = make_optimizer(config.train)
    state, shardings = train_lib.initial_state(experiment, optimizer, mesh)
    step = jax.jit(make_train_step(experiment.model, experiment.schedule, optimizer, experiment.config),
                   in_shardings=(shardings, batch_sharding(mesh), replicated(mesh)),
                   out_shardings=(shardings, replicated(mesh)))
    batches = make_dataset(experiment.data_dir, experiment.spec, config.train.batch_size, 0).as_numpy_iterator()
    key = jax.random.PRNGKey(1)
    losses = []
    for _ in range(num_steps):
        state, metrics = step(state, train_lib.to_global_batch(next(batches), batch_sharding(mesh)), key)
        losses.append(float(metrics["loss"]))
    return state, losses, shardings
