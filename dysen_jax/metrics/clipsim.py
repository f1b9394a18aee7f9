"""CLIPSIM: mean CLIP cosine similarity between a video's frames and its caption.

The CLIP model comes from a LOCAL transformers CLIPModel folder (config.json + *.safetensors; no
weights ship offline, nothing is downloaded). It is converted in memory: the text tower with the
repo's CLIPTextTransformer + `convert.text.clip_flat_params` (with text_projection), the vision
tower with `models.clip_vision.CLIPVisionTransformer` + `vision_flat_params` below.

Input convention: videos uint8 [N, F, H, W, 3] (RGB). Frames are centre-cropped to a square,
resized to the model's image_size (bicubic, as CLIPImageProcessor for upsampled frames) and
normalised with CLIP's mean/std. Captions are tokenised with the folder's own tokenizer
(vocab.json + merges.txt) when present, else with OpenAI CLIP's BPE (`text.clip_tokenizer`),
padded with <|endoftext|> to the text tower's max_positions. CLIPSIM(video, caption) =
mean over frames of cos(image_embeds(frame), text_embeds(caption)) (raw cosine, not x100).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dysen_jax.convert.common import (ConversionError, TorchState, check_all_used, conv, linear, read_config,
                                      to_params)
from dysen_jax.convert.text import clip_encoder_layers, clip_flat_params, layer_norm_params, nest_under
from dysen_jax.metrics.batches import map_batches
from dysen_jax.models.clip_vision import CLIPVisionConfig, CLIPVisionTransformer
from dysen_jax.models.text_encoder import CLIPTextConfig, CLIPTextTransformer, l2_normalize

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
VISION_PREFIX = "vision_model."


def vision_flat_params(state: TorchState, config: CLIPVisionConfig) -> dict[str, np.ndarray]:
    """{flax/path: array} of CLIPVisionTransformer from transformers' CLIPModel vision names."""
    take, p = state.take, VISION_PREFIX
    flat = {"patch_embedding/kernel": conv(take(f"{p}embeddings.patch_embedding.weight")),
            "class_embedding": take(f"{p}embeddings.class_embedding"),
            "position_embedding": take(f"{p}embeddings.position_embedding.weight"),
            **nest_under("pre_layrnorm", layer_norm_params(take, state, f"{p}pre_layrnorm")),
            **nest_under("post_layernorm", layer_norm_params(take, state, f"{p}post_layernorm")),
            "visual_projection/kernel": linear(take("visual_projection.weight"))}
    flat.update(clip_encoder_layers(state, f"{p}encoder.layers.", config.num_layers, config.num_heads))
    return flat


def load_clip(path: str) -> tuple[dict[str, Any], CLIPVisionConfig, dict[str, Any], CLIPTextConfig]:
    """(vision params, vision config, text params, text config) of a local transformers CLIPModel folder."""
    if not path or not os.path.isdir(path):
        raise FileNotFoundError(f"evaluate.clip_path={path!r} is not a folder: give a local transformers CLIPModel "
                                "folder (config.json + model.safetensors, e.g. CLIPModel.save_pretrained)")
    hf_config = read_config(path)
    if "vision_config" not in hf_config or "text_config" not in hf_config:
        raise ConversionError(f"{path}/config.json is not a CLIPModel config (needs vision_config and text_config)")
    state = TorchState.load(path)
    if not state.has(f"{VISION_PREFIX}embeddings.patch_embedding.weight") or not state.has("text_projection.weight"):
        raise ConversionError(f"{path}: not a full CLIPModel checkpoint (needs vision_model.* and text_projection)")
    vision_config = CLIPVisionConfig.from_hf_config(hf_config)
    text_config = CLIPTextConfig.from_hf_config(hf_config, projection=True)
    text_config = CLIPTextConfig(**{**text_config.to_dict(), "projection_dim": int(hf_config.get("projection_dim", 512))})
    vision = to_params(vision_flat_params(state, vision_config),
                       jax.eval_shape(CLIPVisionTransformer(vision_config).init, jax.random.key(0),
                                      jnp.zeros((1, vision_config.image_size, vision_config.image_size, 3)))["params"],
                       f"{path} (clip vision)")
    text = to_params(clip_flat_params(state, text_config, "text_model."),
                     jax.eval_shape(CLIPTextTransformer(text_config).init, jax.random.key(0),
                                    jnp.zeros((1, 1), jnp.int32))["params"], f"{path} (clip text)")
    check_all_used(state, ("position_ids", "logit_scale"))
    return vision, vision_config, text, text_config


