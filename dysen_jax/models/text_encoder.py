"""Text encoders producing H^Y: the tiny word-level encoder, CLIP's text transformer and BERT/MiniLM.

- `TinyTextEncoder`: a small trainable transformer over word ids (the tiny configs' default).
- `CLIPTextTransformer`: transformers' CLIPTextModel in Flax (Stable Diffusion's text tower),
  with `layer=-2` for SD 2.x's penultimate-layer features.
- `BertEncoder`: BERT/MiniLM (all-MiniLM-L6-v2 ships in a pip package) with sentence-transformers'
  mean pooling + L2 normalisation, so small configs get real pretrained text features offline.
- `PretrainedTextEncoder` wraps either pretrained model into the denoiser's interface
  tokens -> (features, mask); `build_text_encoder(config.model)` picks by `model.text_encoder`.

Param names follow this repo's style; `dysen_jax.convert.text` maps the torch names onto them.
The pretrained encoders have no dropout: they are frozen feature extractors here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from dysen_jax.models.layers import (Dtype, EncoderLayer, MultiHeadAttention, causal_mask, key_mask,
                                     sinusoidal_embedding)

Array = jax.Array
TEXT_ENCODERS = ("tiny", "clip", "minilm")


class TinyTextEncoder(nn.Module):
    """Pre-LN transformer over word ids.

    tokens [B, S] int32 (0 = padding) -> (features [B, S, width], mask [B, S] bool). Positions are
    sinusoidal (no maximum length); padded positions attend to nothing padded, are zeroed in the
    output and flagged False in the mask.
    """

    vocab_size: int
    width: int
    num_layers: int
    num_heads: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        mask = tokens != 0
        h = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, name="word_embed")(tokens)
        h = h + sinusoidal_embedding(jnp.arange(tokens.shape[-1]), self.width).astype(self.dtype)
        for i in range(self.num_layers):
            h = EncoderLayer(self.num_heads, self.dropout, self.dtype, name=f"layer_{i}")(
                h, key_mask(mask), deterministic)
        h = nn.LayerNorm(dtype=self.dtype, name="ln_final")(h)
        return h * mask[..., None].astype(h.dtype), mask


# --- shared pieces of the pretrained encoders -------------------------------------------------------------
def quick_gelu(x: Array) -> Array:
    """OpenAI CLIP's GELU approximation x * sigmoid(1.702 x)."""
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "quick_gelu": quick_gelu,
    "gelu": functools.partial(nn.gelu, approximate=False),        # torch's exact (erf) GELU
    "gelu_new": functools.partial(nn.gelu, approximate=True),     # tanh approximation
    "gelu_pytorch_tanh": functools.partial(nn.gelu, approximate=True),
    "relu": nn.relu,
}


def activation(name: str) -> Callable[[Array], Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class FeedForward(nn.Module):
    """fc1 -> activation -> fc2 (transformers' CLIPMLP / BERT intermediate + output dense)."""

    intermediate_size: int
    hidden_act: str
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h = activation(self.hidden_act)(nn.Dense(self.intermediate_size, dtype=self.dtype, name="fc1")(x))
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(h)


def _fields_from(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


# --- CLIP ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """Shape of a CLIP text tower (defaults: OpenAI ViT-L/14, Stable Diffusion 1.x)."""

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    max_positions: int = 77
    hidden_act: str = "quick_gelu"      # OpenCLIP ViT-H/14 (SD 2.x) uses "gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407           # 2 = transformers' legacy configs: pool at argmax(ids)
    projection_dim: int = 0             # > 0: CLIPTextModelWithProjection's text_projection

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], projection: bool = False) -> "CLIPTextConfig":
        """From a transformers CLIPTextConfig dict (or a CLIPConfig dict holding "text_config")."""
        c = dict(config.get("text_config") or config)
        return cls(vocab_size=int(c.get("vocab_size", 49408)), hidden_size=int(c.get("hidden_size", 512)),
                   intermediate_size=int(c.get("intermediate_size", 2048)),
                   num_layers=int(c.get("num_hidden_layers", 12)), num_heads=int(c.get("num_attention_heads", 8)),
                   max_positions=int(c.get("max_position_embeddings", 77)),
                   hidden_act=str(c.get("hidden_act", "quick_gelu")), layer_norm_eps=float(c.get("layer_norm_eps", 1e-5)),
                   eos_token_id=int(c.get("eos_token_id", 49407)),
                   projection_dim=int(c.get("projection_dim", 512)) if projection else 0)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "CLIPTextConfig":
        """From `to_dict()` output (e.g. a converted folder's meta.json "config")."""
        return cls(**_fields_from(cls, values))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class CLIPTextOutput(NamedTuple):
    """hidden [B, S, D]: the selected layer after final_layer_norm; pooled [B, D]: hidden at the first
    <|endoftext|>; text_embeds [B, P]: pooled @ text_projection (None without a projection)."""

    hidden: Array
    pooled: Array
    text_embeds: Array | None


