"""UNet3D hyper-parameters: one frozen dataclass, built from a diffusers config.json or from `config.model`.

The spatial fields mirror diffusers' `UNet2DConditionModel` config (block_out_channels,
layers_per_block, norm_num_groups, ...) so that a Stable Diffusion 1.x / 2.x checkpoint loads by
name; the temporal fields describe what we add around it (VidRD / ModelScope temporal convs and
temporal attention, Dysen-VDM's per-frame affine, causal mask and DSG cross-attention).

Head counts: diffusers' `attention_head_dim` is, for historical reasons, the number of *heads* in
UNet2DConditionModel (SD 1.x: 8; SD 2.x: [5, 10, 20, 20]) and the *head width* in
UNet3DConditionModel (ModelScope: 64). Here `num_attention_heads` is always the head count per
level; `from_diffusers_config` translates both.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from dysen_jax.models.rgtrm import REMAT_OPTIONS

TEMPORAL_NORMS = ("frame", "clip")
TEMPORAL_POSITIONS = ("none", "sinusoidal")


@dataclasses.dataclass(frozen=True)
class UNet3DConfig:
    """Everything that fixes the UNet3D's parameter tree and computation (hashable: a Flax attribute).

    Spatial (diffusers names): `cross_attention[i]` makes level i a CrossAttn block (down level i and
    the up block at the same resolution); `num_attention_heads[i]` heads of width
    block_out_channels[i] / heads there; `use_linear_projection` only records the checkpoint's
    proj_in/proj_out kind (ours are Dense either way: a 1x1 conv is the same map).

    Temporal (ours): `temporal_conv` adds a TemporalConvLayer after every ResNet, `temporal_attention`
    a TransformerTemporal after every spatial transformer, `temporal_transformer_in` one after conv_in
    (ModelScope). `temporal_attention_levels[i]` (one per level; () = `cross_attention`, ModelScope's
    placement) puts the down/up blocks' temporal attentions at level i, after the spatial transformer
    where there is one, else after the temporal conv: frames then exchange information at every
    resolution, not only where the spatial attention is (the mid block follows `temporal_attention`).
    `temporal_norm` "frame" takes GroupNorm statistics per frame (needed for causality),
    "clip" over the whole clip (ModelScope). `temporal_position` "sinusoidal" adds frame positions
    before the temporal attentions. `frame_affine` adds eq. 11's per-frame scale/shift after each
    ResNet's first conv (table of `max_frames` rows). All of these are the identity at init.

    `remat` (model.unet_remat) recomputes every ResNet, temporal conv, spatial transformer and temporal
    attention in the backward pass under that `nn.remat` policy ("none": store all activations; "full":
    keep only each layer's inputs; "dots": also every matmul output; "dots_no_batch": only the
    matmuls without batch dims, i.e. weights, not attention scores). Same function and parameter
    tree; less memory for more compute.
    """

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    cross_attention: tuple[bool, ...] = (True, True, True, False)
    num_attention_heads: tuple[int, ...] = (8, 8, 8, 8)
    transformer_layers_per_block: int = 1
    cross_attention_dim: int = 768
    in_channels: int = 4
    out_channels: int | None = None          # None: same as the input's channels
    use_linear_projection: bool = False
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    upcast_attention: bool = False
    dropout: float = 0.0
    zero_init_conv_out: bool = True          # fresh init only: the untrained model predicts 0
    attention_chunk: int = 128               # spatial self-attention in query blocks (0: one block); same result
    remat: str = "none"                      # per-layer nn.remat policy: none | full | dots | dots_no_batch
    # ours
    max_frames: int = 16
    frame_affine: bool = True
    temporal_conv: bool = True
    temporal_attention: bool = True
    temporal_attention_levels: tuple[bool, ...] = ()   # () = cross_attention
    temporal_transformer_in: bool = False
    transformer_in_heads: int = 8
    transformer_in_head_dim: int = 64
    temporal_causal: bool = False                 # eq. 12 mask in the temporal attentions
    temporal_conv_causal: bool | None = None      # temporal convs pad on the left; None: = temporal_causal
    temporal_norm: str = "frame"
    temporal_position: str = "none"
    temporal_dropout: float = 0.0
    pooled_conditions: bool = False          # each context's masked mean -> zero-init Dense -> + time embedding

    @property
    def num_levels(self) -> int:
        return len(self.block_out_channels)

    @property
    def conv_causal(self) -> bool:
        """Whether the temporal convs see only the current and earlier frames."""
        return self.temporal_causal if self.temporal_conv_causal is None else self.temporal_conv_causal

    @property
    def causal(self) -> bool:
        """Whether no output frame depends on a later input frame (attention and convs both causal)."""
        return self.temporal_causal and self.conv_causal

    def temporal_attention_at(self, level: int) -> bool:
        """Whether the down/up blocks of `level` have temporal attentions."""
        return self.temporal_attention and (self.temporal_attention_levels or self.cross_attention)[level]

    def validate(self) -> "UNet3DConfig":
        """Raises ValueError naming the inconsistent field; returns self."""
        n = self.num_levels
        for name in ("cross_attention", "num_attention_heads"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"UNet3DConfig.{name}={getattr(self, name)} needs one entry per level of "
                                 f"block_out_channels={self.block_out_channels}")
        if self.temporal_attention_levels and len(self.temporal_attention_levels) != n:
            raise ValueError(f"UNet3DConfig.temporal_attention_levels={self.temporal_attention_levels} (model."
                             f"temporal_attention_levels) needs one entry per level of block_out_channels="
                             f"{self.block_out_channels}, or () for the levels of cross_attention")
        for ch, heads in zip(self.block_out_channels, self.num_attention_heads):
            if ch % self.norm_num_groups:
                raise ValueError(f"norm_num_groups={self.norm_num_groups} does not divide width {ch}")
            if ch % heads:
                raise ValueError(f"num_attention_heads={heads} does not divide width {ch}")
        if self.temporal_norm not in TEMPORAL_NORMS:
            raise ValueError(f"temporal_norm={self.temporal_norm!r}: use one of {TEMPORAL_NORMS}")
        if self.temporal_position not in TEMPORAL_POSITIONS:
            raise ValueError(f"temporal_position={self.temporal_position!r}: use one of {TEMPORAL_POSITIONS}")
        if self.remat not in REMAT_OPTIONS:
            raise ValueError(f"UNet3DConfig.remat (model.unet_remat)={self.remat!r}: use one of {REMAT_OPTIONS}")
        if self.causal and self.temporal_norm != "frame":
            raise ValueError("temporal_causal=True (with causal temporal convs) needs temporal_norm='frame': "
                             "clip-wide GroupNorm statistics let later frames change earlier ones")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "UNet3DConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown UNet3DConfig field(s) {unknown}")
        tuples = {"block_out_channels", "cross_attention", "num_attention_heads", "temporal_attention_levels"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in d.items()}).validate()


def _per_level(value: Any, n: int, name: str) -> tuple:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise ValueError(f"{name}={list(value)} needs {n} entries (one per level)")
        return tuple(value)
    return (value,) * n


def _uniform(value: Any, name: str) -> Any:
    """A per-level diffusers field that this UNet supports only when all levels agree."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(set(value)) != 1:
            raise ValueError(f"{name}={list(value)} differs between levels, which UNet3D does not support")
        return value[0]
    return value


