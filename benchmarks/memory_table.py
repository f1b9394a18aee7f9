"""Per-device memory of a config's training on N-device meshes: params, gradients, optimizer state,
EMA, the frozen VAE, and an activation estimate, from `jax.eval_shape` and the sharding rules.

    python benchmarks/memory_table.py --config=configs/paper.py --devices 16 64 [--activations=compile|none]

Nothing is allocated and no N-device machine is needed: the train state is traced abstractly
(`jax.eval_shape`), each array's PartitionSpec comes from `dysen_jax.parallel.logical` for a mesh
given by its axis sizes only, and the per-device block of every array is computed from the spec.
Rows per N: data parallel only (the one-device footprint), the config's mesh, fsdp=16, and
fsdp=8 x tensor=2 (data = the rest each time).

Activations are an *estimate*: XLA:CPU compiles the denoiser's forward + backward for one clip on
one device (`jax.jit(jax.grad(...)).lower(...).compile().memory_analysis()`: temp bytes, i.e. the
buffers kept for the backward pass plus workspace, not params or gradients), times the per-device
micro-batch (global batch / (data x fsdp) / train.grad_accum_steps). GPU/TPU compilers schedule differently and remat
(`model.rgtrm_remat`) changes it; with tensor > 1 the figure is an upper bound (the hidden-width
activations of the split layers are divided by tensor, the rest is not). Prints a Markdown table
and writes it as JSON (--json).

CLIP as text encoder needs converted weights (`model.text_encoder_path`); as in
tests/test_paper_configs.py the word-level encoder of the same width / depth with CLIP's
vocabulary stands in for it (same parameter count within 1%), and it stays frozen as CLIP is
(`training.state.frozen_params` of the original config: no optimizer state for it).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # dysen_jax, configs

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from dysen_jax.data.records import RecordSpec  # noqa: E402
from dysen_jax.models import vae as vae_lib  # noqa: E402
from dysen_jax.models.denoiser import build_denoiser  # noqa: E402
from dysen_jax.parallel.logical import ShardingRules, shard_shape, state_specs  # noqa: E402
from dysen_jax.parallel.mesh import MESH_AXES, mesh_shape  # noqa: E402
from dysen_jax.training.state import create_train_state, frozen_params, make_optimizer  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/paper.py.")
flags.DEFINE_list("devices", ["16", "64"], "Device counts: --devices 16 64 or --devices=16,64.")
flags.DEFINE_enum("activations", "compile", ["compile", "none"], "compile: estimate activations by compiling "
                  "one clip's forward+backward on this CPU (minutes for paper size); none: skip.")
flags.DEFINE_string("json", "memory_table.json", "Where to write the table as JSON.")
FLAGS = flags.FLAGS

CLIP_VOCAB = 49408
GIB = 2 ** 30
SDS = jax.ShapeDtypeStruct


def stand_in_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config with a pretrained text tower replaced by the word-level one of its size."""
    config = ml_collections.ConfigDict(config.to_dict())
    if str(config.model.get("text_encoder", "tiny")) != "tiny":
        config.model.text_encoder = "tiny"
        config.model.vocab_size = CLIP_VOCAB
    elif config.model.vocab_size == -1:
        config.model.vocab_size = 200  # the dynamic-shapes vocabulary is ~130 words + 64 hash buckets
    return config


def denoiser_inputs(config: ml_collections.ConfigDict, batch: int) -> tuple[SDS, ...]:
    """(x, timesteps, text tokens, dsg dict) shapes: latents when config.model.latent, else pixels."""
    spec = RecordSpec.from_config(config)
    if config.model.get("latent", "vae" in config and config.model.get("in_channels", 3) != 3):
        factor = vae_lib.VAEConfig.from_dict(config.vae.to_dict()).downsample_factor
        size = config.data.resolution // factor
        x = SDS((batch, config.data.num_frames, size, size, config.model.in_channels), jnp.float32)
    else:
        x = SDS((batch, *spec.video_shape), jnp.float32)
    dtypes = spec.dsg.array_dtypes()
    dsg = {k: SDS((batch, *shape), jnp.bool_ if dtypes[k] == np.bool_ else jnp.int32)
           for k, shape in spec.dsg.array_shapes().items()}
    return x, SDS((batch,), jnp.int32), SDS((batch, spec.text_len), jnp.int32), dsg


def abstract_train_state(config: ml_collections.ConfigDict, frozen: tuple[str, ...]):
    """(denoiser, abstract TrainState) as train.state_layout builds it, without allocating."""
    model = build_denoiser(config.model)
    x, t, tokens, dsg = denoiser_inputs(config, 1)
    optimizer = make_optimizer(config.train, frozen)

    def init(key):
        ones = jnp.ones((1,), jnp.bool_)
        params = model.init(key, jnp.zeros(x.shape), jnp.zeros(t.shape, t.dtype), jnp.zeros(tokens.shape, tokens.dtype),
                            {k: jnp.zeros(v.shape, v.dtype) for k, v in dsg.items()}, use_text=ones, use_dsg=ones,
                            deterministic=True)["params"]
        return create_train_state(params, optimizer)

    return model, jax.eval_shape(init, jax.random.PRNGKey(0))


def per_device_bytes(tree, specs, sizes: dict[str, int]) -> int:
    is_spec = lambda s: isinstance(s, jax.sharding.PartitionSpec)  # noqa: E731
    return sum(math.prod(shard_shape(x.shape, s, sizes)) * np.dtype(x.dtype).itemsize
               for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(specs, is_leaf=is_spec)))


