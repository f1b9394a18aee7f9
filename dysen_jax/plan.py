"""Plan a prompt from the command line: prints one JSON object {"events": [...], "dsg": [...]}.

    python -m dysen_jax.plan --prompt "the red circle moves left, then the blue square jumps"
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from dysen_jax.dsg.schema import DSGError
from dysen_jax.planner.base import BACKENDS, get_planner


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dysen_jax.plan", description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", required=True, help="the text prompt (caption) to plan")
    parser.add_argument("--backend", default="rules", help=f"planner backend, one of: {', '.join(BACKENDS)}")
    parser.add_argument("--indent", type=int, default=None, help="pretty-print the JSON with this indent")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the plan as JSON; returns 0, or 2 with a one-line error on stderr for bad input."""
    args = _parser().parse_args(argv)
    try:
        plan = get_planner(args.backend).plan(args.prompt)
    except (DSGError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(plan.dumps(indent=args.indent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