# diffusers config keys that change the computation in ways UNet3D does not implement -> accepted values.
_UNSUPPORTED_2D = {
    "center_input_sample": (False, None), "class_embed_type": (None,), "addition_embed_type": (None,),
    "encoder_hid_dim": (None,), "encoder_hid_dim_type": (None,), "num_class_embeds": (None,),
    "time_cond_proj_dim": (None,), "resnet_time_scale_shift": ("default",), "resnet_skip_time_act": (False,),
    "resnet_out_scale_factor": (1.0, 1), "time_embedding_type": ("positional",), "time_embedding_dim": (None,),
    "time_embedding_act_fn": (None,), "timestep_post_act": (None,), "conv_in_kernel": (3,), "conv_out_kernel": (3,),
    "attention_type": ("default",), "dual_cross_attention": (False,), "only_cross_attention": (False,),
    "mid_block_type": ("UNetMidBlock2DCrossAttn",), "act_fn": ("silu", "swish"),
    "mid_block_only_cross_attention": (None, False), "cross_attention_norm": (None,),
    "class_embeddings_concat": (False,), "reverse_transformer_layers_per_block": (None,),
}
_BLOCKS_2D = {"down": ("CrossAttnDownBlock2D", "DownBlock2D"), "up": ("CrossAttnUpBlock2D", "UpBlock2D")}
_BLOCKS_3D = {"down": ("CrossAttnDownBlock3D", "DownBlock3D"), "up": ("CrossAttnUpBlock3D", "UpBlock3D")}


