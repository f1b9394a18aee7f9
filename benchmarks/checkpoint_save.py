"""Seconds to save a config's whole train state, replicated over D devices, with orbax's default
replica-parallel split of every array and with ours (training/checkpoint.py: only arrays whose
per-replica slice is >= MIN_REPLICA_SLICE_BYTES are split), in one run.

    python benchmarks/checkpoint_save.py --config=configs/tiny.py:smoke [--devices=8] [--saves=3]

No data needed (the state is initialised from the config's shapes, as benchmarks/train_step.py does).
`--devices` fakes that many CPU devices (XLA_FLAGS, set before jax starts) and the mesh is data-parallel
over them, so every array has one replica per device. Prints one JSON line: the first save (which also
compiles orbax's slicing ops) and the mean of the later ones, per setting.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time


def _devices_from_argv(default: int = 8) -> int:
    for arg in sys.argv[1:]:
        if arg.startswith("--devices="):
            return int(arg.split("=", 1)[1])
    return default


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + f" --xla_force_host_platform_device_count={_devices_from_argv()}").strip()

import jax  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from machine import cpu_name  # noqa: E402 - benchmarks/machine.py (the script's folder)
from dysen_jax.experiment import dataless_experiment  # noqa: E402
from dysen_jax.parallel.mesh import make_mesh  # noqa: E402
from dysen_jax.train import initial_state  # noqa: E402
from dysen_jax.training import checkpoint  # noqa: E402
from dysen_jax.training.state import make_optimizer  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Config file.")
flags.DEFINE_integer("devices", 8, "CPU devices to fake; the state is replicated over all of them.")
flags.DEFINE_integer("saves", 3, "Saves per setting (the first also compiles).")
flags.DEFINE_integer("vocab_size", 200, "Vocabulary size to assume (the dynamic-shapes vocab is ~130 + 64).")
FLAGS = flags.FLAGS


def time_saves(state, min_slice_bytes: int, saves: int) -> list[float]:
    """Seconds of each of `saves` saves (to the end of the async write) with that threshold."""
    checkpoint.MIN_REPLICA_SLICE_BYTES = min_slice_bytes
    with tempfile.TemporaryDirectory() as workdir:
        manager = checkpoint.checkpoint_manager(workdir, keep=saves)  # registers the threshold
        seconds = []
        for step in range(1, saves + 1):
            started = time.time()
            checkpoint.save(manager, step, state)
            manager.wait_until_finished()
            seconds.append(time.time() - started)
        manager.close()
    return seconds


def main(argv: list[str]) -> None:
    del argv
    config = FLAGS.config
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
    experiment = dataless_experiment(config, FLAGS.vocab_size)
    state, _ = initial_state(experiment, make_optimizer(config.train), make_mesh(config.mesh))
    jax.block_until_ready(state)
    ours = checkpoint.MIN_REPLICA_SLICE_BYTES
    rows = {}
    for name, threshold in (("orbax_default", 0), ("ours", ours)):
        seconds = time_saves(state, threshold, FLAGS.saves)
        rows[name] = {"min_slice_bytes": threshold, "first_save_s": round(seconds[0], 2),
                      "later_save_s": round(sum(seconds[1:]) / max(len(seconds) - 1, 1), 2)}
    leaves = jax.tree.leaves(state)
    print(json.dumps({
        "config": FLAGS["config"].config_filename, "machine": f"{cpu_name()}, {os.cpu_count()} cpus, "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s)",
        "state_leaves": len(leaves), "state_MB": round(sum(x.nbytes for x in leaves) / 2**20, 2), **rows,
        "later_save_ratio": round(rows["orbax_default"]["later_save_s"] / max(rows["ours"]["later_save_s"], 1e-9), 1)}))


if __name__ == "__main__":
    from dysen_jax.cli import run_absl

    run_absl(main)
