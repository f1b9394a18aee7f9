"""The planner from the command line.

    python -m dysen_jax.plan --prompt "the red circle moves left, then the blue square jumps"
    python -m dysen_jax.plan --backend openai --base_url http://127.0.0.1:8000/v1 --model M --prompt "..."
    python -m dysen_jax.plan evaluate --gold FILE.jsonl [planner flags]     # planner quality
    python -m dysen_jax.plan build-bank --output FILE.jsonl                 # demonstration bank
    python -m dysen_jax.plan train-selector --output POLICY [planner flags] # RL demonstration selection

Without a subcommand it plans one prompt and prints one JSON object {"events": [...], "dsg": [...]}.
Every subcommand takes the planner flags of dysen_jax/planner/settings.py (`--help` lists them).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from dysen_jax.dsg.schema import DSGError

# subcommand -> module with `main(argv) -> int`
SUBCOMMANDS: dict[str, str] = {
    "evaluate": "dysen_jax.planner.evaluate",
    "build-bank": "dysen_jax.planner.bank",
    "train-selector": "dysen_jax.planner.selector_train",
}


def _parser() -> argparse.ArgumentParser:
    from dysen_jax.planner.settings import add_planner_flags

    parser = argparse.ArgumentParser(prog="python -m dysen_jax.plan", description=__doc__.splitlines()[0],
                                     epilog="subcommands: " + ", ".join(SUBCOMMANDS))
    parser.add_argument("--prompt", required=True, help="the text prompt (caption) to plan")
    parser.add_argument("--indent", type=int, default=None, help="pretty-print the JSON with this indent")
    add_planner_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the plan as JSON; returns 0, or 2 with a one-line error on stderr for bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    from dysen_jax.planner.base import planner_from_config
    from dysen_jax.planner.settings import planner_config_from_flags

    args = _parser().parse_args(argv)
    try:
        plan = planner_from_config(planner_config_from_flags(args)).plan(args.prompt)
    except (DSGError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(plan.dumps(indent=args.indent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