class CLIPEncoderLayer(nn.Module):
    """Pre-LN layer: x + SelfAttn(LN1(x), causal), then x + MLP(LN2(x))."""

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array) -> Array:
        c = self.config
        h = nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype, name="layer_norm1")(x)
        x = x + MultiHeadAttention(c.num_heads, dtype=self.dtype, name="self_attn")(h, mask=mask)
        h = nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype, name="layer_norm2")(x)
        return x + FeedForward(c.intermediate_size, c.hidden_act, self.dtype, name="mlp")(h)


class CLIPTextTransformer(nn.Module):
    """transformers' CLIPTextModel (+ optional text_projection) in Flax.

    __call__(input_ids [B, S], attention_mask [B, S] or None, layer=-1) -> CLIPTextOutput.
    `layer` indexes the hidden states as transformers' `output_hidden_states` does (0 = embeddings,
    i = after layer i, -1 = last, -2 = penultimate) and final_layer_norm is applied to it. That is
    what SD 2.x does: ldm's FrozenOpenCLIPEmbedder(layer="penultimate") stops one resblock early and
    applies ln_final, and diffusers' `clip_skip` takes hidden_states[-(clip_skip + 1)] then
    final_layer_norm. (Diffusers' SD 2.x text_encoder folders already drop the last layer, 23 of
    24, so they use layer=-1.) Layers past `layer` are not run. Attention is causal; an
    attention_mask additionally hides padded keys (SD passes none).
    """

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array | None = None, layer: int = -1) -> CLIPTextOutput:
        c = self.config
        seq = input_ids.shape[-1]
        if seq > c.max_positions:
            raise ValueError(f"{seq} tokens exceed the model's max_positions={c.max_positions}")
        stop = layer if layer >= 0 else c.num_layers + 1 + layer
        if not 0 <= stop <= c.num_layers:
            raise ValueError(f"layer={layer} is outside [-{c.num_layers + 1}, {c.num_layers}]")
        if self.is_initializing():
            stop = c.num_layers   # create every parameter whatever layer the init call asked for
        h = nn.Embed(c.vocab_size, c.hidden_size, dtype=self.dtype, name="token_embedding")(input_ids)
        pos = self.param("position_embedding", nn.initializers.normal(0.01), (c.max_positions, c.hidden_size))
        h = h + pos[:seq].astype(self.dtype)
        mask = causal_mask(seq)[None]                       # [1 (heads), S, S]
        if attention_mask is not None:
            mask = mask & key_mask(attention_mask.astype(bool))
        for i in range(stop):
            h = CLIPEncoderLayer(c, self.dtype, name=f"layer_{i}")(h, mask)
        h = nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype, name="final_layer_norm")(h)
        if c.eos_token_id == 2:   # transformers' legacy configs: <|endoftext|> is the largest id
            eos = jnp.argmax(input_ids, axis=-1)
        else:
            eos = jnp.argmax(input_ids == c.eos_token_id, axis=-1)
        pooled = jnp.take_along_axis(h, eos[..., None, None], axis=-2)[..., 0, :]
        embeds = None
        if c.projection_dim:
            embeds = nn.Dense(c.projection_dim, use_bias=False, dtype=self.dtype, name="text_projection")(pooled)
        return CLIPTextOutput(h, pooled, embeds)


