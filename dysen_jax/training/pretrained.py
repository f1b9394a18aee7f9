"""Start training from converted weights: the parts of a fresh train state that a config names.

`model.text_encoder` = "clip" / "minilm" puts the pretrained tower at params["text_encoder"]
(`text_encoder_params`); `init_from.unet` (a folder written by `python -m dysen_jax.convert --kind
unet2d|unet3d`) replaces params["unet"]. Each loaded subtree is checked against the freshly
initialised one (every missing, unexpected or mis-shaped param is named), placed with the fresh
subtree's sharding, and copied into the EMA params; Adam's moments start at zero either way.
`init_from.checkpoint` (the previous training stage's workdir) is applied first.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from dysen_jax.convert.common import flatten, load_params, to_params


def pretrained_parts(config: Any) -> dict[str, Any]:
    """{top-level param name: converted params tree} for everything the config asks to load."""
    from dysen_jax.models.text_encoder import text_encoder_params

    parts: dict[str, Any] = {}
    text = text_encoder_params(config.model)
    if text is not None:
        parts["text_encoder"] = text
    init_from = config.get("init_from") if hasattr(config, "get") else None
    unet_path = str(init_from.get("unet", "") or "") if init_from is not None else ""
    if unet_path:
        params, meta = load_params(unet_path)
        if meta.get("kind") not in ("unet2d", "unet3d"):
            raise ValueError(f"init_from.unet={unet_path!r} holds a {meta.get('kind')!r} checkpoint, not a UNet: "
                             "convert one with `python -m dysen_jax.convert --kind unet2d|unet3d`")
        parts["unet"] = params
    return parts


def with_previous_stage(state: Any, config: Any, shardings: Any) -> Any:
    """`init_from.checkpoint` (a previous stage's workdir): its EMA params replace every param of the
    same path and shape, in params and EMA params; params the previous stage lacked stay fresh, and
    its params this config lacks are left out (both counted in the log)."""
    from flax.traverse_util import flatten_dict, unflatten_dict

    from dysen_jax import logs
    from dysen_jax.training.checkpoint import abstract_like, restore_matching_params

    workdir = str(config.get("init_from", {}).get("checkpoint", "") or "")
    if not workdir:
        return state
    abstract = abstract_like(state.params, shardings.params)
    loaded, fresh, dropped = restore_matching_params(workdir, abstract)
    params = flatten_dict(dict(state.params), sep="/")
    params.update(loaded)
    params = unflatten_dict(params, sep="/")
    logs.info(f"init_from.checkpoint: {len(loaded)} params from {workdir}, {len(fresh)} fresh"
              + (f" (e.g. {', '.join(fresh[:3])})" if fresh else "")
              + (f", {len(dropped)} of its params unused by this config (e.g. {', '.join(dropped[:3])})"
                 if dropped else ""))
    return state.replace(params=params, ema_params=jax.tree.map(lambda x: x.copy(), params))


def with_pretrained(state: Any, config: Any, shardings: Any) -> Any:
    """The train state with the config's pretrained parts in params and EMA params (see module doc):
    first the previous stage's checkpoint (`init_from.checkpoint`), then converted weights on top."""
    state = with_previous_stage(state, config, shardings)
    parts = pretrained_parts(config)
    if not parts:
        return state
    params, ema = dict(state.params), dict(state.ema_params)
    for name, loaded in parts.items():
        if name not in params:
            raise ValueError(f"the model has no params[{name!r}] to load pretrained weights into")
        checked = to_params(flatten(loaded), params[name], f"pretrained {name}")
        placed = jax.tree.map(lambda new, sharding: jax.device_put(np.asarray(new, np.float32), sharding),
                              checked, shardings.params[name])
        params[name] = placed
        ema[name] = jax.tree.map(lambda x: x.copy(), placed)
    return state.replace(params=params, ema_params=ema)
