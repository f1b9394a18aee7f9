"""Plan a prompt from the command line: prints one JSON object {"events": [...], "dsg": [...]}.

    python -m dysen_jax.plan --prompt "the red circle moves left, then the blue square jumps"
    python -m dysen_jax.plan --backend openai --base_url http://127.0.0.1:8000/v1 --model M \
        --api_key_env OPENAI_API_KEY --prompt "..."
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
    llm = parser.add_argument_group("openai backend (any OpenAI-compatible server)")
    llm.add_argument("--base_url", default="http://127.0.0.1:8000/v1", help="server URL ending in /v1")
    llm.add_argument("--model", default="gpt-4o-mini", help="model name the server knows")
    llm.add_argument("--api_key_env", default="OPENAI_API_KEY",
                     help="NAME of the environment variable holding the key ('EMPTY' for keyless servers)")
    llm.add_argument("--num_demonstrations", type=int, default=5, help="in-context demonstrations D")
    return parser


def _planner(args: argparse.Namespace):
    """The planner the flags ask for (the openai backend gets a client and demonstrations)."""
    if args.backend != "openai":
        return get_planner(args.backend)
    from dysen_jax.planner.llm_client import LLMClient, LLMConfig
    from dysen_jax.planner.prompts import synthetic_demonstrations

    client = LLMClient(LLMConfig(base_url=args.base_url, model=args.model, api_key_env=args.api_key_env))
    return get_planner("openai", client=client, demonstrations=synthetic_demonstrations(args.num_demonstrations))


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the plan as JSON; returns 0, or 2 with a one-line error on stderr for bad input."""
    args = _parser().parse_args(argv)
    try:
        plan = _planner(args).plan(args.prompt)
    except (DSGError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(plan.dumps(indent=args.indent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
