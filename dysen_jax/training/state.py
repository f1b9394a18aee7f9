"""Train state (params, EMA params, optimizer state, step) and the optimizer from config."""

from __future__ import annotations

import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs; a pytree, so it jits, shards and checkpoints as one.

    `frozen` holds the params of modules outside the denoiser that the step uses but never trains
    (the VAE of a latent model), so a checkpoint is self-contained for sampling.
    """

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    frozen: Any = flax.struct.field(default_factory=dict)


def learning_rate_schedule(train_cfg: Any) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then cosine decay to 10% of it at `num_steps`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=train_cfg.learning_rate, warmup_steps=train_cfg.warmup_steps,
        decay_steps=max(train_cfg.num_steps, train_cfg.warmup_steps + 1),
        end_value=0.1 * train_cfg.learning_rate)


def make_optimizer(train_cfg: Any, frozen: tuple[str, ...] = ()) -> optax.GradientTransformation:
    """Global-norm clipping then AdamW on the trainable params; the others get no update at all (not
    even weight decay). Frozen: top-level params named in `frozen` (`frozen_params(config)`, e.g. a
    pretrained text encoder), and, when `train.trainable` is a regex, every param whose '/'-joined
    path it does not match (e.g. VidRD's stage II: only temporal and attention layers train)."""
    trainable = optax.chain(
        optax.clip_by_global_norm(train_cfg.grad_clip),
        optax.adamw(learning_rate_schedule(train_cfg), b1=0.9, b2=0.99,
                    weight_decay=train_cfg.weight_decay),
    )
    pattern = str(train_cfg.get("trainable", "") or "")
    if not frozen and not pattern:
        return trainable
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as e:
        raise ValueError(f"train.trainable={pattern!r} is not a valid regular expression: {e}") from None

    def labels(params: Any) -> Any:
        def label(path: tuple, _: Any) -> str:
            names = [str(getattr(k, "key", k)) for k in path]
            if names[0] in frozen or (regex is not None and not regex.search("/".join(names))):
                return "frozen"
            return "train"

        tree = jax.tree_util.tree_map_with_path(label, params)
        if "train" not in jax.tree.leaves(tree):
            raise ValueError(f"train.trainable={pattern!r} matches no parameter path (paths look like "
                             "'unet/down_blocks_0/temp_convs_0/conv_0/kernel'): nothing would train")
        return tree

    return optax.multi_transform({"train": trainable, "frozen": optax.set_to_zero()}, labels)


def frozen_params(config: Any) -> tuple[str, ...]:
    """Top-level params the config keeps fixed: the pretrained text encoder (clip / minilm)."""
    return ("text_encoder",) if str(config.model.get("text_encoder", "tiny")) != "tiny" else ()


def create_train_state(params: Any, optimizer: optax.GradientTransformation, frozen: Any = None) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=jax.tree.map(jnp.copy, params),
                      opt_state=optimizer.init(params), frozen={} if frozen is None else frozen)


def ema_update(ema: Any, params: Any, decay: float) -> Any:
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
