"""What the benchmarks that score trained workdirs share: the --config/--workdir/--videos/--set
arguments, the config with its overrides, and each workdir's experiment with its EMA params."""

from __future__ import annotations

import argparse
import ast
from typing import Any, Iterator

from benchmarks.dynamic_shapes_eval import load_config


def apply_settings(config, settings: list[str]) -> None:
    """`--set KEY=VALUE` items onto the config (VALUE a Python literal, else a string)."""
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set {item!r}: write KEY=VALUE with a config key, e.g. model.pooled_conditions=False")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        try:
            config.update_from_flattened_dict({key.strip(): parsed})
        except (KeyError, AttributeError, TypeError) as err:
            raise SystemExit(f"--set {item!r}: {err}") from None


def runs_parser(doc: str, set_example: str) -> argparse.ArgumentParser:
    """--config, --workdir (comma-separated), --videos and repeatable --set; add more arguments to it."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="configs/<file>.py[:variant] the runs were trained with.")
    parser.add_argument("--workdir", required=True, help="Comma-separated trained workdirs.")
    parser.add_argument("--videos", type=int, default=32, help="Held-out clips (evaluate.num_videos).")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"A config override (repeatable), e.g. --set {set_example}.")
    return parser


def runs_config(args: argparse.Namespace):
    """The --config with the --set overrides applied."""
    config = load_config(args.config)
    apply_settings(config, args.set)
    return config


def heldout_items(config, videos: int) -> list:
    """evaluate's held-out dynamic-shapes split: `videos` clips at the config's frames and resolution."""
    from dysen_jax.evaluate import heldout_split

    ev = config.evaluate
    return heldout_split(videos, config.data.num_frames, config.data.resolution, ev.max_actions, ev.split_seed)


def trained_runs(config, workdirs: str) -> Iterator[tuple[str, Any, Any]]:
    """(workdir, experiment, EMA params) for each of the comma-separated `workdirs`, loaded one at a time."""
    from dysen_jax.experiment import load_experiment
    from dysen_jax.sample import load_params

    for workdir in filter(None, workdirs.split(",")):
        experiment = load_experiment(config, workdir)
        yield workdir, experiment, load_params(experiment, workdir)
