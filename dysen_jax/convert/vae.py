"""diffusers / original-LDM AutoencoderKL checkpoints (safetensors) -> `models.vae.AutoencoderKL` params.

Accepted layouts, detected from the tensor names:
- diffusers (`encoder.down_blocks.0.resnets.0.norm1.weight`, attention as `to_q/to_k/to_v/to_out.0`,
  or the legacy `query/key/value/proj_attn` names of diffusers < 0.15);
- original Stable Diffusion / LDM (`encoder.down.0.block.0.norm1.weight`, `mid.attn_1.q` as 1x1
  convs), alone (e.g. sd-vae-ft-mse-original) or inside a full SD checkpoint under
  `first_stage_model.` (the other models' tensors are then ignored).

The architecture comes from config.json when there is one (for a single file: an AutoencoderKL
config.json beside it), else it is inferred from the tensor
shapes (norm_num_groups=32 and scaling_factor=0.18215 cannot be inferred: pass overrides, e.g.
`convert(..., scaling_factor=0.13025)` for the SDXL VAE, or edit meta.json). With
`temporal_decoder=True` the output also holds VidRD temporal blocks at their fresh init (zero last
conv: decodes exactly like the image decoder); without it, `models.vae.load_pretrained(dir,
temporal_decoder=True)` adds them at load time, which is the same thing.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

from dysen_jax.convert.common import (ConversionError, TorchState, check_all_used, conv, flatten, linear,
                                      read_config, save_params, to_params, unflatten)

# Full-checkpoint prefixes under which a VAE lives (original SD checkpoints; some merges use "vae.").
VAE_PREFIXES = ("first_stage_model.", "vae.")
# Tensors of LDM training checkpoints that are not part of the autoencoder (discriminator, LPIPS).
IGNORED_PREFIXES = ("loss.",)

_ATTN_NEW = {"query": "to_q", "key": "to_k", "value": "to_v", "out": "to_out.0"}
_ATTN_LEGACY = {"query": "query", "key": "key", "value": "value", "out": "proj_attn"}
_LDM_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


# --- tensor names ---------------------------------------------------------------------------------------
def select_vae_tensors(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The VAE's tensors with any full-checkpoint prefix removed (other models' tensors dropped)."""
    for prefix in VAE_PREFIXES:
        if any(k.startswith(prefix + "encoder.") for k in tensors):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return {k: v for k, v in tensors.items() if not k.startswith(IGNORED_PREFIXES)}


def is_ldm_layout(names: Any) -> bool:
    return any(n.startswith(("encoder.down.", "decoder.up.", "encoder.mid.", "decoder.mid.")) for n in names)


def ldm_to_diffusers_name(name: str, num_up_blocks: int) -> str:
    """One original-LDM VAE tensor name -> its diffusers name (the mapping of diffusers' single-file loader)."""
    name = re.sub(r"^encoder\.down\.(\d+)\.block\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2.", name)
    name = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", name)
    name = re.sub(r"^decoder\.up\.(\d+)\.block\.(\d+)\.",
                  lambda m: f"decoder.up_blocks.{num_up_blocks - 1 - int(m[1])}.resnets.{m[2]}.", name)
    name = re.sub(r"^decoder\.up\.(\d+)\.upsample\.",
                  lambda m: f"decoder.up_blocks.{num_up_blocks - 1 - int(m[1])}.upsamplers.0.", name)
    name = re.sub(r"\.mid\.block_(\d+)\.", lambda m: f".mid_block.resnets.{int(m[1]) - 1}.", name)
    name = re.sub(r"\.mid\.attn_1\.(norm|q|k|v|proj_out)\.", lambda m: f".mid_block.attentions.0.{_LDM_ATTN[m[1]]}.", name)
    name = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", name)
    return name.replace(".nin_shortcut.", ".conv_shortcut.")


