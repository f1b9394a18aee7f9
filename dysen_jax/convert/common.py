"""Shared pieces of the PyTorch -> Flax weight converters: safe reading, layout transforms, checks, saving.

Checkpoints are read from safetensors only (a diffusers/transformers folder or a single file;
pickled .bin/.pt/.ckpt files are refused because loading them can run code). A converter builds a
flat {flax/param/path: array} dict from the torch names with `TorchState.take`, and `to_params`
checks it against the Flax model's own parameter shapes: every missing, unexpected or mis-shaped
tensor is named in one error. The result is saved as `params.msgpack` + `meta.json`, which a
config's `init_from` points to.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any, Iterable, Mapping

import numpy as np

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
PARAMS_FILE = "params.msgpack"
META_FILE = "meta.json"


class ConversionError(ValueError):
    """A checkpoint that does not match the model; the message names the tensors and the fix."""


def _safetensor_files(path: str, subfolder: str = "") -> list[str]:
    if os.path.isfile(path):
        if path.endswith(PICKLE_SUFFIXES):
            raise ConversionError(f"{path} is a pickle checkpoint, which can run code when loaded: convert it to "
                                  "safetensors first (e.g. diffusers/transformers save_pretrained(safe_serialization=True))")
        if not path.endswith(".safetensors"):
            raise ConversionError(f"{path} is not a .safetensors file")
        return [path]
    folder = os.path.join(path, subfolder) if subfolder and os.path.isdir(os.path.join(path, subfolder)) else path
    if not os.path.isdir(folder):
        raise ConversionError(f"{path} is neither a .safetensors file nor a folder")
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        pickles = [f for f in os.listdir(folder) if f.endswith(PICKLE_SUFFIXES)]
        hint = (f" (found pickle files {pickles}: re-save them as safetensors)" if pickles else "")
        raise ConversionError(f"no .safetensors file in {folder}{hint}")
    return files


def read_config(path: str, subfolder: str = "") -> dict[str, Any]:
    """config.json of a diffusers/transformers folder ({} for a single file or when absent)."""
    if os.path.isfile(path):
        return {}
    for folder in (os.path.join(path, subfolder), path):
        candidate = os.path.join(folder, "config.json")
        if os.path.exists(candidate):
            with open(candidate) as f:
                return json.load(f)
    return {}


class TorchState:
    """The tensors of a checkpoint by name (numpy float32), tracking which ones a converter used."""

    def __init__(self, tensors: Mapping[str, np.ndarray], source: str = "<memory>") -> None:
        self.tensors = dict(tensors)
        self.source = source
        self.used: set[str] = set()

    @classmethod
    def load(cls, path: str, subfolder: str = "") -> "TorchState":
        from safetensors.numpy import load_file

        tensors: dict[str, np.ndarray] = {}
        for file in _safetensor_files(path, subfolder):
            tensors.update(load_file(file))
        return cls({k: np.asarray(v, np.float32) if v.dtype != np.float32 else v for k, v in tensors.items()}, path)

    def has(self, name: str) -> bool:
        return name in self.tensors

    def take(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise ConversionError(f"{self.source}: tensor {name!r} is missing (is --kind right for this checkpoint?)")
        self.used.add(name)
        return self.tensors[name]

    def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.tensors if n.startswith(prefix))

    def unused(self, ignore: Iterable[str] = ()) -> list[str]:
        ignored = tuple(ignore)
        return sorted(n for n in self.tensors if n not in self.used and not any(i in n for i in ignored))


# --- layouts: torch -> flax -------------------------------------------------------------------------------
def linear(w: np.ndarray) -> np.ndarray:
    """nn.Linear weight [out, in] -> Dense kernel [in, out]."""
    return np.ascontiguousarray(w.T)


def conv(w: np.ndarray) -> np.ndarray:
    """Conv weight [out, in, *k] -> flax kernel [*k, in, out] (1D, 2D or 3D)."""
    return np.ascontiguousarray(np.moveaxis(w, (0, 1), (-1, -2)))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': x}} -> {'a/b': x}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def to_params(converted: Mapping[str, np.ndarray], expected: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The nested params tree, after checking names and shapes against `expected` (a params tree of
    ShapeDtypeStructs or arrays, e.g. from jax.eval_shape of the model's init)."""
    want = {k: tuple(v.shape) for k, v in flatten(expected).items()}
    missing = sorted(set(want) - set(converted))
    unexpected = sorted(set(converted) - set(want))
    misshaped = sorted(f"{k}: checkpoint {tuple(np.shape(converted[k]))} vs model {want[k]}"
                       for k in set(want) & set(converted) if tuple(np.shape(converted[k])) != want[k])
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} param(s): {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:12])}{' ...' if len(unexpected) > 12 else ''}")
    if misshaped:
        problems.append(f"mis-shaped {len(misshaped)}: {'; '.join(misshaped[:12])}")
    if problems:
        raise ConversionError(f"{what}: " + " | ".join(problems) + " (check that the model config matches the checkpoint)")
    return unflatten({k: np.asarray(v, np.float32) for k, v in converted.items()})


def check_all_used(state: TorchState, ignore: Iterable[str] = ()) -> None:
    """Raises naming the checkpoint tensors the converter did not use (a wrong --kind or config)."""
    left = state.unused(ignore)
    if left:
        raise ConversionError(f"{state.source}: {len(left)} checkpoint tensor(s) were not used: "
                              f"{', '.join(left[:12])}{' ...' if len(left) > 12 else ''} (wrong --kind or model config?)")


def save_params(params: Mapping[str, Any], out_dir: str, meta: Mapping[str, Any]) -> str:
    """Writes params.msgpack and meta.json (kind, source, model config) into out_dir; returns the folder."""
    from flax import serialization

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, PARAMS_FILE + ".tmp"), "wb") as f:
        f.write(serialization.msgpack_serialize(dict(params)))
    os.replace(os.path.join(out_dir, PARAMS_FILE + ".tmp"), os.path.join(out_dir, PARAMS_FILE))
    with open(os.path.join(out_dir, META_FILE), "w") as f:
        json.dump(dict(meta), f, indent=1, sort_keys=True)
    return out_dir


def load_params(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params, meta) saved by save_params; `path` is the folder or its params.msgpack."""
    from flax import serialization

    folder = os.path.dirname(path) if path.endswith(PARAMS_FILE) else path
    file = os.path.join(folder, PARAMS_FILE)
    if not os.path.exists(file):
        raise FileNotFoundError(f"{file} does not exist: write it with `python -m dysen_jax.convert --from ... --out {folder}`")
    with open(file, "rb") as f:
        params = serialization.msgpack_restore(f.read())
    meta_file = os.path.join(folder, META_FILE)
    meta = json.load(open(meta_file)) if os.path.exists(meta_file) else {}
    return params, meta
