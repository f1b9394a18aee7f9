"""Original Stable Diffusion / LDM UNet tensor names -> diffusers UNet2DConditionModel names, and the
diffusers config of such a checkpoint inferred from its tensor shapes.

SD 1.x / 2.x single files (`v1-5-pruned-emaonly.safetensors`, `v2-1_512-ema-pruned.safetensors`) keep the
UNet under `model.diffusion_model.` in CompVis' layout (`input_blocks.4.1.proj_in.weight`), next to the
VAE (`first_stage_model.`) and the text encoder (`cond_stage_model.`), which the UNet conversion ignores.
The renaming is the one diffusers' single-file loader applies (`convert_ldm_unet_checkpoint`; the tests
check it against that function), so `convert.unet` then treats the tensors as a diffusers checkpoint.

What the shapes cannot tell, and the defaults used (each an override of `convert.unet.convert`, or put
a diffusers `config.json` beside the file): the attention heads (SD's yaml: `num_heads: 8` at
cross-attention width 768, i.e. SD 1.x; `num_head_channels: 64` at 1024, SD 2.x; other widths need
`num_attention_heads=(...)`), `norm_num_groups` (32) and `upcast_attention` (False; it changes nothing
in float32). Non-EMA training checkpoints also hold `model_ema.*` copies; those are not read (the
`ema-pruned` / `emaonly` releases store their EMA weights as the model).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from dysen_jax.convert.common import ConversionError

LDM_UNET_PREFIX = "model.diffusion_model."
_RESNET = (("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("emb_layers.1.", "time_emb_proj."),
           ("out_layers.0.", "norm2."), ("out_layers.3.", "conv2."), ("skip_connection.", "conv_shortcut."))
# SD's yaml: the heads per cross-attention width (SD 1.x: 8 heads; SD 2.x: heads of 64 channels).
SD_HEADS = {768: ("num_heads", 8), 1024: ("num_head_channels", 64)}


def is_ldm_unet(names: Any) -> bool:
    return any(n.startswith(("input_blocks.", "middle_block.", "output_blocks.", LDM_UNET_PREFIX)) for n in names)


def select_unet_tensors(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The UNet's tensors without a full checkpoint's prefix (its VAE, text encoder, EMA copy dropped)."""
    if any(k.startswith(LDM_UNET_PREFIX) for k in tensors):
        return {k[len(LDM_UNET_PREFIX):]: v for k, v in tensors.items() if k.startswith(LDM_UNET_PREFIX)}
    return dict(tensors)


def _block_indices(names: Any, group: str) -> list[int]:
    return sorted({int(m[1]) for n in names if (m := re.match(rf"{group}\.(\d+)\.", n))})


class _Layout:
    """Levels, layers per block and the levels with cross-attention, read from the tensor names."""

    def __init__(self, tensors: Mapping[str, np.ndarray]) -> None:
        names = list(tensors)
        inputs = _block_indices(names, "input_blocks")
        downs = [i for i in inputs if f"input_blocks.{i}.0.op.weight" in tensors]
        if not inputs or 0 not in inputs or "input_blocks.0.0.weight" not in tensors:
            raise ConversionError("original-layout UNet without input_blocks.0.0 (conv_in): not an SD / LDM UNet")
        self.layers_per_block = (downs[0] if downs else len(inputs)) - 1
        self.num_levels = len(downs) + 1
        if self.layers_per_block < 1 or len(inputs) != self.num_levels * (self.layers_per_block + 1):
            raise ConversionError(f"original-layout UNet: input_blocks {inputs} with downsamplers at {downs} do not "
                                  "form levels of equal depth (UNet3D needs one layers_per_block)")
        first = [1 + level * (self.layers_per_block + 1) for level in range(self.num_levels)]
        self.channels = tuple(int(tensors[f"input_blocks.{b}.0.out_layers.3.weight"].shape[0]) for b in first)
        self.cross = tuple(f"input_blocks.{b}.1.proj_in.weight" in tensors for b in first)

    def down(self, block: int) -> tuple[int, int]:
        return divmod(block - 1, self.layers_per_block + 1)

    def up(self, block: int) -> tuple[int, int]:
        return divmod(block, self.layers_per_block + 1)