# --- BERT / MiniLM ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BertTextConfig:
    """Shape of a BERT encoder (defaults: all-MiniLM-L6-v2)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    intermediate_size: int = 1536
    num_layers: int = 6
    num_heads: int = 12
    max_positions: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> "BertTextConfig":
        """From a transformers BertConfig dict (config.json of BertModel / sentence-transformers)."""
        c = dict(config)
        if c.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type={c['position_embedding_type']!r}: only 'absolute' is supported")
        return cls(vocab_size=int(c.get("vocab_size", 30522)), hidden_size=int(c.get("hidden_size", 768)),
                   intermediate_size=int(c.get("intermediate_size", 3072)),
                   num_layers=int(c.get("num_hidden_layers", 12)), num_heads=int(c.get("num_attention_heads", 12)),
                   max_positions=int(c.get("max_position_embeddings", 512)),
                   type_vocab_size=int(c.get("type_vocab_size", 2)), hidden_act=str(c.get("hidden_act", "gelu")),
                   layer_norm_eps=float(c.get("layer_norm_eps", 1e-12)), pad_token_id=int(c.get("pad_token_id", 0) or 0))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "BertTextConfig":
        return cls(**_fields_from(cls, values))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class BertOutput(NamedTuple):
    """hidden [B, S, D]: token features (BertModel's last_hidden_state); mask [B, S] bool;
    sentence [B, D]: masked mean of hidden, L2-normalised (sentence-transformers' embedding)."""

    hidden: Array
    mask: Array
    sentence: Array


class BertLayer(nn.Module):
    """Post-LN layer: x = LN(x + SelfAttn(x)); x = LN(x + FFN(x))."""

    config: BertTextConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array) -> Array:
        c = self.config
        x = x + MultiHeadAttention(c.num_heads, dtype=self.dtype, name="attention")(x, mask=mask)
        x = nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype, name="attention_norm")(x)
        x = x + FeedForward(c.intermediate_size, c.hidden_act, self.dtype, name="mlp")(x)
        return nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype, name="output_norm")(x)


def mean_pool(hidden: Array, mask: Array) -> Array:
    """Masked mean over tokens (sentence-transformers' Pooling(mean), count clamped at 1e-9)."""
    m = mask[..., None].astype(jnp.float32)
    return jnp.sum(hidden.astype(jnp.float32) * m, axis=-2) / jnp.maximum(jnp.sum(m, axis=-2), 1e-9)


