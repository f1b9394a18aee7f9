"""Stage I losses (VidRD sec. 4.4, LDM's LPIPS-free `LPIPSWithDiscriminator`): generator and discriminator.

Generator: rec + kl_weight * KL + adv_weight * disc_on * (-mean fake logits), where rec is the mean
absolute (L1) or squared (L2) pixel error, KL the posterior's KL to N(0, 1) summed over the latent
of each frame and averaged over frames (as LDM: sum per example, mean over the batch), and
disc_on = 1 from step `disc_start` on, 0 before. Discriminator: the hinge loss
0.5 * (mean relu(1 - real) + mean relu(1 + fake)), also gated by disc_on.

The adversarial weight is `adv_weight` (VidRD: 0.5); with `adaptive_adv_weight` it is LDM's
adv_weight * ||d rec / d W_last|| / (||d adv / d W_last|| + 1e-4), clipped to [0, 1e4] and not
differentiated, W_last being the decoder's last conv kernel.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array

REC_LOSSES = ("l1", "l2")


def reconstruction_loss(reconstruction: Array, target: Array, kind: str = "l1") -> Array:
    """Mean per-pixel L1 (LDM's choice) or L2 error."""
    diff = reconstruction.astype(jnp.float32) - target.astype(jnp.float32)
    if kind == "l1":
        return jnp.mean(jnp.abs(diff))
    if kind == "l2":
        return jnp.mean(jnp.square(diff))
    raise ValueError(f"config.autoencoder.rec_loss={kind!r} is not one of {REC_LOSSES}")


def generator_adversarial_loss(fake_logits: Array) -> Array:
    """The generator wants the discriminator to call its reconstructions real: -mean(logits)."""
    return -jnp.mean(fake_logits.astype(jnp.float32))


def discriminator_hinge_loss(real_logits: Array, fake_logits: Array) -> Array:
    """0.5 * (mean relu(1 - real) + mean relu(1 + fake))."""
    real = jnp.mean(jax.nn.relu(1.0 - real_logits.astype(jnp.float32)))
    fake = jnp.mean(jax.nn.relu(1.0 + fake_logits.astype(jnp.float32)))
    return 0.5 * (real + fake)


def disc_factor(step: Array, disc_start: int) -> Array:
    """1.0 from step `disc_start` on (0-based step counter), else 0.0: switches the GAN terms on."""
    return (step >= disc_start).astype(jnp.float32)


def adaptive_weight(rec_grad: Array, adv_grad: Array, adv_weight: float) -> Array:
    """LDM's calculate_adaptive_weight: balances the two gradients at the decoder's last layer."""
    ratio = jnp.linalg.norm(rec_grad) / (jnp.linalg.norm(adv_grad) + 1e-4)
    return jax.lax.stop_gradient(jnp.clip(ratio, 0.0, 1e4) * adv_weight)


def generator_loss(rec: Array, kl: Array, adv: Array, factor: Array, ae_cfg: Any,
                   adv_weight: Array | float | None = None) -> tuple[Array, dict[str, Array]]:
    """(total, metrics) from the three terms; `adv_weight` overrides ae_cfg.adv_weight (adaptive)."""
    weight = ae_cfg.adv_weight if adv_weight is None else adv_weight
    weight = jnp.asarray(weight, jnp.float32) * factor
    total = rec + ae_cfg.kl_weight * kl + weight * adv
    return total, {"loss": total, "rec_loss": rec, "kl_loss": kl, "adv_loss": adv, "adv_weight": weight}
