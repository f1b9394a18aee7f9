"""Train state (params, EMA params, optimizer state, step) and the optimizer from config."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs; a pytree, so it jits, shards and checkpoints as one."""

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any


def learning_rate_schedule(train_cfg: Any) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then cosine decay to 10% of it at `num_steps`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=train_cfg.learning_rate, warmup_steps=train_cfg.warmup_steps,
        decay_steps=max(train_cfg.num_steps, train_cfg.warmup_steps + 1),
        end_value=0.1 * train_cfg.learning_rate)


def make_optimizer(train_cfg: Any, frozen: tuple[str, ...] = ()) -> optax.GradientTransformation:
    """Global-norm clipping then AdamW; top-level params named in `frozen` get no updates at all
    (not even weight decay), e.g. a pretrained text encoder (`frozen_params(config)`)."""
    trainable = optax.chain(
        optax.clip_by_global_norm(train_cfg.grad_clip),
        optax.adamw(learning_rate_schedule(train_cfg), b1=0.9, b2=0.99,
                    weight_decay=train_cfg.weight_decay),
    )
    if not frozen:
        return trainable

    def labels(params: Any) -> Any:
        return {name: jax.tree.map(lambda _: "frozen" if name in frozen else "train", sub)
                for name, sub in params.items()}

    return optax.multi_transform({"train": trainable, "frozen": optax.set_to_zero()}, labels)


def frozen_params(config: Any) -> tuple[str, ...]:
    """Top-level params the config keeps fixed: the pretrained text encoder (clip / minilm)."""
    return ("text_encoder",) if str(config.model.get("text_encoder", "tiny")) != "tiny" else ()


def create_train_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      ema_params=jax.tree.map(jnp.copy, params), opt_state=optimizer.init(params))


def ema_update(ema: Any, params: Any, decay: float) -> Any:
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