def normalise(state: TorchState) -> tuple[TorchState, str]:
    """A TorchState in diffusers names (LDM renamed, 1x1-conv attention squeezed) and the layout found."""
    tensors = select_vae_tensors(state.tensors)
    layout = "diffusers"
    if is_ldm_layout(tensors):
        layout = "ldm"
        ups = [int(m[1]) for n in tensors if (m := re.match(r"decoder\.up\.(\d+)\.", n))]
        num_up = max(ups) + 1 if ups else 0
        renamed: dict[str, np.ndarray] = {}
        for name, value in tensors.items():
            new = ldm_to_diffusers_name(name, num_up)
            if ".attentions.0." in new and new.endswith(".weight") and value.ndim > 2:
                value = value.reshape(value.shape[:2])  # 1x1 conv [C, C, 1, 1] -> linear [C, C]
            renamed[new] = value
        tensors = renamed
    elif any(".attentions.0.query." in n for n in tensors):
        layout = "diffusers-legacy-attention"
    return TorchState(tensors, state.source), layout


# --- config ---------------------------------------------------------------------------------------------
def infer_config(state: TorchState, **overrides: Any):
    """VAEConfig from tensor shapes (diffusers names); norm_num_groups and scaling_factor keep defaults."""
    from dysen_jax.models.vae import VAEConfig

    t = state.tensors
    if "encoder.conv_in.weight" not in t or "decoder.conv_in.weight" not in t:
        raise ConversionError(f"{state.source}: no encoder.conv_in.weight/decoder.conv_in.weight: not an "
                              "AutoencoderKL checkpoint (is --kind right?)")
    chans = []
    while f"encoder.down_blocks.{len(chans)}.resnets.0.conv1.weight" in t:
        chans.append(int(t[f"encoder.down_blocks.{len(chans)}.resnets.0.conv1.weight"].shape[0]))
    layers = 0
    while f"encoder.down_blocks.0.resnets.{layers}.conv1.weight" in t:
        layers += 1
    attn = any(f"encoder.mid_block.attentions.0.{n}.weight" in t for n in ("to_q", "query"))
    inferred = dict(in_channels=int(t["encoder.conv_in.weight"].shape[1]),
                    out_channels=int(t["decoder.conv_out.weight"].shape[0]) if "decoder.conv_out.weight" in t else 3,
                    block_out_channels=tuple(chans), layers_per_block=layers,
                    latent_channels=int(t["decoder.conv_in.weight"].shape[1]),
                    use_quant_conv="quant_conv.weight" in t, use_post_quant_conv="post_quant_conv.weight" in t,
                    mid_block_add_attention=attn)
    return VAEConfig(**{**inferred, **overrides})


def config_for(source: str, subfolder: str, state: TorchState, **overrides: Any):
    """From config.json when present (checked to be an AutoencoderKL), else inferred from shapes."""
    from dysen_jax.models.vae import VAEConfig

    raw = read_config(source, subfolder)
    if not raw and os.path.isfile(source):  # diffusion_pytorch_model.safetensors given inside its diffusers folder
        raw = read_config(os.path.dirname(os.path.abspath(source)))
        raw = raw if raw.get("_class_name") == "AutoencoderKL" else {}
    if not raw:
        return infer_config(state, **overrides)
    try:
        return VAEConfig.from_diffusers_config(raw, **overrides)
    except ValueError as err:
        raise ConversionError(f"{source}: config.json: {err}") from None


# --- tensors --------------------------------------------------------------------------------------------
def torch_names(path: str) -> tuple[str, ...]:
    """Candidate diffusers names (new first, then legacy) of one Flax param path."""
    *mods, leaf = path.split("/")
    leaf = "bias" if leaf == "bias" else "weight"
    parts: list[str] = []
    attn_proj = None
    for m in mods:
        if m == "attn":
            continue
        if m in _ATTN_NEW and parts and parts[-1].startswith("attentions."):
            attn_proj = m
            continue
        m = re.sub(r"^(down_blocks|up_blocks)_(\d+)_", r"\1.\2.", m)
        m = re.sub(r"(resnets|attentions)_(\d+)$", r"\1.\2", m)
        m = m.replace("downsample", "downsamplers.0.conv").replace("upsample", "upsamplers.0.conv")
        parts.append(m)
    base = ".".join(parts)
    if attn_proj is None:
        return (f"{base}.{leaf}",)
    return tuple(f"{base}.{table[attn_proj]}.{leaf}" for table in (_ATTN_NEW, _ATTN_LEGACY))


