"""Shared command-line plumbing for the `python -m dysen_jax.<job>` entry points.

`--config=configs/x.py` (or `configs/x.py:variant`) loads an ml_collections config and any key can
be overridden with `--config.section.key=value`. Flags are defined only when an entry point runs,
so importing the jobs as libraries (tests, notebooks) defines none.
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
}


def run(main: Callable[[list[str]], None], extra_flags: tuple[str, ...] = (),
        required: tuple[str, ...] = ()) -> None:
    """Defines --config plus `extra_flags`, then runs `main` under absl."""
    from ml_collections import config_flags

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/tiny.py.", lock_config=True)
    for name in extra_flags:
        _FLAG_DEFINITIONS[name]()
    flags.mark_flags_as_required(["config", *required])
    try:
        app.run(_quiet(main))
    except SystemExit as exit_:
        # absl exits 1 after printing --help; asking for help is not an error.
        if exit_.code == 1 and set(sys.argv[1:]) & {"--help", "-h", "-?", "--helpfull", "--helpshort"}:
            raise SystemExit(0) from None
        raise


def _quiet(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    """absl logs only warnings and errors unless -v/--verbosity is given (our progress goes to stdout)."""

    def wrapped(argv: list[str]) -> None:
        from absl import logging

        if not FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        main(argv)

    return wrapped
