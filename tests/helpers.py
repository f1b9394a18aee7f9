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


# The temporal conv and attention blocks are ~40% of the smoke train step's XLA compile time:
# `python benchmarks/train_step.py --config=configs/tiny.py:smoke --steps=5` with and without
# `--config.model.temporal_conv=False --config.model.temporal_attention=False` compiled the step in 35.7 s
# and 20.7 s (init: 26.0 s, 14.7 s) on the project's 2-core AMD EPYC. Tests of the train loop's and the
# mesh's mechanics (resume, guards, masks, accumulation, sharding, processes) do not need those blocks;
# the temporal layers have their own tests (test_models.py, test_unet_*.py, test_evaluate.py).
WITHOUT_TEMPORAL_LAYERS = {"model.temporal_conv": False, "model.temporal_attention": False}


def lean_test_config(**overrides) -> ml_collections.ConfigDict:
    """tiny_test_config without the temporal conv / attention blocks (see WITHOUT_TEMPORAL_LAYERS)."""
    return tiny_test_config(**{**WITHOUT_TEMPORAL_LAYERS, **overrides})


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
