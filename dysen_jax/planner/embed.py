"""Frozen text embeddings for demonstration selection: signed feature hashing, no weights, no downloads.

PromptPG (Lu et al., 2023) scores candidate demonstrations with a small trainable layer on top of
*frozen* BERT embeddings; only that layer (the policy) is trained. No text-encoder weights are
available offline here (and torch is not a run-time dependency), so the frozen encoder is a
deterministic hashed bag of features instead:

* words (lower-cased alphanumeric tokens), weight 1,
* word bigrams, weight 0.5 (word order: "A after B" vs "B after A"),
* character trigrams of each word padded with spaces, weight 0.5 (morphology: "moves"/"moving").

Each feature is hashed with BLAKE2b (stable across processes and Python versions, unlike `hash`)
to a bucket in [0, dim) and a sign (signed hashing keeps collisions unbiased); each of the three
groups is L2-normalised, weighted and summed, and the sum is L2-normalised. The same text always
gives the same vector, so a saved policy re-embeds its candidates at load time instead of
storing their vectors. `EMBEDDING_VERSION` names this recipe in saved policies.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Sequence

import numpy as np

DEFAULT_DIM = 512
EMBEDDING_VERSION = "hashed-words-bigrams-char3-v1"
GROUP_WEIGHTS: dict[str, float] = {"w": 1.0, "b": 0.5, "c": 0.5}
_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    """Lower-cased alphanumeric words of `text`."""
    return _TOKEN.findall(text.lower())


def features(text: str) -> dict[str, list[str]]:
    """The text's features by group: words, word bigrams and character trigrams."""
    words = tokens(text)
    bigrams = [f"{a} {b}" for a, b in zip(words, words[1:])]
    trigrams = [p[i:i + 3] for p in (f" {w} " for w in words) for i in range(len(p) - 2)]
    return {"w": words, "b": bigrams, "c": trigrams}


@functools.lru_cache(maxsize=1 << 16)
def _bucket(feature: str, dim: int) -> tuple[int, float]:
    """The feature's bucket and sign (stable hashing)."""
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dim, (1.0 if (value >> 63) & 1 else -1.0)


@functools.lru_cache(maxsize=1 << 14)
def _embed_one(text: str, dim: int) -> bytes:
    out = np.zeros(dim, np.float64)
    for group, items in features(text).items():
        vec = np.zeros(dim, np.float64)
        for item in items:
            index, sign = _bucket(f"{group}:{item}", dim)
            vec[index] += sign
        norm = np.linalg.norm(vec)
        if norm > 0:
            out += GROUP_WEIGHTS[group] * vec / norm
    norm = np.linalg.norm(out)
    return (out / norm if norm > 0 else out).astype(np.float32).tobytes()


def embed_text(text: str, dim: int = DEFAULT_DIM) -> np.ndarray:
    """The unit-norm float32 vector [dim] of `text` (all zeros for text without words)."""
    if dim < 8:
        raise ValueError(f"embedding dim={dim} is too small: use >= 8 (default {DEFAULT_DIM})")
    return np.frombuffer(_embed_one(text, int(dim)), np.float32).copy()


def embed_texts(texts: Sequence[str], dim: int = DEFAULT_DIM) -> np.ndarray:
    """Unit-norm float32 embeddings [len(texts), dim], one row per text."""
    if not texts:
        return np.zeros((0, dim), np.float32)
    return np.stack([embed_text(t, dim) for t in texts])