def preprocess_frames(frames: jax.Array, image_size: int) -> jax.Array:
    """uint8 [B, H, W, 3] -> CLIP-normalised float32 [B, S, S, 3]: centre square crop, bicubic resize."""
    h, w = frames.shape[1:3]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = frames[:, top:top + side, left:left + side].astype(jnp.float32) / 255.0
    if side != image_size:
        x = jax.image.resize(x, (x.shape[0], image_size, image_size, 3), "bicubic", antialias=True)
    return (x - CLIP_MEAN) / CLIP_STD


@functools.lru_cache(maxsize=4)
def _folder_tokenizer(path: str) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab_file=os.path.join(path, "vocab.json"), merges_file=os.path.join(path, "merges.txt"))


def tokenize_captions(captions: Sequence[str], path: str, max_len: int) -> np.ndarray:
    """int32 [N, max_len]: the folder's tokenizer when it has one, else OpenAI CLIP's BPE; padded with EOS."""
    from dysen_jax.text.clip_tokenizer import EOS_ID, tokenize

    if os.path.exists(os.path.join(path, "vocab.json")) and os.path.exists(os.path.join(path, "merges.txt")):
        tok = _folder_tokenizer(path)
        ids = tok(list(captions), truncation=True, max_length=max_len)["input_ids"]
        out = np.full((len(captions), max_len), tok.eos_token_id, np.int32)
        for row, seq in zip(out, ids):
            row[:len(seq)] = seq
        return out
    return tokenize(list(captions), max_len=max_len, pad_id=EOS_ID)


class CLIPSimilarity:
    """(videos uint8 [N, F, H, W, 3], captions [N]) -> CLIPSIM per video [N] (float64)."""

    def __init__(self, model_path: str, batch_size: int = 16, progress: bool = True) -> None:
        self.path = model_path
        vision, self.vision_config, text, self.text_config = load_clip(model_path)
        self.vision_params, self.text_params = jax.device_put(vision), jax.device_put(text)
        self.batch_size = int(batch_size)
        self.progress = progress
        vision_model, text_model = CLIPVisionTransformer(self.vision_config), CLIPTextTransformer(self.text_config)
        size = self.vision_config.image_size
        self._image = jax.jit(lambda p, f: l2_normalize(
            vision_model.apply({"params": p}, preprocess_frames(f, size)).image_embeds))
        self._text = jax.jit(lambda p, ids: l2_normalize(text_model.apply({"params": p}, ids).text_embeds))

    def image_embeddings(self, images: np.ndarray) -> np.ndarray:
        """uint8 [M, H, W, 3] -> unit CLIP image embeddings [M, P]."""
        return map_batches(lambda b: self._image(self.vision_params, b), images, self.batch_size * 4,
                           desc="CLIP images", progress=self.progress)

    def text_embeddings(self, captions: Sequence[str]) -> np.ndarray:
        """captions -> unit CLIP text embeddings [N, P]."""
        ids = tokenize_captions(captions, self.path, self.text_config.max_positions)
        return map_batches(lambda b: self._text(self.text_params, b), ids, self.batch_size, progress=False)

    def __call__(self, videos: np.ndarray, captions: Sequence[str]) -> np.ndarray:
        videos = np.asarray(videos)
        if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
            raise ValueError(f"videos must be uint8 [N, F, H, W, 3], got {videos.dtype} {videos.shape}")
        if len(captions) != len(videos):
            raise ValueError(f"{len(videos)} videos but {len(captions)} captions: give one caption per video")
        n, f = videos.shape[:2]
        images = self.image_embeddings(videos.reshape(n * f, *videos.shape[2:])).reshape(n, f, -1)
        texts = self.text_embeddings(captions)
        return np.einsum("nfp,np->nf", images.astype(np.float64), texts.astype(np.float64)).mean(axis=1)


def clipsim(videos: np.ndarray, captions: Sequence[str], model: CLIPSimilarity) -> float:
    """Mean CLIPSIM over a set of captioned videos."""
    return float(np.mean(model(videos, captions)))
