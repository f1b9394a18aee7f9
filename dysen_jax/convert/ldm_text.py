"""The text tower of an original Stable Diffusion single file -> transformers CLIPTextModel names.

- SD 1.x (`v1-5-pruned-emaonly.safetensors`): OpenAI CLIP ViT-L/14 already in transformers names under
  `cond_stage_model.transformer.`; the prefix is removed.
- SD 2.x (`v2-1_512-ema-pruned.safetensors`): OpenCLIP ViT-H/14 under `cond_stage_model.model.` in
  OpenCLIP names (`transformer.resblocks.N.attn.in_proj_weight`, fused q/k/v). They are renamed and split
  as diffusers' single-file loader does (`convert_open_clip_checkpoint`; the tests check it against that
  function), and, as there, the last of the 24 layers is dropped: SD 2.x conditions on the penultimate
  layer (ldm's FrozenOpenCLIPEmbedder(layer="penultimate")), which is then the tower's last, so
  `model.text_encoder_layer=-1` reads it, exactly as with diffusers' 23-layer `text_encoder/` folder.
  The unused `text_projection` and `logit_scale` are dropped too; the activation is GELU (OpenCLIP's
  ViT-H), heads are 64 wide.
The UNet and VAE tensors of the file are ignored. Any other file is returned unchanged.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

SD1_PREFIX = "cond_stage_model.transformer."
OPENCLIP_PREFIX = "cond_stage_model.model."
OPENCLIP_UNUSED = ("text_projection", "logit_scale", "attn_mask")
_OPENCLIP_FIXED = {"token_embedding.weight": "text_model.embeddings.token_embedding.weight",
                   "positional_embedding": "text_model.embeddings.position_embedding.weight",
                   "ln_final.weight": "text_model.final_layer_norm.weight",
                   "ln_final.bias": "text_model.final_layer_norm.bias"}
_OPENCLIP_LAYER = {"ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.", "attn.out_proj.": "self_attn.out_proj.",
                   "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2."}


def sd_text_layout(names: Any) -> str:
    """'sd1' / 'sd2_openclip' for a full SD file's text tower, '' for anything else."""
    names = list(names)
    if any(n.startswith(OPENCLIP_PREFIX + "transformer.resblocks.") for n in names):
        return "sd2_openclip"
    if any(n.startswith(SD1_PREFIX) for n in names):
        return "sd1"
    return ""


def _openclip_layers(tensors: Mapping[str, np.ndarray]) -> int:
    return 1 + max(int(m[1]) for n in tensors if (m := re.match(r"transformer\.resblocks\.(\d+)\.", n)))


def openclip_to_transformers(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """OpenCLIP text tensors (prefix removed) -> CLIPTextModel tensors, without the last layer."""
    keep = _openclip_layers(tensors) - 1
    out: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if name in _OPENCLIP_FIXED:
            out[_OPENCLIP_FIXED[name]] = value
            continue
        m = re.match(r"transformer\.resblocks\.(\d+)\.(.*)$", name)
        if not m:
            if name not in OPENCLIP_UNUSED:
                out[name] = value          # unknown: left for the converter to report as unexpected
            continue
        if int(m[1]) >= keep:
            continue
        layer, rest = f"text_model.encoder.layers.{m[1]}.", m[2]
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = "weight" if rest.endswith("weight") else "bias"
            for proj, part in zip("qkv", np.split(value, 3, axis=0)):
                out[f"{layer}self_attn.{proj}_proj.{kind}"] = part
            continue
        for old, new in _OPENCLIP_LAYER.items():
            if rest.startswith(old):
                rest = new + rest[len(old):]
                break
        out[layer + rest] = value
    return out


def openclip_hf_config(tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """A transformers CLIPTextConfig dict for the renamed tower (one layer fewer than the file's)."""
    vocab, hidden = tensors["token_embedding.weight"].shape
    return {"vocab_size": int(vocab), "hidden_size": int(hidden),
            "intermediate_size": int(tensors["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
            "num_hidden_layers": _openclip_layers(tensors) - 1, "num_attention_heads": max(1, int(hidden) // 64),
            "max_position_embeddings": int(tensors["positional_embedding"].shape[0]),
            "hidden_act": "gelu", "layer_norm_eps": 1e-5}


def select_sd_text(tensors: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any], str]:
    """(tensors in transformers names, shape-inferred transformers config or {}, layout) of a full SD file's
    text tower; any other checkpoint comes back as it is, with ({}, "")."""
    layout = sd_text_layout(tensors)
    if layout == "sd1":
        return {k[len(SD1_PREFIX):]: v for k, v in tensors.items() if k.startswith(SD1_PREFIX)}, {}, layout
    if layout == "sd2_openclip":
        tower = {k[len(OPENCLIP_PREFIX):]: v for k, v in tensors.items() if k.startswith(OPENCLIP_PREFIX)}
        return openclip_to_transformers(tower), openclip_hf_config(tower), layout
    return dict(tensors), {}, ""