def to_flax(value: np.ndarray, path: str, shape: tuple[int, ...]) -> np.ndarray:
    """Torch layout -> Flax layout for the param at `path` (left as is when sizes cannot match)."""
    if path.endswith("/kernel"):
        if value.ndim == 4:
            return conv(value)
        if value.ndim == 2 and "/attn/" in path:  # Linear [out, in] -> DenseGeneral [in, 1, out] / [1, in, out]
            value = linear(value)
    if value.size == int(np.prod(shape)) and value.ndim != len(shape):
        return value.reshape(shape)
    return value


def torch_shape(shape: tuple[int, ...], path: str) -> tuple[int, ...]:
    """The torch-layout shape that would convert to the Flax `shape` (for error messages)."""
    if path.endswith("/kernel") and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if "/attn/" in path:
        if path.endswith("/kernel"):
            return (shape[-1], shape[0]) if "/attn/out/" not in path else (shape[-1], shape[1])
        return (int(np.prod(shape)),)
    return shape


def convert_state(state: TorchState, config) -> dict[str, Any]:
    """Params for `AutoencoderKL(config)` from a TorchState in diffusers names (see `normalise`).

    Raises one ConversionError naming every missing, mis-shaped and unused (unexpected) tensor.
    Temporal-block params (not in image checkpoints) are taken from a fresh init.
    """
    from dysen_jax.models.vae import add_temporal_params, is_temporal_path, param_shapes

    expected = flatten(param_shapes(config))
    converted: dict[str, np.ndarray] = {}
    missing, misshaped = [], []
    for path, spec in sorted(expected.items()):
        if is_temporal_path(path):
            continue
        names = torch_names(path)
        name = next((n for n in names if state.has(n)), None)
        if name is None:
            missing.append(names[0] + (f" (or legacy {names[1]})" if len(names) > 1 else ""))
            continue
        value = to_flax(state.take(name), path, tuple(spec.shape))
        if tuple(value.shape) != tuple(spec.shape):
            misshaped.append(f"{name}: checkpoint {tuple(state.tensors[name].shape)} vs model "
                             f"{torch_shape(tuple(spec.shape), path)}")
            continue
        converted[path] = value
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}")
    if misshaped:
        problems.append(f"mis-shaped {len(misshaped)}: {'; '.join(misshaped[:12])}{' ...' if len(misshaped) > 12 else ''}")
    unused = state.unused()
    if problems and unused:  # e.g. a renamed tensor: show both sides at once
        problems.append(f"unexpected {len(unused)}: {', '.join(unused[:12])}{' ...' if len(unused) > 12 else ''}")
    if problems:
        raise ConversionError(f"{state.source}: " + " | ".join(problems)
                              + f" (model config: {config.to_dict()})")
    check_all_used(state)
    if config.temporal_decoder:
        converted = flatten(add_temporal_params(unflatten(converted), config))
    return to_params(converted, param_shapes(config), f"vae from {state.source}")


def convert(source: str, out_dir: str, kind: str = "vae", subfolder: str = "", temporal_decoder: bool = False,
            **overrides: Any) -> dict[str, Any]:
    """Converts a diffusers folder / .safetensors file (pipeline folders: subfolder='vae' is tried by
    default) and writes out_dir/params.msgpack + meta.json; returns the meta."""
    if kind != "vae":
        raise ConversionError(f"convert.vae handles kind 'vae', not {kind!r}")
    if not subfolder and os.path.isdir(os.path.join(source, "vae")) and not os.path.exists(os.path.join(source, "config.json")):
        subfolder = "vae"  # a whole pipeline folder
    state, layout = normalise(TorchState.load(source, subfolder))
    config = config_for(source, subfolder, state, temporal_decoder=temporal_decoder, **overrides)
    params = convert_state(state, config)
    num_params = int(sum(np.size(v) for v in flatten(params).values()))
    meta = {"kind": "vae", "source": os.path.abspath(os.path.join(source, subfolder)), "layout": layout,
            "config": config.to_dict(), "num_params": num_params,
            "temporal_init": "fresh (last conv zero: decodes like the image decoder)" if temporal_decoder else None}
    save_params(params, out_dir, meta)
    return meta
