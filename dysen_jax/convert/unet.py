"""diffusers UNet2DConditionModel (SD 1.x / 2.x) and UNet3DConditionModel (ModelScope) -> our UNet3D params.

`python -m dysen_jax.convert --from DIR_OR_FILE --kind unet2d|unet3d --out OUT` (a diffusers `unet` folder
with config.json + *.safetensors, or a pipeline folder, whose `unet/` subfolder is used; or an original
Stable Diffusion 1.x / 2.x single file, whose CompVis names `convert.ldm_unet` renames and whose config
comes from a config.json beside it or from its shapes).

UNet3D's parameter tree is diffusers' module tree with list indices joined by "_", so the mapping is by
name: `down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q.weight` ->
`down_blocks_0/attentions_1/transformer_blocks_0/attn1/to_q/kernel`; the only renaming is inside
ModelScope's TemporalConvLayer (`convK.0` GroupNorm -> `normK`, `convK.2|3` Conv3d -> `convK`).
Layouts: Linear [out, in] -> [in, out]; Conv2d [out, in, kh, kw] -> [kh, kw, in, out] (a 1x1 conv
proj_in/proj_out of SD 1.x -> Dense [in, out]); Conv3d (3, 1, 1) -> [3, in, out]; norm weight -> scale.

What comes from the checkpoint and what from a fresh init (seed 0, recorded in meta.json):
- unet2d: every spatial param from the checkpoint; the temporal convs, temporal attentions,
  transformer_in, per-frame affines and DSG cross-attentions from a fresh init, where their outputs
  are zero (affine: identity), so the converted UNet3D is SD applied frame by frame.
- unet3d: everything ModelScope has from the checkpoint (spatial and temporal); the per-frame
  affines (off in ModelScope's config) and the DSG cross-attentions from a fresh init.
Every checkpoint tensor must be used and every param filled, else one ConversionError names them.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Sequence

import numpy as np

from dysen_jax.convert.common import (ConversionError, TorchState, check_all_used, conv, flatten, linear,
                                      read_config, save_params, to_params, unflatten)
from dysen_jax.convert.ldm_unet import infer_diffusers_config, is_ldm_unet, select_unet_tensors, to_diffusers

KINDS = {"unet2d": "UNet2DConditionModel", "unet3d": "UNet3DConditionModel"}
TEMPORAL = re.compile(r"(^|/)(temp_convs_\d+|temp_attentions_\d+|transformer_in)(/|$)")
AFFINE = re.compile(r"(^|/)frame_affine(/|$)")
ZERO_OUT = re.compile(r"(temp_convs_\d+/conv4|(temp_attentions_\d+|transformer_in)/proj_out)/kernel$")


def flax_module_path(torch_name: str) -> tuple[str, str]:
    """('down_blocks_0/resnets_0/conv1', 'weight') for 'down_blocks.0.resnets.0.conv1.weight'."""
    *parts, leaf = torch_name.split(".")
    joined: list[str] = []
    for part in parts:
        if part.isdigit() and joined:
            joined[-1] = f"{joined[-1]}_{part}"
        else:
            joined.append(part)
    path = "/".join(joined)
    path = re.sub(r"(temp_convs_\d+)/conv(\d)_0$", r"\1/norm\2", path)       # TemporalConvLayer GroupNorm
    path = re.sub(r"(temp_convs_\d+)/conv(\d)_[23]$", r"\1/conv\2", path)    # TemporalConvLayer Conv3d
    return path, leaf


def to_flax(w: np.ndarray, leaf: str, module: str, expected: Mapping[str, tuple[int, ...]]) -> tuple[str, np.ndarray]:
    """(flax param path, array in flax layout) for one torch tensor; the module's expected params decide
    between norm scale, Dense kernel (incl. a 1x1 conv) and conv kernel."""
    if leaf == "bias":
        return f"{module}/bias", w
    if leaf != "weight":
        return f"{module}/{leaf}", w
    if f"{module}/scale" in expected:
        return f"{module}/scale", w
    path = f"{module}/kernel"
    want = expected.get(path)
    if want is None:
        return path, w          # not a param of ours: reported as unexpected
    if w.ndim == 2:
        return path, linear(w)
    if w.ndim == 4 and len(want) == 2:
        if w.shape[2:] != (1, 1):
            raise ConversionError(f"{module}.weight {w.shape}: a Dense layer can only take a 1x1 conv")
        return path, linear(w[:, :, 0, 0])
    if w.ndim == 5:
        if w.shape[3:] != (1, 1):
            raise ConversionError(f"{module}.weight {w.shape}: temporal convs must be (k, 1, 1)")
        return path, conv(w[:, :, :, 0, 0])
    return path, conv(w)


def torch_name(path: str) -> str:
    """Best-effort diffusers name of a flax param path (for error messages)."""
    *mods, leaf = path.split("/")
    names = []
    for i, m in enumerate(mods):
        temp_conv = i > 0 and mods[i - 1].startswith("temp_convs_")
        if temp_conv and re.fullmatch(r"norm\d", m):
            names.append(f"conv{m[-1]}.0")
        elif temp_conv and re.fullmatch(r"conv\d", m):
            names.append(f"{m}.{2 if m == 'conv1' else 3}")
        else:
            names.append(re.sub(r"_(\d+)$", r".\1", m) if re.search(r"(blocks|resnets|attentions|convs|samplers|"
                                                                   r"to_out|net)_\d+$", m) else m)
    return ".".join(names + ["weight" if leaf in ("kernel", "scale") else leaf])


def is_addition(path: str, kind: str, extra_contexts: Sequence[str]) -> bool:
    """Params that the `kind` checkpoint does not have: taken from a fresh init."""
    if AFFINE.search(path) or any(re.search(rf"/(attn|norm)_{re.escape(n)}/", path) for n in extra_contexts):
        return True
    return kind == "unet2d" and bool(TEMPORAL.search(path))


def fresh_param(path: str, shape: tuple[int, ...], rng: np.random.Generator, extra_contexts: Sequence[str]) -> np.ndarray:
    """A fresh-init value drawn as the modules' initializers do (norm scales 1, biases 0, kernels
    lecun_normal = truncated normal with std sqrt(1/fan_in), and the zero-initialised outputs that make
    every addition the identity: temporal conv4, temporal proj_out, attn_<extra>/to_out_0). Computed
    in numpy because jitting UNet3D.init compiles for minutes at SD size (tens of seconds even tiny)."""
    leaf = path.rsplit("/", 1)[-1]
    if leaf == "scale":
        return np.ones(shape, np.float32)
    zero_out = ZERO_OUT.search(path) or any(path.endswith(f"/attn_{n}/to_out_0/kernel") for n in extra_contexts)
    if leaf == "bias" or zero_out:
        return np.zeros(shape, np.float32)
    if leaf != "kernel":
        raise ConversionError(f"no fresh-init rule for param {path}")
    std = np.sqrt(1.0 / int(np.prod(shape[:-1]))) / 0.87962566103423978   # flax lecun_normal (truncated at 2 std)
    draw = rng.standard_normal(shape)
    while np.any(bad := np.abs(draw) > 2):
        draw[bad] = rng.standard_normal(int(bad.sum()))
    return (draw * std).astype(np.float32)


def _model_and_inputs(config, context_names: Sequence[str], dsg_dim: int):
    """UNet3D and the smallest inputs that build all its params (shapes do not depend on F, H, W)."""
    import jax.numpy as jnp

    from dysen_jax.models.unet3d import UNet3D

    model = UNet3D(config, tuple(context_names))
    side = 2 ** (config.num_levels - 1)
    x = jnp.zeros((1, 1, side, side, config.in_channels), jnp.float32)
    contexts = {n: (jnp.zeros((1, 1, 1, config.cross_attention_dim if n == "text" else dsg_dim), jnp.float32),
                    jnp.ones((1, 1, 1), bool)) for n in context_names}
    return model, (x, jnp.zeros((1,), jnp.int32), contexts)


def convert_state(state: TorchState, config, kind: str, context_names: Sequence[str] = ("dsg", "text"),
                  dsg_dim: int | None = None, seed: int = 0) -> dict[str, Any]:
    """UNet3D params tree (the "params" collection's content) from a TorchState in diffusers names."""
    import jax

    model, inputs = _model_and_inputs(config, context_names, dsg_dim or config.cross_attention_dim)
    expected = flatten(jax.eval_shape(model.init, jax.random.key(seed), *inputs)["params"])
    shapes = {k: tuple(v.shape) for k, v in expected.items()}
    extra = [n for n in context_names if n != "text"]
    converted: dict[str, np.ndarray] = {}
    misshaped = []
    for name in state.names():
        module, leaf = flax_module_path(name)
        path, value = to_flax(state.tensors[name], leaf, module, shapes)
        if path in shapes and not is_addition(path, kind, extra):
            state.take(name)
            if tuple(value.shape) != shapes[path]:
                misshaped.append(f"{name}: checkpoint {tuple(state.tensors[name].shape)} -> {tuple(value.shape)} "
                                 f"vs model {shapes[path]}")
            converted[path] = value
    from_checkpoint = {k: v for k, v in expected.items() if not is_addition(k, kind, extra)}
    missing = sorted(torch_name(k) for k in from_checkpoint if k not in converted)
    unused = state.unused()
    problems = [f"{label} {len(items)}: {', '.join(items[:12])}{' ...' if len(items) > 12 else ''}"
                for label, items in (("missing", missing), ("mis-shaped", misshaped), ("unexpected", unused)) if items]
    if problems:
        raise ConversionError(f"{state.source} as {KINDS[kind]}: " + " | ".join(problems)
                              + " (is --kind right? does config.json match the weights?)")
    spatial = to_params(converted, from_checkpoint, f"{KINDS[kind]} {state.source}")
    check_all_used(state)
    rng = np.random.default_rng(seed)
    merged = flatten(spatial)
    merged.update({k: fresh_param(k, shapes[k], rng, extra) for k in sorted(shapes) if is_addition(k, kind, extra)})
    return unflatten(merged)


def convert(source: str, out_dir: str, kind: str = "unet2d", subfolder: str = "",
            context_names: Sequence[str] = ("dsg", "text"), dsg_dim: int | None = None, seed: int = 0,
            **overrides: Any) -> dict[str, Any]:
    """Converts a diffusers UNet folder (or a pipeline folder: subfolder 'unet' is used when present), or an
    original SD single file, and writes out_dir/params.msgpack + meta.json; returns the meta. `overrides`
    set UNet3DConfig fields (e.g. temporal_causal=True, max_frames=16 for unet2d; for an original file
    without a config.json, what its shapes cannot tell: num_attention_heads, norm_num_groups); `dsg_dim`
    is H^G's width (default: the cross-attention dim)."""
    from dysen_jax.models.unet_config import from_diffusers_config

    if kind not in KINDS:
        raise ConversionError(f"convert.unet handles kinds {sorted(KINDS)}, not {kind!r}")
    if not subfolder and os.path.isdir(os.path.join(source, "unet")) and not os.path.exists(
            os.path.join(source, "config.json")):
        subfolder = "unet"
    cfg = read_config(source, subfolder)
    if not cfg and os.path.isfile(source):   # a single file: a diffusers UNet config.json beside it, if any
        cfg = read_config(os.path.dirname(os.path.abspath(source)))
    state = TorchState.load(source, subfolder)
    layout = "diffusers"
    if is_ldm_unet(state.tensors):
        layout = "ldm"
        tensors = select_unet_tensors(state.tensors)
        cfg = cfg or infer_diffusers_config(tensors, attention_heads_given="num_attention_heads" in overrides)
        state = TorchState(to_diffusers(tensors), state.source)
    if not cfg:
        raise ConversionError(f"{source}: no config.json next to the weights; the UNet's architecture comes from it "
                              "(save the model with diffusers' save_pretrained)")
    found = cfg.get("_class_name", "UNet2DConditionModel")
    if found != KINDS[kind]:
        other = {v: k for k, v in KINDS.items()}.get(found)
        raise ConversionError(f"{source}: config.json describes a {found}, not a {KINDS[kind]}"
                              + (f" (use --kind {other})" if other else ""))
    try:
        config = from_diffusers_config(cfg, **overrides)
    except (ValueError, TypeError) as err:
        raise ConversionError(f"{source}: {err}") from err
    params = convert_state(state, config, kind, context_names, dsg_dim, seed)
    extra = [n for n in context_names if n != "text"]
    num_params = int(sum(np.size(v) for v in flatten(params).values()))
    meta = {"kind": kind, "source": os.path.abspath(os.path.join(source, subfolder)), "layout": layout,
            "config": config.to_dict(),
            "context_names": list(context_names), "dsg_dim": dsg_dim or config.cross_attention_dim,
            "num_params": num_params, "diffusers_config": cfg,
            "fresh_init": {"seed": seed, "params": ("temporal, frame_affine, " if kind == "unet2d" else "frame_affine, ")
                           + ", ".join(f"attn_{n}/norm_{n}" for n in extra)}}
    save_params(params, out_dir, meta)
    return meta


def load_pretrained(path: str, **overrides: Any):
    """(UNet3D, {"params": tree}, meta) from a folder written by `python -m dysen_jax.convert --kind unet2d|unet3d`.
    `overrides` change config fields that add no params (e.g. temporal_causal, dropout)."""
    from dysen_jax.convert.common import load_params
    from dysen_jax.models.unet3d import UNet3D
    from dysen_jax.models.unet_config import UNet3DConfig

    params, meta = load_params(path)
    if meta.get("kind") not in KINDS:
        raise ValueError(f"{path} holds a {meta.get('kind')!r} checkpoint, not a UNet (unet2d/unet3d)")
    config = UNet3DConfig.from_dict({**meta["config"], **overrides})
    return UNet3D(config, tuple(meta.get("context_names", ("text",)))), {"params": params}, meta
