"""Compile time of the paper-size RGTrm's gradient with and without `nn.scan` over its layers.

    python benchmarks/rgtrm_compile.py [--config=configs/paper.py] [--layers=2,12] [--remat=none]

For every (layers, scan, remat) it starts a fresh Python process (no in-memory or persistent XLA
cache), builds RGTrm(width, heads from config.model) with the DSG sizes of config.dsg (batch 1,
M = max_steps, N = max_nodes, W = max_label_words), and times `jax.jit(jax.grad(loss))`: tracing +
lowering, XLA compilation, the lowered program's size, and the step time of the compiled gradient.
Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from dysen_jax.dsg.tensorize import NUM_EDGE_TYPES  # noqa: E402
from dysen_jax.models.rgtrm import RGTrm  # noqa: E402

config_flags.DEFINE_config_file("config", "configs/paper.py", "Config whose model.rgtrm_* and dsg sizes are used.")
flags.DEFINE_string("layers", "2,12", "Comma-separated layer counts (the paper: 12).")
flags.DEFINE_string("remat", "none", "Comma-separated remat options (none, full, dots, dots_no_batch).")
flags.DEFINE_integer("steps", 3, "Timed gradient steps after compilation (median); 0: compile only.")
flags.DEFINE_string("child", "", "Internal: run one measurement 'layers,scan,remat' in this process.")
FLAGS = flags.FLAGS

VOCAB = 1000   # the word-embedding size does not change the program, only one gather's table


def dsg_inputs(batch: int, steps: int, nodes: int, words: int, seed: int = 0) -> tuple[jax.Array, ...]:
    """Random DSG arrays of the given sizes: ~75% of nodes present per step, ~20% edge density."""
    rng = np.random.default_rng(seed)
    node_words = rng.integers(1, VOCAB, (batch, nodes, words)).astype(np.int32)
    node_type = rng.integers(1, 4, (batch, nodes)).astype(np.int32)
    adjacent = rng.random((batch, nodes, nodes)) < 0.2
    edge_type = np.where(adjacent, rng.integers(2, NUM_EDGE_TYPES, (batch, nodes, nodes)), 0).astype(np.int32)
    edge_type[:, np.arange(nodes), np.arange(nodes)] = 1
    node_mask = rng.random((batch, steps, nodes)) < 0.75
    step_mask = np.ones((batch, steps), bool)
    step_time = np.tile(np.arange(steps, dtype=np.int32), (batch, 1))
    return tuple(jnp.asarray(a) for a in (node_words, node_type, edge_type, node_mask, step_mask, step_time))


def measure(layers: int, scan: bool, remat: str) -> dict:
    """One measurement in this process (call it in a fresh one)."""
    c = FLAGS.config
    model = RGTrm(VOCAB, int(c.model.rgtrm_width), layers, int(c.model.rgtrm_heads), scan_layers=scan, remat=remat)
    args = dsg_inputs(1, int(c.dsg.max_steps), int(c.dsg.max_nodes), int(c.dsg.max_label_words))
    # Params from their shapes on the host: no init program to compile.
    shapes = jax.eval_shape(model.init, jax.random.key(0), *args)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(0.02 * rng.standard_normal(s.shape), s.dtype), shapes)

    def loss(p):
        feats, _ = model.apply(p, *args)
        return jnp.mean(jnp.square(feats.astype(jnp.float32)))

    grad = jax.jit(jax.grad(loss))
    started = time.perf_counter()
    lowered = grad.lower(params)
    lower_s = time.perf_counter() - started
    hlo_kb = len(lowered.as_text()) / 1024
    started = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - started
    if FLAGS.steps:
        jax.block_until_ready(compiled(params))
    times = []
    for _ in range(FLAGS.steps):
        started = time.perf_counter()
        jax.block_until_ready(compiled(params))
        times.append(time.perf_counter() - started)
    return {"layers": layers, "scan": scan, "remat": remat, "lower_s": round(lower_s, 2),
            "compile_s": round(compile_s, 2), "hlo_kb": round(hlo_kb, 1),
            "step_ms": round(1000 * float(np.median(times)), 1) if times else None}


def run_child(layers: int, scan: bool, remat: str) -> dict:
    """`measure` in a fresh interpreter with the persistent compilation cache off."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    cmd = [sys.executable, os.path.abspath(__file__), f"--config={FLAGS['config'].config_filename}",
           f"--steps={FLAGS.steps}", f"--child={layers},{int(scan)},{remat}"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.child:
        layers, scan, remat = FLAGS.child.split(",")
        print(json.dumps(measure(int(layers), bool(int(scan)), remat)))
        return
    c = FLAGS.config
    results = [run_child(layers, scan, remat)
               for remat in FLAGS.remat.split(",")
               for layers in (int(x) for x in FLAGS.layers.split(","))
               for scan in (False, True)]
    print(json.dumps({
        "benchmark": "rgtrm_compile", "config": FLAGS["config"].config_filename,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
                   f"{jax.device_count()} {jax.devices()[0].platform} device(s)",
        "jax": jax.__version__, "program": "jit(grad(mean(RGTrm(dsg)^2))) w.r.t. params",
        "shape": {"batch": 1, "M": int(c.dsg.max_steps), "N": int(c.dsg.max_nodes), "W": int(c.dsg.max_label_words),
                  "width": int(c.model.rgtrm_width), "heads": int(c.model.rgtrm_heads)},
        "results": results}))


if __name__ == "__main__":
    from dysen_jax.cli import run_absl

    run_absl(main)
