"""CLIP's BPE tokenizer built offline from the merges file that open-clip-torch ships.

The vocabulary is rebuilt exactly as OpenAI CLIP's SimpleTokenizer does (256 byte symbols, their
'</w>' forms, the first 48894 merges joined, then <|startoftext|> and <|endoftext|>: 49408 ids)
and handed to transformers.CLIPTokenizer as in-memory `vocab=`/`merges=`. (In transformers 5 the
old `vocab_file=`/`merges_file=` keywords are silently ignored and give a 3-token vocabulary.)
"""

from __future__ import annotations

import functools
import gzip
from typing import Any, Sequence

import numpy as np

from dysen_jax.text.assets import clip_bpe_path

BOS_ID = 49406       # <|startoftext|>
EOS_ID = 49407       # <|endoftext|>
VOCAB_SIZE = 49408
NUM_MERGES = 49152 - 256 - 2   # as in openai/CLIP: merges[1 : 49152 - 256 - 2 + 1]
SD1_PAD_ID = EOS_ID  # diffusers SD 1.x tokenizer pads with <|endoftext|>
SD2_PAD_ID = 0       # SD 2.x / OpenCLIP pad with id 0 ("!")

__all__ = ["BOS_ID", "EOS_ID", "VOCAB_SIZE", "SD1_PAD_ID", "SD2_PAD_ID", "clip_bpe_path", "bytes_to_unicode",
           "clip_vocab_and_merges", "clip_tokenizer", "tokenize"]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character table (256 entries, in CLIP's order)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_vocab_and_merges(bpe_path: str | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(token -> id, merges in rank order) exactly as openai/CLIP's SimpleTokenizer builds them."""
    with gzip.open(bpe_path or clip_bpe_path()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{bpe_path}: expected {NUM_MERGES} merge pairs, got a different file")
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == VOCAB_SIZE, len(vocab)
    return vocab, merges  # type: ignore[return-value]


@functools.lru_cache(maxsize=2)
def clip_tokenizer(bpe_path: str | None = None) -> Any:
    """A transformers.CLIPTokenizer over the real CLIP vocabulary (cached; built in ~1 s)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges(bpe_path)
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    if tok.bos_token_id != BOS_ID or tok.eos_token_id != EOS_ID or tok.vocab_size != VOCAB_SIZE:
        raise RuntimeError(f"CLIPTokenizer built wrongly (bos={tok.bos_token_id}, eos={tok.eos_token_id}, "
                           f"vocab={tok.vocab_size}): has transformers' constructor changed?")
    return tok


def tokenize(texts: str | Sequence[str], max_len: int = 77, pad_id: int = SD1_PAD_ID) -> np.ndarray:
    """Texts -> int32 [B, max_len]: <|startoftext|> ids <|endoftext|> then `pad_id`, as Stable Diffusion feeds CLIP.

    Long texts are truncated to max_len with <|endoftext|> kept last. pad_id is 49407 for SD 1.x
    (transformers' default) and 0 for SD 2.x / OpenCLIP; with the causal text encoder it only
    changes the features at padded positions, which the UNet still cross-attends to.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    encoded = clip_tokenizer()(texts, truncation=True, max_length=max_len)["input_ids"]
    out = np.full((len(texts), max_len), pad_id, np.int32)
    for row, ids in zip(out, encoded):
        row[:len(ids)] = ids
    return out