def l2_normalize(x: Array, eps: float = 1e-12) -> Array:
    """x / max(||x||, eps) (torch.nn.functional.normalize)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class BertEncoder(nn.Module):
    """BERT / MiniLM encoder (transformers' BertModel without its pooler) + sentence embedding.

    __call__(input_ids [B, S], attention_mask [B, S] or None (= ids != pad_token_id),
    token_type_ids or None (= 0)) -> BertOutput.
    """

    config: BertTextConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array | None = None,
                 token_type_ids: Array | None = None) -> BertOutput:
        c = self.config
        seq = input_ids.shape[-1]
        if seq > c.max_positions:
            raise ValueError(f"{seq} tokens exceed the model's max_positions={c.max_positions}")
        mask = (input_ids != c.pad_token_id) if attention_mask is None else attention_mask.astype(bool)
        types = jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        embed = lambda n, name: nn.Embed(n, c.hidden_size, dtype=self.dtype, name=name)
        h = embed(c.vocab_size, "word_embeddings")(input_ids) + embed(c.type_vocab_size, "token_type_embeddings")(types)
        h = h + embed(c.max_positions, "position_embeddings")(jnp.arange(seq))
        h = nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype, name="embeddings_norm")(h)
        for i in range(c.num_layers):
            h = BertLayer(c, self.dtype, name=f"layer_{i}")(h, key_mask(mask))
        return BertOutput(h, mask, l2_normalize(mean_pool(h, mask)).astype(h.dtype))


# --- the denoiser's text tower ------------------------------------------------------------------------------
class PretrainedTextEncoder(nn.Module):
    """A pretrained CLIP or MiniLM as the denoiser's text encoder: tokens [B, S] -> (features, mask).

    kind "clip": features = CLIPTextTransformer(...)(tokens, layer=layer).hidden and every position
    is attended to (as Stable Diffusion's UNet does: padding positions carry features too).
    kind "minilm": BertEncoder token features, zeroed at [PAD] (id 0) and masked out.
    With `frozen`, gradients stop at the features (the trainer should also keep these params out
    of weight decay / the optimizer). The model's params live under the child "model", so a
    converted params tree goes in as {"model": params} (`text_encoder_params`).
    """

    kind: str
    config: CLIPTextConfig | BertTextConfig
    layer: int = -1
    frozen: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: Array, deterministic: bool = True) -> tuple[Array, Array]:
        del deterministic   # no dropout in the pretrained towers
        if self.kind == "clip":
            feats = CLIPTextTransformer(self.config, self.dtype, name="model")(tokens, layer=self.layer).hidden
            mask = jnp.ones(tokens.shape, bool)
        elif self.kind == "minilm":
            out = BertEncoder(self.config, self.dtype, name="model")(tokens)
            feats, mask = out.hidden * out.mask[..., None].astype(out.hidden.dtype), out.mask
        else:
            raise ValueError(f"PretrainedTextEncoder kind={self.kind!r}: expected 'clip' or 'minilm'")
        if self.frozen:
            feats = jax.lax.stop_gradient(feats)
        return feats, mask


def _cfg_get(model_cfg: Any, key: str, default: Any) -> Any:
    return model_cfg.get(key, default) if hasattr(model_cfg, "get") else getattr(model_cfg, key, default)


def _converted_meta(path: str, kind: str) -> dict[str, Any]:
    from dysen_jax.convert.common import META_FILE

    file = os.path.join(path, META_FILE)
    if not os.path.exists(file):
        raise FileNotFoundError(f"model.text_encoder_path={path!r} has no {META_FILE}: write it with "
                                f"`python -m dysen_jax.convert --from HF_FOLDER --kind {'clip_text' if kind == 'clip' else 'minilm'} --out {path}`")
    with open(file) as f:
        meta = json.load(f)
    want = "clip_text" if kind == "clip" else "minilm"
    if meta.get("kind") != want:
        raise ValueError(f"{file}: kind={meta.get('kind')!r} but model.text_encoder={kind!r} needs {want!r}")
    return meta


def text_encoder_config(model_cfg: Any) -> CLIPTextConfig | BertTextConfig | None:
    """The pretrained encoder's config from `model.text_encoder_path`'s meta.json (None for "tiny";
    for "minilm" without a path: the shipped all-MiniLM-L6-v2 config)."""
    kind = str(_cfg_get(model_cfg, "text_encoder", "tiny"))
    path = str(_cfg_get(model_cfg, "text_encoder_path", "") or "")
    if kind == "tiny":
        return None
    if kind not in TEXT_ENCODERS:
        raise ValueError(f"model.text_encoder={kind!r}: expected one of {TEXT_ENCODERS}")
    if path:
        config = _converted_meta(path, kind)["config"]
        return CLIPTextConfig.from_dict(config) if kind == "clip" else BertTextConfig.from_dict(config)
    if kind == "clip":
        raise ValueError("model.text_encoder='clip' needs model.text_encoder_path: a folder written by "
                         "`python -m dysen_jax.convert --kind clip_text --from HF_CLIP_TEXT_FOLDER --out DIR`")
    from dysen_jax.text.assets import minilm_model_dir

    with open(os.path.join(minilm_model_dir(), "config.json")) as f:
        return BertTextConfig.from_hf_config(json.load(f))


def build_text_encoder(model_cfg: Any) -> nn.Module:
    """The denoiser's text tower from `config.model`, an unbound module with the call signature
    (tokens [B, S], deterministic) -> (features [B, S, D], mask [B, S]).

    Keys: text_encoder = "tiny" (default) | "clip" | "minilm"; text_encoder_path (converted params
    folder; required for clip, optional for minilm: empty = the shipped all-MiniLM-L6-v2);
    text_encoder_layer (CLIP hidden-state index, -1 last, -2 penultimate as SD 2.x); and for tiny
    vocab_size, text_width, text_layers, text_heads, dropout; dtype for all.
    """
    dtype = jnp.dtype(_cfg_get(model_cfg, "dtype", "float32"))
    kind = str(_cfg_get(model_cfg, "text_encoder", "tiny"))
    if kind == "tiny":
        return TinyTextEncoder(int(model_cfg.vocab_size), int(model_cfg.text_width), int(model_cfg.text_layers),
                               int(model_cfg.text_heads), float(_cfg_get(model_cfg, "dropout", 0.0)), dtype)
    config = text_encoder_config(model_cfg)
    return PretrainedTextEncoder(kind, config, int(_cfg_get(model_cfg, "text_encoder_layer", -1)), True, dtype)


def text_encoder_params(model_cfg: Any) -> dict[str, Any] | None:
    """Pretrained params for `build_text_encoder(model_cfg)`'s subtree ({"model": ...}); None for "tiny".

    Put them at params["text_encoder"] of the denoiser after init. CLIP and MiniLM load
    `model.text_encoder_path`; MiniLM without a path converts the shipped weights in memory.
    """
    kind = str(_cfg_get(model_cfg, "text_encoder", "tiny"))
    if kind == "tiny":
        return None
    path = str(_cfg_get(model_cfg, "text_encoder_path", "") or "")
    if path:
        from dysen_jax.convert.common import load_params

        _converted_meta(path, kind)
        params, _ = load_params(path)
    elif kind == "minilm":
        from dysen_jax.convert.text import load_minilm_params

        params = load_minilm_params()
    else:
        text_encoder_config(model_cfg)   # raises the "needs text_encoder_path" error
        raise AssertionError("unreachable")
    return {"model": params}
