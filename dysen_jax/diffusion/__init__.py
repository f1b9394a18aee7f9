"""Diffusion: noise schedules, training targets and loss, DDIM + classifier-free guidance.

Timestep convention everywhere: integer t in [0, T-1] indexes the schedule, t = 0 least noisy.
"""

from dysen_jax.diffusion.losses import (PREDICTION_KINDS, check_prediction, diffusion_loss,
                                        predict_x0_and_eps, prediction_target, q_sample,
                                        sample_timesteps)
from dysen_jax.diffusion.samplers import ddim_sample, ddim_step, ddim_timesteps, guided_output
from dysen_jax.diffusion.schedules import SCHEDULE_KINDS, NoiseSchedule, make_schedule

__all__ = [
    "NoiseSchedule", "make_schedule", "SCHEDULE_KINDS",
    "PREDICTION_KINDS", "check_prediction", "q_sample", "prediction_target", "predict_x0_and_eps",
    "diffusion_loss", "sample_timesteps",
    "guided_output", "ddim_timesteps", "ddim_step", "ddim_sample",
]
