"""Diffusion: noise schedules, training targets and loss, DDIM/DDPM with compositional (text, DSG)
classifier-free guidance, and VidRD long videos.

Timestep convention everywhere: integer t in [0, T-1] indexes the schedule, t = 0 least noisy.
"""

from dysen_jax.diffusion.long_video import (VidRDSettings, long_video, next_clip_noise, pns_coefficients,
                                            reverse_frames, staged_copy_mask)
from dysen_jax.diffusion.noise import check_frame_noise_share, frame_noise
from dysen_jax.diffusion.losses import (PREDICTION_KINDS, check_prediction, diffusion_loss,
                                        predict_x0_and_eps, prediction_target, q_sample,
                                        sample_timesteps)
from dysen_jax.diffusion.samplers import (SAMPLER_KINDS, SamplerSettings, ddim_step, ddim_timesteps,
                                          guidance_branches, guided_output, initial_noise, item_keys,
                                          run_sampler, sample, step_noise_keys)
from dysen_jax.diffusion.schedules import SCHEDULE_KINDS, NoiseSchedule, make_schedule

__all__ = [
    "NoiseSchedule", "make_schedule", "SCHEDULE_KINDS",
    "PREDICTION_KINDS", "check_prediction", "q_sample", "prediction_target", "predict_x0_and_eps",
    "diffusion_loss", "sample_timesteps", "frame_noise", "check_frame_noise_share",
    "SAMPLER_KINDS", "SamplerSettings", "guidance_branches", "guided_output", "ddim_timesteps", "ddim_step",
    "item_keys", "initial_noise", "step_noise_keys", "run_sampler", "sample",
    "VidRDSettings", "long_video", "next_clip_noise", "pns_coefficients", "reverse_frames", "staged_copy_mask",
]
