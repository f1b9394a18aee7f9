"""The planner's settings (the `planner` section of every config) and their command-line flags.

One definition, used by configs/*.py (`c.planner = planner_config()`) and by the flags of
`python -m dysen_jax.plan` and its subcommands, so both spell every setting the same way.
Table 4 of the paper maps onto these switches: w/o Dysen = `model.use_dsg=False` (no planner
input reaches the model), w/o imagination = `imagination=False`, w/o SWC = `sliding_window=False`,
w/o RL-ICL = `selection='random'`.
"""

from __future__ import annotations

import argparse
from typing import Any

import ml_collections

SELECTIONS: tuple[str, ...] = ("fixed", "random", "rl")


def planner_config() -> ml_collections.ConfigDict:
    """Defaults: the offline planner; the openai backend's settings are used when backend='openai'."""
    c = ml_collections.ConfigDict()
    c.backend = "rules"          # rules: offline, deterministic | openai: any OpenAI-compatible server
    c.num_demonstrations = 5     # D in-context demonstrations per prompt (paper: 5)
    c.max_repairs = 2            # re-asks with the parse/validation error fed back, then the fallback
    c.demonstrations = ""        # demonstration bank JSONL; "" = the built-in bank (synthetic + everyday)
    c.selection = "fixed"        # fixed: the bank's D most complex | random: per caption | rl: trained policy
    c.selector_path = ""         # policy file written by `python -m dysen_jax.plan train-selector`
    c.imagination = True         # step III: enrich each scene graph (w/o imagination = False); rules: object permanence
    c.sliding_window = True      # step III sees [previous enriched SG, current SG, next SG] (w/o SWC = False)
    c.polish = True              # step III's second round: one global pass over the whole DSG
    c.max_scene_items = 12       # step-III answers with more triplets (or attributes) per scene are rejected
    c.max_events = 8             # step-I answers with more actions are rejected
    c.json_mode = False          # ask for JSON with response_format=json_object (servers with structured output)
    c.seed = 0                   # random selection and exploration
    c.llm = ml_collections.ConfigDict()  # dysen_jax/planner/llm_client.py LLMConfig
    c.llm.base_url = "http://127.0.0.1:8000/v1"
    c.llm.model = "gpt-4o-mini"
    c.llm.api_key_env = "OPENAI_API_KEY"  # the variable's NAME; "EMPTY" for keyless servers
    c.llm.temperature = 0.0
    c.llm.max_tokens = 512
    c.llm.max_concurrency = 8
    c.llm.requests_per_minute = 600
    c.llm.max_retries = 5
    c.llm.timeout_s = 60.0
    c.llm.cache_dir = ""         # "" = no cache
    return c


def add_planner_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for every planner setting (defaults from planner_config())."""
    d = planner_config()
    group = parser.add_argument_group("planner")
    group.add_argument("--backend", default=d.backend, help="rules (offline) or openai (any OpenAI-compatible server)")
    group.add_argument("--num_demonstrations", type=int, default=d.num_demonstrations,
                       help="in-context demonstrations D per prompt")
    group.add_argument("--max_repairs", type=int, default=d.max_repairs)
    group.add_argument("--demonstrations", default=d.demonstrations, help="demonstration bank JSONL ('' = built-in)")
    group.add_argument("--selection", default=d.selection, choices=SELECTIONS)
    group.add_argument("--selector_path", default=d.selector_path, help="trained selection policy (selection=rl)")
    for name in ("imagination", "sliding_window", "polish"):
        group.add_argument(f"--{name}", default=getattr(d, name), action=argparse.BooleanOptionalAction)
    group.add_argument("--seed", type=int, default=d.seed)
    llm = parser.add_argument_group("openai backend (any OpenAI-compatible server)")
    llm.add_argument("--base_url", default=d.llm.base_url, help="server URL ending in /v1")
    llm.add_argument("--model", default=d.llm.model, help="model name the server knows")
    llm.add_argument("--api_key_env", default=d.llm.api_key_env,
                     help="NAME of the environment variable holding the key ('EMPTY' for keyless servers)")
    llm.add_argument("--max_concurrency", type=int, default=d.llm.max_concurrency)
    llm.add_argument("--requests_per_minute", type=int, default=d.llm.requests_per_minute)
    llm.add_argument("--max_tokens", type=int, default=d.llm.max_tokens)
    llm.add_argument("--cache_dir", default=d.llm.cache_dir, help="on-disk response cache ('' = none)")


def planner_config_from_flags(args: argparse.Namespace) -> ml_collections.ConfigDict:
    """The planner_config() with the values of add_planner_flags' flags."""
    c = planner_config()
    for key in ("backend", "num_demonstrations", "max_repairs", "demonstrations", "selection", "selector_path",
                "imagination", "sliding_window", "polish", "seed"):
        setattr(c, key, getattr(args, key))
    for key in ("base_url", "model", "api_key_env", "max_concurrency", "requests_per_minute", "max_tokens",
                "cache_dir"):
        setattr(c.llm, key, getattr(args, key))
    return c


def check_planner_config(c: Any) -> None:
    """Clear errors for settings that cannot work, naming the field and the fix."""
    if c.selection not in SELECTIONS:
        raise ValueError(f"planner.selection={c.selection!r} is not one of {', '.join(SELECTIONS)}")
    if c.selection == "rl" and not c.selector_path:
        raise ValueError("planner.selection='rl' needs planner.selector_path: train one with "
                         "`python -m dysen_jax.plan train-selector` or use planner.selection='random'")
    if c.num_demonstrations < 0:
        raise ValueError(f"planner.num_demonstrations={c.num_demonstrations} must be >= 0")
    if c.max_repairs < 0:
        raise ValueError(f"planner.max_repairs={c.max_repairs} must be >= 0")
