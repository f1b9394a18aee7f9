"""Dysen-VDM denoiser: text encoder (H^Y) + RGTrm (H^G) + 3D-UNet, with classifier-free guidance nulls.

Each video frame f cross-attends to the nodes of the scene graph it shows, m = frame_step[b, f]
(frames and DSG steps are aligned by time by `tensorize`), then to the whole text. With
`use_dsg=False` (the "w/o Dysen" ablation) no RGTrm or DSG null exists and the UNet's transformer
blocks only cross-attend to the text. `dsg_encoder="gnn"` (the "RGTrm -> GNN" ablation) encodes the DSG
with a plain graph convolution network (models/gnn.py) of the same width and depth instead.
"""

from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from dysen_jax.models.gnn import GraphConvEncoder
from dysen_jax.models.layers import Dtype
from dysen_jax.models.rgtrm import RGTrm
from dysen_jax.models.text_encoder import TinyTextEncoder, build_text_encoder
from dysen_jax.models.unet3d import UNet3D
from dysen_jax.models.unet_config import UNet3DConfig, from_model_config

Array = jax.Array
DSG_ENCODERS = ("rgtrm", "gnn")


def frame_graphs(graph_feats: Array, graph_mask: Array, frame_step: Array) -> tuple[Array, Array]:
    """Per-frame DSG context: H^G [B, M, N, D], mask [B, M, N], frame_step [B, F] ->
    ([B, F, N, D], [B, F, N]) holding scene graph frame_step[b, f] for frame f."""
    idx = jnp.clip(frame_step, 0, graph_feats.shape[1] - 1)
    feats = jnp.take_along_axis(graph_feats, idx[:, :, None, None], axis=1)
    mask = jnp.take_along_axis(graph_mask, idx[:, :, None], axis=1)
    return feats, mask


class NullContext(nn.Module):
    """Classifier-free guidance: where keep[b] is False, example b's context becomes one learned
    null token (slot 0, mask True; every other slot zero and masked out)."""

    @nn.compact
    def __call__(self, feats: Array, mask: Array, keep: Array) -> tuple[Array, Array]:
        null = self.param("embedding", nn.initializers.normal(0.02), (feats.shape[-1],))
        first = jnp.arange(feats.shape[-2]) == 0
        null_feats = jnp.where(first[:, None], null.astype(feats.dtype), jnp.zeros((), feats.dtype))
        keep = keep.astype(bool).reshape(keep.shape[:1] + (1,) * (mask.ndim - 1))
        feats = jnp.where(keep[..., None], feats, jnp.broadcast_to(null_feats, feats.shape))
        return feats, jnp.where(keep, mask, jnp.broadcast_to(first, mask.shape))


class DysenDenoiser(nn.Module):
    """ε/v-prediction network of Dysen-VDM.

    __call__(x [B,F,H,W,C], timesteps [B], text_tokens [B,S] int32, dsg: batched tensorize arrays
    (or None when use_dsg_branch is False), *, use_text [B] bool, use_dsg [B] bool,
    deterministic) -> [B,F,H,W,C] in x's dtype.
    """

    vocab_size: int
    text_width: int
    text_layers: int
    text_heads: int
    rgtrm_width: int
    rgtrm_layers: int
    rgtrm_heads: int
    use_dsg_branch: bool
    unet: UNet3DConfig             # from config.model (unet_config.from_model_config)
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    rgtrm_scan: bool = False       # RGTrm layers under nn.scan (model.rgtrm_scan)
    rgtrm_remat: str = "none"      # RGTrm per-layer remat policy (model.rgtrm_remat)
    text_encoder: nn.Module | None = None  # a pretrained tower (build_text_encoder); None = TinyTextEncoder
    dsg_encoder: str = "rgtrm"     # rgtrm | gnn (Table 4's "RGTrm -> GNN"; model.dsg_encoder)

    @nn.compact
    def __call__(self, x: Array, timesteps: Array, text_tokens: Array, dsg: Mapping[str, Array] | None,
                 *, use_text: Array, use_dsg: Array, deterministic: bool = True) -> Array:
        encoder = self.text_encoder or TinyTextEncoder(self.vocab_size, self.text_width, self.text_layers,
                                                       self.text_heads, self.dropout, self.dtype, name="text_encoder")
        text, text_mask = encoder(text_tokens, deterministic)
        text, text_mask = NullContext(name="null_text")(text, text_mask, use_text)
        contexts = {"text": (text[:, None], text_mask[:, None])}
        if self.use_dsg_branch:
            if dsg is None:
                raise ValueError("this denoiser has a DSG branch (model.use_dsg=True) but got dsg=None")
            if self.dsg_encoder == "gnn":
                graph_encoder = GraphConvEncoder(self.vocab_size, self.rgtrm_width, self.rgtrm_layers, self.dropout,
                                                 self.dtype, name="gnn")
            else:
                graph_encoder = RGTrm(self.vocab_size, self.rgtrm_width, self.rgtrm_layers, self.rgtrm_heads,
                                      self.dropout, self.dtype, self.rgtrm_scan, self.rgtrm_remat, name="rgtrm")
            graphs, graph_mask = graph_encoder(
                dsg["node_words"], dsg["node_type"], dsg["edge_type"], dsg["node_mask"], dsg["step_mask"],
                dsg["step_time"], deterministic)
            feats, mask = frame_graphs(graphs, graph_mask, dsg["frame_step"])
            contexts = {"dsg": NullContext(name="null_dsg")(feats, mask, use_dsg), **contexts}
        unet = UNet3D(self.unet, tuple(contexts), self.dtype, name="unet")
        return unet(x, timesteps, contexts, deterministic).astype(x.dtype)


def build_denoiser(model_cfg: ml_collections.ConfigDict) -> DysenDenoiser:
    """DysenDenoiser from `config.model` (vocab_size must already be resolved from the manifest)."""
    if model_cfg.vocab_size < 1:
        raise ValueError(f"model.vocab_size={model_cfg.vocab_size}: resolve it from the preprocessed data's "
                         "manifest (WordVocab.size) before building the model")
    dsg_encoder = str(model_cfg.get("dsg_encoder", "rgtrm"))
    if dsg_encoder not in DSG_ENCODERS:
        raise ValueError(f"model.dsg_encoder={dsg_encoder!r}: use one of {list(DSG_ENCODERS)}")
    return DysenDenoiser(
        vocab_size=int(model_cfg.vocab_size), text_width=int(model_cfg.text_width),
        text_layers=int(model_cfg.text_layers), text_heads=int(model_cfg.text_heads),
        rgtrm_width=int(model_cfg.rgtrm_width), rgtrm_layers=int(model_cfg.rgtrm_layers),
        rgtrm_heads=int(model_cfg.rgtrm_heads), use_dsg_branch=bool(model_cfg.use_dsg),
        unet=from_model_config(model_cfg), dropout=float(model_cfg.dropout), dtype=jnp.dtype(model_cfg.dtype),
        rgtrm_scan=bool(model_cfg.get("rgtrm_scan", False)), rgtrm_remat=str(model_cfg.get("rgtrm_remat", "none")),
        text_encoder=None if model_cfg.get("text_encoder", "tiny") == "tiny" else build_text_encoder(model_cfg),
        dsg_encoder=dsg_encoder)
