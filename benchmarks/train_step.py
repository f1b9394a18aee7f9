"""Train-step speed of a config on this machine: compile seconds, steps/s, clips/s and MFU.

    python benchmarks/train_step.py --config=configs/tiny.py [--steps=20]
    python benchmarks/train_step.py --config=configs/tiny.py:small

Uses zero-filled batches of the config's record shapes (no data needed) and the same jitted,
sharded train step as `python -m dysen_jax.train`. MFU = the compiled step's FLOPs (XLA's cost
analysis, per device) x steps/s over this machine's measured float32 matmul peak (a 2048^3 matmul on
one device, training/flops.py), all in one run. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from machine import cpu_name  # noqa: E402 - benchmarks/machine.py (the script's folder)
from dysen_jax.experiment import dataless_experiment, dummy_inputs  # noqa: E402
from dysen_jax.parallel.mesh import batch_sharding, make_mesh, replicated  # noqa: E402
from dysen_jax.train import initial_state  # noqa: E402
from dysen_jax.training.flops import compiled_flops, measure_matmul_peak  # noqa: E402
from dysen_jax.training.state import make_optimizer  # noqa: E402
from dysen_jax.training.step import make_train_step  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Config file.")
flags.DEFINE_integer("steps", 20, "Timed steps after the first (compiling) one.")
flags.DEFINE_integer("vocab_size", 200, "Vocabulary size to assume (the dynamic-shapes vocab is ~130 + 64).")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    del argv
    config = FLAGS.config
    experiment = dataless_experiment(config, FLAGS.vocab_size)
    spec = experiment.spec
    mesh = make_mesh(config.mesh)
    optimizer = make_optimizer(config.train)
    started = time.time()
    state, shardings = initial_state(experiment, optimizer, mesh)
    jax.block_until_ready(state)
    init_seconds = time.time() - started
    step = jax.jit(make_train_step(experiment.model, experiment.schedule, optimizer, config),
                   in_shardings=(shardings, batch_sharding(mesh), replicated(mesh)),
                   out_shardings=(shardings, replicated(mesh)), donate_argnums=(0,))
    batch = jax.device_put(dummy_inputs(spec, config.train.batch_size), batch_sharding(mesh))
    key = jax.random.PRNGKey(0)
    started = time.time()
    compiled = step.lower(state, batch, key).compile()
    compile_seconds = time.time() - started
    state, metrics = compiled(state, batch, key)  # one warm-up step
    jax.block_until_ready(metrics)
    started = time.time()
    for _ in range(FLAGS.steps):
        state, metrics = compiled(state, batch, key)
    jax.block_until_ready(metrics)
    seconds = (time.time() - started) / FLAGS.steps
    flops = compiled_flops(compiled)
    peak = measure_matmul_peak()
    print(json.dumps({
        "config": FLAGS["config"].config_filename, "machine": f"{cpu_name()}, "
        f"{os.cpu_count()} cpus, {jax.device_count()} {jax.devices()[0].platform} device(s)",
        "params_M": round(sum(x.size for x in jax.tree.leaves(state.params)) / 1e6, 3),
        "batch_size": config.train.batch_size, "init_compile_s": round(init_seconds, 1),
        "step_compile_s": round(compile_seconds, 1), "steps_per_s": round(1 / seconds, 3),
        "clips_per_s": round(config.train.batch_size / seconds, 2),
        "step_gflops_per_device": round(flops / 1e9, 2), "achieved_gflops_per_s": round(flops / seconds / 1e9, 2),
        "matmul_peak_gflops_per_s": round(peak / 1e9, 2), "mfu": round(flops / seconds / peak, 4)}))


if __name__ == "__main__":
    from dysen_jax.cli import run_absl

    run_absl(main)
