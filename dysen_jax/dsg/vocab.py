"""An open word vocabulary shared by DSG node labels and the tiny text encoder.

Ids: 0 = padding, 1 = start-of-text, 2 .. 2+len(words)-1 = known words, and every unseen word is
hashed (CRC32 of its lowercase form, stable across processes and machines) into one of
`num_hash_buckets` extra ids. So an unseen word never crashes, two different unseen words share an
id only on a hash collision, and the same unseen word always gets the same id.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Iterable, Sequence

import numpy as np

PAD_ID = 0
BOS_ID = 1
_FIRST_WORD_ID = 2
_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def split_words(text: str) -> list[str]:
    """Lowercase word split used everywhere (punctuation dropped)."""
    return _WORD_RE.findall(text.lower())


class WordVocab:
    """Known words get their own id, unknown words a stable hash bucket (see module docstring)."""

    def __init__(self, words: Sequence[str], num_hash_buckets: int = 64):
        if num_hash_buckets < 1:
            raise ValueError(f"num_hash_buckets={num_hash_buckets} must be >= 1 so unseen words have ids")
        self.words = list(dict.fromkeys(w.lower() for w in words))
        self.num_hash_buckets = int(num_hash_buckets)
        self._ids = {w: i + _FIRST_WORD_ID for i, w in enumerate(self.words)}

    @classmethod
    def from_texts(cls, texts: Iterable[str], num_hash_buckets: int = 64) -> "WordVocab":
        """Vocabulary of every word in `texts`, sorted for determinism."""
        words = sorted({w for text in texts for w in split_words(text)})
        return cls(words, num_hash_buckets)

    @property
    def size(self) -> int:
        """Number of embedding rows a model needs."""
        return _FIRST_WORD_ID + len(self.words) + self.num_hash_buckets

    def word_id(self, word: str) -> int:
        word = word.lower()
        known = self._ids.get(word)
        if known is not None:
            return known
        bucket = zlib.crc32(word.encode("utf-8")) % self.num_hash_buckets
        return _FIRST_WORD_ID + len(self.words) + bucket

    def encode(self, text: str, max_len: int, bos: bool = False) -> np.ndarray:
        """Word ids of `text`, truncated / zero-padded to `max_len` (int32)."""
        ids = ([BOS_ID] if bos else []) + [self.word_id(w) for w in split_words(text)]
        out = np.zeros((max_len,), np.int32)
        out[: min(len(ids), max_len)] = ids[:max_len]
        return out

    def to_json(self) -> dict:
        return {"words": self.words, "num_hash_buckets": self.num_hash_buckets}

    @classmethod
    def from_json(cls, obj: dict) -> "WordVocab":
        return cls(obj["words"], obj["num_hash_buckets"])

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f)

    @classmethod
    def load(cls, path: str) -> "WordVocab":
        with open(path) as f:
            return cls.from_json(json.load(f))