def total_bytes(tree) -> int:
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def vae_bytes(config: ml_collections.ConfigDict) -> int:
    """The frozen VAE of latent configs (kept outside the train state, replicated); 0 in pixel space."""
    if "vae" not in config or not config.model.get("latent", config.model.get("in_channels", 3) != 3):
        return 0
    return total_bytes(vae_lib.param_shapes(vae_lib.VAEConfig.from_dict(config.vae.to_dict())))


def activation_bytes_per_clip(model, config: ml_collections.ConfigDict, params) -> tuple[int, float]:
    """XLA:CPU temp bytes of one clip's forward + backward through the denoiser (and compile seconds)."""
    x, t, tokens, dsg = denoiser_inputs(config, 1)

    def loss(params, x, t, tokens, dsg):
        keep = jnp.ones((x.shape[0],), jnp.bool_)
        out = model.apply({"params": params}, x, t, tokens, dsg, use_text=keep, use_dsg=keep, deterministic=True)
        return jnp.mean(jnp.square(out.astype(jnp.float32)))

    started = time.time()
    compiled = jax.jit(jax.grad(loss)).lower(params, x, t, tokens, dsg).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes), time.time() - started


def candidate_meshes(config: ml_collections.ConfigDict, devices: int) -> list[dict[str, int]]:
    """Data parallel only, the config's mesh, fsdp=16, fsdp=8 x tensor=2 (those that fit `devices`)."""
    wanted = [{"data": -1, "fsdp": 1, "tensor": 1}, config.mesh.to_dict(), {"data": -1, "fsdp": 16, "tensor": 1},
              {"data": -1, "fsdp": 8, "tensor": 2}]
    meshes = []
    for cfg in wanted:
        try:
            shape = dict(zip(MESH_AXES, mesh_shape(cfg, devices)))
        except ValueError:
            continue
        if shape not in meshes:
            meshes.append(shape)
    return meshes


def gib(n: float) -> float:
    return round(n / GIB, 2)


def main(argv: list[str]) -> None:
    device_counts = [int(d) for d in FLAGS.devices] + [int(a) for a in argv[1:]]  # `--devices 16 64`
    original = FLAGS.config
    config = stand_in_config(original)
    rules = ShardingRules.from_config(config.mesh)
    frozen = frozen_params(original)
    accum = int(config.train.get("grad_accum_steps", 1))
    model, state = abstract_train_state(config, frozen)
    params_total = total_bytes(state.params)
    vae = vae_bytes(config)
    per_clip, compile_s = (activation_bytes_per_clip(model, config, state.params)
                           if FLAGS.activations == "compile" else (None, 0.0))
    rows = []
    for devices in dict.fromkeys(device_counts):
        for sizes in candidate_meshes(config, devices):
            specs = state_specs(state, sizes, rules)
            batch_shards = sizes["data"] * sizes["fsdp"]
            per_device_batch = config.train.batch_size / batch_shards
            micro_batch = per_device_batch / accum  # clips whose activations are alive at once
            params = per_device_bytes(state.params, specs.params, sizes)
            row = {"devices": devices, "mesh": sizes, "per_device_batch": per_device_batch, "micro_batch": micro_batch,
                   "params": params, "grads": params,  # value_and_grad's output has the params' layout
                   "optimizer": per_device_bytes(state.opt_state, specs.opt_state, sizes),
                   "ema": per_device_bytes(state.ema_params, specs.ema_params, sizes), "vae": vae,
                   "activations_est": None if per_clip is None else int(per_clip * micro_batch)}
            row["total"] = sum(row[k] or 0 for k in ("params", "grads", "optimizer", "ema", "vae", "activations_est"))
            rows.append(row)
    print(f"\n{FLAGS['config'].config_filename}: {params_total / 4 / 1e6:.1f}M params "
          f"({gib(params_total)} GiB fp32), frozen {list(frozen) or 'none'}, global batch {config.train.batch_size}, "
          f"in {accum} micro-batch(es), min_shard_size {rules.min_shard_size}")
    if per_clip is not None:
        print(f"activations: {gib(per_clip)} GiB per clip (XLA:CPU temp bytes of one clip's forward+backward, "
              f"compiled in {compile_s:.0f} s; an estimate, see the docstring)")
    print("\n| devices | data x fsdp x tensor | clips/device (per micro-batch) | params | grads | Adam state | EMA | frozen VAE "
          "| activations (est.) | total |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["mesh"]
        act = "n/a" if r["activations_est"] is None else f"{gib(r['activations_est'])}"
        print(f"| {r['devices']} | {m['data']} x {m['fsdp']} x {m['tensor']} | {r['per_device_batch']:g} "
              f"({r['micro_batch']:g}) "
              f"| {gib(r['params'])} | {gib(r['grads'])} | {gib(r['optimizer'])} | {gib(r['ema'])} | {gib(r['vae'])} "
              f"| {act} | {gib(r['total'])} |")
    print("(GiB per device)")
    with open(FLAGS.json, "w", encoding="utf-8") as f:
        json.dump({"config": FLAGS["config"].config_filename, "params_total_bytes": params_total,
                   "frozen": list(frozen), "global_batch": config.train.batch_size, "grad_accum_steps": accum,
                   "activation_bytes_per_clip_est": per_clip,
                   "activation_method": "XLA:CPU memory_analysis().temp_size_in_bytes of jax.grad of the denoiser "
                                        "for one clip, times clips per device and micro-batch" if per_clip is not None else None,
                   "rows": rows}, f, indent=1)
    print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    from dysen_jax.cli import run_absl

    run_absl(main)
