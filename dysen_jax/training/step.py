"""The eq. 1 denoising loss and the jitted, sharded train step."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from dysen_jax.diffusion.losses import diffusion_loss, prediction_target, q_sample
from dysen_jax.diffusion.schedules import NoiseSchedule
from dysen_jax.training.state import TrainState, ema_update

DSG_PREFIX = "dsg/"


def dsg_inputs(batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The batch's DSG arrays, keyed as the models expect (without the record prefix)."""
    return {k[len(DSG_PREFIX):]: v for k, v in batch.items() if k.startswith(DSG_PREFIX)}


def loss_fn(params: Any, model: Any, schedule: NoiseSchedule, diffusion_cfg: Any, batch: dict[str, jax.Array],
            key: jax.Array) -> jax.Array:
    """Noise the clips at random t, predict ε or v under condition dropout, mean squared error."""
    x0 = batch["video"]
    key_t, key_noise, key_drop = jax.random.split(key, 3)
    batch_size = x0.shape[0]
    t = jax.random.randint(key_t, (batch_size,), 0, schedule.num_timesteps)
    noise = jax.random.normal(key_noise, x0.shape, x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)
    keep = jax.random.uniform(key_drop, (batch_size,)) >= diffusion_cfg.cond_drop_prob
    output = model.apply({"params": params}, x_t, t, batch["text_tokens"], dsg_inputs(batch),
                         use_text=keep, use_dsg=keep, deterministic=True)
    target = prediction_target(schedule, x0, noise, t, diffusion_cfg.prediction)
    return diffusion_loss(output.astype(jnp.float32), target)


def make_train_step(model: Any, schedule: NoiseSchedule, optimizer: optax.GradientTransformation,
                    config: Any) -> Callable[[TrainState, dict[str, jax.Array], jax.Array], tuple[TrainState, dict]]:
    """(state, batch, base_key) -> (new state, metrics); the step's randomness is fold_in(key, step)."""

    def train_step(state: TrainState, batch: dict[str, jax.Array], base_key: jax.Array):
        key = jax.random.fold_in(base_key, state.step)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, model, schedule, config.diffusion, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state,
            ema_params=ema_update(state.ema_params, params, config.train.ema_decay))
        return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}

    return train_step
