"""Shared command-line plumbing for the `python -m dysen_jax.<job>` entry points.

`--config=configs/x.py` (or `configs/x.py:variant`) loads an ml_collections config and any key can
be overridden with `--config.section.key=value`. Flags are defined only when an entry point runs,
so importing the jobs as libraries (tests, notebooks) defines none. Entry points that build a device
mesh ask for "distributed" among their extra flags: `run` then joins the multi-host run
(`--coordinator_address/--num_processes/--process_id`, SLURM or Cloud TPU; parallel/distributed.py)
before `main` starts.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from absl import app, flags

FLAGS = flags.FLAGS

_FLAG_DEFINITIONS: dict[str, Callable[[], object]] = {
    "workdir": lambda: flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, samples."),
    "output_dir": lambda: flags.DEFINE_string("output_dir", None, "Where preprocess writes TFRecords."),
    "prompt": lambda: flags.DEFINE_string("prompt", None, "Text prompt (default: config.sample.prompt)."),
    "output": lambda: flags.DEFINE_string("output", "sample.mp4", "Output video path (.mp4 or .gif)."),
    "seed": lambda: flags.DEFINE_integer("seed", 0, "Sampling seed."),
    "distributed": lambda: _define_distributed_flags(),
    "sampling": lambda: _define_sampling_flags(),
}

# Sampling flag -> the config key it overrides (unset flags leave the config's value).
SAMPLING_FLAGS = {
    "backend": "planner.backend", "num_frames": "sample.num_frames", "steps": "sample.steps",
    "sampler": "sample.sampler", "eta": "sample.eta", "guidance": "sample.guidance",
    "dsg_guidance": "sample.dsg_guidance", "negative_prompt": "sample.negative_prompt",
    "prompt_frames": "sample.prompt_frames", "pns_alpha": "sample.pns_alpha", "staged_beta": "sample.staged_beta",
    "batch_size": "sample.batch_size", "frame_noise_share": "sample.frame_noise_share",
}


def _define_sampling_flags() -> None:
    """`python -m dysen_jax.sample` flags; each one overrides its config key (SAMPLING_FLAGS) when given."""
    flags.DEFINE_string("prompts", None, "File with one prompt per line: outputs OUTPUT_0001.mp4, ... (resumable).")
    flags.DEFINE_enum("backend", None, ["rules", "openai"], "Planner backend (planner.backend; openai settings: "
                      "--config.planner.llm.*).")
    flags.DEFINE_integer("num_frames", None, "Video frames: the clip length N (data.num_frames) or a multiple, "
                         "a VidRD long video of num_frames/N clips (sample.num_frames).")
    flags.DEFINE_integer("steps", None, "Denoising steps (sample.steps).")
    flags.DEFINE_enum("sampler", None, ["ddim", "ddpm"], "ddim, or ddpm ancestral (sample.sampler).")
    flags.DEFINE_float("eta", None, "DDIM eta: 0 deterministic, 1 = ddpm (sample.eta).")
    flags.DEFINE_float("guidance", None, "Text guidance scale (sample.guidance).")
    flags.DEFINE_float("dsg_guidance", None, "DSG guidance scale, given the text (sample.dsg_guidance).")
    flags.DEFINE_string("negative_prompt", None, "Text the unconditional branches see instead of the null text.")
    flags.DEFINE_integer("prompt_frames", None, "VidRD M: last frames of a clip that prompt the next (sample.prompt_frames).")
    flags.DEFINE_float("pns_alpha", None, "VidRD past-dependent noise alpha; inf = noise reversion only "
                       "(sample.pns_alpha).")
    flags.DEFINE_float("staged_beta", None, "VidRD staged guidance beta in [0, 1] (sample.staged_beta).")
    flags.DEFINE_integer("batch_size", None, "Prompts sampled together with --prompts (sample.batch_size).")
    flags.DEFINE_float("frame_noise_share", None, "Share of the sampler's noise all frames have in common; -1 = the "
                       "trained diffusion.frame_noise_share (sample.frame_noise_share).")


def _define_distributed_flags() -> None:
    """Multi-host flags (dysen_jax/parallel/distributed.py); each falls back to a DYSEN_* variable."""
    flags.DEFINE_string("coordinator_address", None, "Process 0's HOST:PORT, same on every process "
                        "(env DYSEN_COORDINATOR). Unset: SLURM / Cloud TPU are detected, else one process.")
    flags.DEFINE_integer("num_processes", None, "Number of processes (env DYSEN_NUM_PROCESSES).")
    flags.DEFINE_integer("process_id", None, "This process, 0..num_processes-1 (env DYSEN_PROCESS_ID).")
    flags.DEFINE_string("local_device_ids", None, "Comma-separated local accelerator ids this process uses "
                        "(env DYSEN_LOCAL_DEVICE_IDS; default all, or jax's per-task choice under SLURM).")
    flags.DEFINE_string("cluster_detection", None, "'' (detect SLURM / Cloud TPU), none, auto, or a jax method: "
                        "slurm, ompi, mpi4py, gce_tpu, gke_tpu, k8s (env DYSEN_CLUSTER_DETECTION).")


def _initialize_distributed() -> None:
    """jax.distributed.initialize from the flags above, before the job touches any JAX backend."""
    from dysen_jax.parallel.distributed import initialize

    try:
        initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.local_device_ids,
                   FLAGS.cluster_detection)
    except ValueError as error:  # bad flags: a clear message, not a traceback
        raise app.UsageError(str(error)) from None


def run(main: Callable[[list[str]], None], extra_flags: tuple[str, ...] = (),
        required: tuple[str, ...] = ()) -> None:
    """Defines --config plus `extra_flags`, then runs `main` under absl."""
    from ml_collections import config_flags

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/tiny.py.", lock_config=True)
    for name in extra_flags:
        _FLAG_DEFINITIONS[name]()
    flags.mark_flags_as_required(["config", *required])
    job = _with_distributed(main) if "distributed" in extra_flags else main
    run_absl(_quiet(job))


def run_absl(main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)`, except that --help exits 0 (absl exits 1 after printing it; asking for help
    is not an error). For scripts with their own absl flags (benchmarks/)."""
    try:
        app.run(main)
    except SystemExit as exit_:
        if exit_.code == 1 and set(sys.argv[1:]) & {"--help", "-h", "-?", "--helpfull", "--helpshort"}:
            raise SystemExit(0) from None
        raise


def _with_distributed(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    """Joins the multi-process run (if any) after flag parsing and before `main` runs any JAX."""

    def wrapped(argv: list[str]) -> None:
        _initialize_distributed()
        main(argv)

    return wrapped


def _quiet(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    """absl logs only warnings and errors unless -v/--verbosity is given (our progress goes to stdout)."""

    def wrapped(argv: list[str]) -> None:
        from absl import logging

        if not FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        main(argv)

    return wrapped