def _resnet(rest: str) -> str:
    for old, new in _RESNET:
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def ldm_to_diffusers_name(name: str, layout: _Layout) -> str:
    """One original UNet tensor name -> its diffusers name (unknown names are returned as they are, so the
    conversion reports them as unexpected)."""
    simple = (("time_embed.0.", "time_embedding.linear_1."), ("time_embed.2.", "time_embedding.linear_2."),
              ("input_blocks.0.0.", "conv_in."), ("out.0.", "conv_norm_out."), ("out.2.", "conv_out."))
    for old, new in simple:
        if name.startswith(old):
            return new + name[len(old):]
    if m := re.match(r"input_blocks\.(\d+)\.(\d+)\.(.*)$", name):
        level, layer = layout.down(int(m[1]))
        if layer == layout.layers_per_block:   # the level's downsampler
            return re.sub(r"^0\.op\.", f"down_blocks.{level}.downsamplers.0.conv.", f"{m[2]}.{m[3]}")
        if m[2] == "0":
            return f"down_blocks.{level}.resnets.{layer}.{_resnet(m[3])}"
        return f"down_blocks.{level}.attentions.{layer}.{m[3]}"
    if m := re.match(r"middle_block\.(\d)\.(.*)$", name):
        return {"0": f"mid_block.resnets.0.{_resnet(m[2])}", "1": f"mid_block.attentions.0.{m[2]}",
                "2": f"mid_block.resnets.1.{_resnet(m[2])}"}.get(m[1], name)
    if m := re.match(r"output_blocks\.(\d+)\.(\d+)\.(.*)$", name):
        level, layer = layout.up(int(m[1]))
        if m[2] == "0":
            return f"up_blocks.{level}.resnets.{layer}.{_resnet(m[3])}"
        if m[3].startswith("conv."):   # an Upsample: index 1 after a ResNet, 2 after ResNet + attention
            return f"up_blocks.{level}.upsamplers.0.{m[3]}"
        return f"up_blocks.{level}.attentions.{layer}.{m[3]}"
    return name


def to_diffusers(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An original-layout UNet state (prefix already removed) renamed to diffusers names."""
    layout = _Layout(tensors)
    return {ldm_to_diffusers_name(k, layout): v for k, v in tensors.items()}


def infer_diffusers_config(tensors: Mapping[str, np.ndarray], attention_heads_given: bool = False) -> dict[str, Any]:
    """A diffusers UNet2DConditionModel config for an original-layout UNet state (prefix removed), from its
    shapes plus SD's head rule (see the module docstring); `attention_heads_given` skips that rule."""
    layout = _Layout(tensors)
    attention = [k for k in sorted(tensors) if re.match(r"input_blocks\.\d+\.1\.transformer_blocks\.0\.attn2\.to_k\.weight$", k)]
    if not attention:
        raise ConversionError("original-layout UNet without cross-attention (no input_blocks.*.1.transformer_blocks"
                              ".0.attn2): UNet3D needs a text-conditioned UNet")
    block = attention[0].split(".")[1]
    cross_dim = int(tensors[attention[0]].shape[1])
    depth = len({int(m[1]) for k in tensors if (m := re.match(rf"input_blocks\.{block}\.1\.transformer_blocks\.(\d+)\.", k))})
    cfg: dict[str, Any] = {
        "_class_name": "UNet2DConditionModel",
        "in_channels": int(tensors["input_blocks.0.0.weight"].shape[1]),
        "out_channels": int(tensors["out.2.weight"].shape[0]) if "out.2.weight" in tensors else 4,
        "block_out_channels": list(layout.channels), "layers_per_block": layout.layers_per_block,
        "down_block_types": ["CrossAttnDownBlock2D" if c else "DownBlock2D" for c in layout.cross],
        "up_block_types": ["CrossAttnUpBlock2D" if c else "UpBlock2D" for c in reversed(layout.cross)],
        "cross_attention_dim": cross_dim, "transformer_layers_per_block": depth,
        "use_linear_projection": tensors[f"input_blocks.{block}.1.proj_in.weight"].ndim == 2,
    }
    if not attention_heads_given:
        if cross_dim not in SD_HEADS:
            raise ConversionError(f"original-layout UNet with cross_attention_dim {cross_dim}: its attention heads "
                                  f"cannot be read from the weights (SD 1.x / 2.x have {sorted(SD_HEADS)}); pass "
                                  "num_attention_heads=(...) or put a diffusers config.json beside the file")
        rule, value = SD_HEADS[cross_dim]
        cfg["attention_head_dim"] = ([value] * layout.num_levels if rule == "num_heads"
                                     else [c // value for c in layout.channels])   # diffusers' key: heads per level
    return cfg
