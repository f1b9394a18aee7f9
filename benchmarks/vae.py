"""VAE speed on this machine: encode_video / decode_video compile seconds and frames/s.

    python benchmarks/vae.py [--size=sd] [--resolution=256] [--frames=16] [--batch=1]
                             [--dtype=bfloat16] [--temporal] [--iters=5]

Random weights of the given architecture (speed does not depend on the values): `sd` is the
Stable Diffusion 1.x/2.x VAE (83.7M params), `tiny` the test-sized one. `--temporal` adds the VidRD
temporal decoder blocks. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp

from dysen_jax.models.vae import AutoencoderKL, VAEConfig, add_temporal_params, init_params

SIZES = {"sd": VAEConfig(), "tiny": VAEConfig(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)}


def timed(fn, *args, iters: int) -> tuple[float, float]:
    """(first call seconds, i.e. compile + run; mean seconds of the next `iters` calls)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(iters):
        jax.block_until_ready(fn(*args))
    return first, (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="sd")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--temporal", action="store_true")
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()

    base = SIZES[args.size]
    config = VAEConfig.from_dict(base.to_dict(), temporal_decoder=args.temporal)
    params = init_params(base)
    if args.temporal:
        params = add_temporal_params(params, config)
    model = AutoencoderKL(config, dtype=jnp.dtype(args.dtype))
    video = jnp.zeros((args.batch, args.frames, args.resolution, args.resolution, config.in_channels))
    side = args.resolution // config.downsample_factor
    latents = jnp.zeros((args.batch, args.frames, side, side, config.latent_channels))
    encode = jax.jit(lambda p, v, r: model.apply({"params": p}, v, r, method="encode_video"))
    decode = jax.jit(lambda p, z: model.apply({"params": p}, z, method="decode_video"))
    enc_first, enc_s = timed(encode, params, video, jax.random.PRNGKey(0), iters=args.iters)
    dec_first, dec_s = timed(decode, params, latents, iters=args.iters)
    frames = args.batch * args.frames
    print(json.dumps({
        "benchmark": "vae", "device": str(jax.devices()[0].device_kind), "host": platform.node(),
        "size": args.size, "temporal": args.temporal, "dtype": args.dtype, "resolution": args.resolution,
        "frames": frames, "num_params": int(sum(x.size for x in jax.tree_util.tree_leaves(params))),
        "encode_compile_s": round(enc_first - enc_s, 2), "encode_frames_per_s": round(frames / enc_s, 2),
        "decode_compile_s": round(dec_first - dec_s, 2), "decode_frames_per_s": round(frames / dec_s, 2),
    }))


if __name__ == "__main__":
    main()
