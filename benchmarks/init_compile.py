"""XLA:CPU compile seconds of a config's train-state init and train step, under the options they use.

    python benchmarks/init_compile.py --config=configs/tiny.py:smoke

On CPU most of the compile time of a small model is per param leaf (the smoke model has 534): the
init's random initialisers, and the optimizer / EMA / non-finite guard of the step. Measured here,
in one process on one device, each program lowered and compiled once:

* the init (`train.state_layout`'s function) at XLA's default options and with
  `models/init_compile.py`'s CPU options (what `train.fresh_state` uses), with how long each runs and
  the largest difference of their params (LLVM's passes may change float rounding);
* the train step (`training/step.py`, the non-finite guard as one `lax.cond`), and for comparison the
  same step with the guard as a select per state leaf (its earlier form).

Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from machine import cpu_name  # noqa: E402 - benchmarks/machine.py (the script's folder)
from dysen_jax.experiment import Experiment, dataless_experiment, dummy_inputs  # noqa: E402
from dysen_jax.models.init_compile import CPU_INIT_COMPILE_OPTIONS  # noqa: E402
from dysen_jax.parallel.mesh import make_mesh  # noqa: E402
from dysen_jax.train import state_layout  # noqa: E402
from dysen_jax.training.state import make_optimizer  # noqa: E402
from dysen_jax.training.step import draw_randomness, ema_update, loss_and_grads, loss_fn, make_train_step  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Config file.")
flags.DEFINE_integer("vocab_size", 200, "Vocabulary size to assume (the dynamic-shapes vocab is ~130 + 64).")
FLAGS = flags.FLAGS


def compile_seconds(fn, args: tuple, options: dict | None = None) -> tuple[float, object]:
    """(seconds to lower and compile `jax.jit(fn)` for `args` with XLA `options`, the compiled program)."""
    started = time.time()
    compiled = jax.jit(fn).lower(*args).compile(options)
    return time.time() - started, compiled


def run_seconds(compiled, args: tuple) -> tuple[float, object]:
    started = time.time()
    out = jax.block_until_ready(compiled(*args))
    return time.time() - started, out


def select_guard_step(experiment: Experiment, optimizer: optax.GradientTransformation, config):
    """The train step with its earlier non-finite guard (`jnp.where` per state leaf), for comparison."""

    def loss(params, x0, batch, draws):
        return loss_fn(params, experiment.model, experiment.schedule, config.diffusion.prediction, x0, batch, draws)

    def step(state, batch, base_key):
        _, key_draws = jax.random.split(jax.random.fold_in(base_key, state.step))
        draws = draw_randomness(key_draws, batch["video"], experiment.schedule.num_timesteps, config.diffusion)
        value, grads = loss_and_grads(state.params, loss, batch["video"], batch, draws, 1)
        finite = jnp.isfinite(value) & jnp.isfinite(optax.global_norm(grads))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        updated = state.replace(params=params, opt_state=opt_state,
                                ema_params=ema_update(state.ema_params, params, config.train.ema_decay))
        kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
        return kept.replace(step=state.step + 1), {"loss": value}

    return step


def main(argv: list[str]) -> None:
    del argv
    config = FLAGS.config
    experiment = dataless_experiment(config, FLAGS.vocab_size)
    spec = experiment.spec
    optimizer = make_optimizer(config.train)
    init, _, _ = state_layout(experiment, optimizer, make_mesh(config.mesh, jax.devices()[:1]))
    key = jax.random.PRNGKey(0)
    result = {"config": FLAGS["config"].config_filename,
              "machine": f"{cpu_name()}, {os.cpu_count()} cpus", "backend": jax.default_backend()}
    states = {}
    for name, options in (("default", None), ("cpu_init_options", CPU_INIT_COMPILE_OPTIONS)):
        seconds, compiled = compile_seconds(init, (key,), options)
        run, states[name] = run_seconds(compiled, (key,))
        result[f"init_compile_s_{name}"] = round(seconds, 1)
        result[f"init_run_s_{name}"] = round(run, 3)
    result["param_leaves"] = len(jax.tree.leaves(states["default"].params))
    result["init_max_param_diff"] = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(
        jax.tree.leaves(states["default"].params), jax.tree.leaves(states["cpu_init_options"].params)))
    state, batch = states["default"], dummy_inputs(spec, config.train.batch_size)
    for name, step in (("cond_guard", make_train_step(experiment.model, experiment.schedule, optimizer, config)),
                       ("select_guard", select_guard_step(experiment, optimizer, config))):
        seconds, compiled = compile_seconds(step, (state, batch, key))
        result[f"step_compile_s_{name}"] = round(seconds, 1)
        result[f"step_fusions_{name}"] = compiled.as_text().count("fusion(")
    print(json.dumps(result))


if __name__ == "__main__":
    from dysen_jax.cli import run_absl

    run_absl(main)