def from_diffusers_config(cfg: Mapping[str, Any], **overrides: Any) -> UNet3DConfig:
    """UNet3DConfig for a diffusers `UNet2DConditionModel` or `UNet3DConditionModel` config.json.

    2D: the spatial layers of the checkpoint plus our temporal layers (defaults, or `overrides`).
    3D (ModelScope): temp convs after every ResNet, temporal attention after every spatial
    transformer and transformer_in after conv_in, clip-wide temporal GroupNorm, no frame positions,
    non-causal -- exactly diffusers' computation. Raises ValueError on features UNet3D lacks.
    """
    cls = cfg.get("_class_name", "UNet2DConditionModel")
    if cls not in ("UNet2DConditionModel", "UNet3DConditionModel"):
        raise ValueError(f"config _class_name={cls!r}: expected UNet2DConditionModel or UNet3DConditionModel")
    is_3d = cls == "UNet3DConditionModel"
    channels = tuple(int(c) for c in cfg.get("block_out_channels", (320, 640, 1280, 1280)))
    n = len(channels)
    blocks = _BLOCKS_3D if is_3d else _BLOCKS_2D
    down = tuple(cfg.get("down_block_types", (blocks["down"][0],) * (n - 1) + (blocks["down"][1],)))
    up = tuple(cfg.get("up_block_types", (blocks["up"][1],) + (blocks["up"][0],) * (n - 1)))
    for kind, types in (("down", down), ("up", up)):
        bad = [t for t in types if t not in blocks[kind]]
        if bad or len(types) != n:
            raise ValueError(f"{kind}_block_types={list(types)}: UNet3D supports {blocks[kind]}, one per level")
    cross = tuple(t.startswith("CrossAttn") for t in down)
    if tuple(t.startswith("CrossAttn") for t in reversed(up)) != cross:
        raise ValueError(f"up_block_types={list(up)} must mirror down_block_types={list(down)}")
    unsupported = _UNSUPPORTED_2D if not is_3d else {k: _UNSUPPORTED_2D[k] for k in ("time_cond_proj_dim", "act_fn")}
    for key, accepted in unsupported.items():
        if key in cfg and cfg[key] not in accepted:
            raise ValueError(f"config {key}={cfg[key]!r} is not supported by UNet3D (supported: {accepted})")
    if cfg.get("norm_num_groups", 32) is None:
        raise ValueError("norm_num_groups=None (no output norm) is not supported by UNet3D")
    head_cfg = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 64 if is_3d else 8)
    if is_3d:   # UNet3DConditionModel: attention_head_dim is the head width
        head_dim = _per_level(head_cfg, n, "attention_head_dim")
        heads = tuple(c // d for c, d in zip(channels, head_dim))
        temporal = dict(temporal_conv=True, temporal_attention=True, temporal_transformer_in=True,
                        transformer_in_heads=8, transformer_in_head_dim=int(_uniform(head_cfg, "attention_head_dim")),
                        temporal_causal=False, temporal_norm="clip", temporal_position="none", temporal_dropout=0.1,
                        frame_affine=False)
    else:
        heads = tuple(int(h) for h in _per_level(head_cfg, n, "attention_head_dim"))
        temporal = {}
    out = dict(
        block_out_channels=channels,
        layers_per_block=int(_uniform(cfg.get("layers_per_block", 2), "layers_per_block")),
        cross_attention=cross, num_attention_heads=heads,
        transformer_layers_per_block=int(_uniform(cfg.get("transformer_layers_per_block", 1),
                                                  "transformer_layers_per_block")),
        cross_attention_dim=int(_uniform(cfg.get("cross_attention_dim", 1024 if is_3d else 1280), "cross_attention_dim")),
        in_channels=int(cfg.get("in_channels", 4)), out_channels=int(cfg.get("out_channels", 4)),
        use_linear_projection=bool(cfg.get("use_linear_projection", is_3d)),
        norm_num_groups=int(cfg.get("norm_num_groups", 32)), norm_eps=float(cfg.get("norm_eps", 1e-5)),
        flip_sin_to_cos=bool(cfg.get("flip_sin_to_cos", True)) if not is_3d else True,
        freq_shift=float(cfg.get("freq_shift", 0)) if not is_3d else 0.0,
        downsample_padding=int(cfg.get("downsample_padding", 1)),
        mid_block_scale_factor=float(cfg.get("mid_block_scale_factor", 1.0)),
        upcast_attention=bool(cfg.get("upcast_attention", False)) and not is_3d,
        dropout=float(cfg.get("dropout", 0.0)) if not is_3d else 0.0,
        zero_init_conv_out=False, **temporal)
    out.update(overrides)
    return UNet3DConfig(**out).validate()


def from_model_config(model_cfg: Mapping[str, Any]) -> UNet3DConfig:
    """UNet3DConfig from `config.model` (keys channels, num_res_blocks, attention_levels, heads, ... as in
    configs/tiny.py; every key not set takes the UNet3DConfig default)."""
    get = lambda key, default: model_cfg[key] if key in model_cfg else default
    channels = tuple(int(c) for c in model_cfg["channels"])
    heads = model_cfg["heads"]
    d = UNet3DConfig()
    conv_causal = get("temporal_conv_causal", None)   # None (absent or unset): follow temporal_causal
    return UNet3DConfig(
        block_out_channels=channels, layers_per_block=int(model_cfg["num_res_blocks"]),
        cross_attention=tuple(bool(a) for a in model_cfg["attention_levels"]),
        num_attention_heads=tuple(int(h) for h in _per_level(heads, len(channels), "model.heads")),
        transformer_layers_per_block=int(get("transformer_layers_per_block", 1)),
        cross_attention_dim=int(get("cross_attention_dim", get("text_width", d.cross_attention_dim))),
        in_channels=int(get("in_channels", d.in_channels)), out_channels=None,
        use_linear_projection=bool(get("use_linear_projection", d.use_linear_projection)),
        norm_num_groups=int(get("norm_num_groups", d.norm_num_groups)), norm_eps=float(get("norm_eps", d.norm_eps)),
        upcast_attention=bool(get("upcast_attention", False)), dropout=float(get("dropout", 0.0)),
        max_frames=int(model_cfg["max_frames"]), frame_affine=bool(get("frame_affine", True)),
        temporal_conv=bool(get("temporal_conv", True)), temporal_attention=bool(get("temporal_attention", True)),
        temporal_attention_levels=tuple(bool(a) for a in get("temporal_attention_levels", ())),
        temporal_transformer_in=bool(get("temporal_transformer_in", False)),
        transformer_in_heads=int(get("transformer_in_heads", d.transformer_in_heads)),
        transformer_in_head_dim=int(get("transformer_in_head_dim", d.transformer_in_head_dim)),
        temporal_causal=bool(model_cfg["temporal_causal"]),
        temporal_conv_causal=None if conv_causal is None else bool(conv_causal),
        temporal_norm=str(get("temporal_norm", "frame")),
        temporal_position=str(get("temporal_position", "sinusoidal")),
        temporal_dropout=float(get("temporal_dropout", 0.0)),
        pooled_conditions=bool(get("pooled_conditions", False)),
        attention_chunk=int(get("attention_chunk", d.attention_chunk)),
        remat=str(get("unet_remat", d.remat))).validate()
