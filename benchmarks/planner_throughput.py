"""LLM planner throughput against the scripted OpenAI-compatible server with a fixed per-call latency.

    python benchmarks/planner_throughput.py [--items 32] [--latency_s 0.3] [--concurrency 1,8,32]

For each concurrency it plans the same synthetic captions with a fresh client (no cache, no rate
limit) through `plan_batch` (the server runs in its own process), for step I only and for the full steps I-III (imagination with SWC +
polishing), and reports items/s, calls, and the speed-up over concurrency 1 with its efficiency
(speed-up / concurrency). Then one run at the highest concurrency with the default 600 requests
per minute limit (the limit, not the concurrency, sets the pace), and a cached rerun: the same
job twice with one cache directory, the second timed. The server answers like a perfect LLM
(tests/scripted_answers.py) after `latency_s`. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dysen_jax.data.shapes import make_example  # noqa: E402
from dysen_jax.planner.base import plan_batch, planner_from_config  # noqa: E402
from dysen_jax.planner.settings import planner_config  # noqa: E402
from tests.llm_test_server import ScriptedLLMServer  # noqa: E402
from tests.scripted_answers import perfect_answer  # noqa: E402


def _serve(latency_s: float, urls: "multiprocessing.Queue[str]", stop: "multiprocessing.Event") -> None:
    with ScriptedLLMServer() as server:
        server.set_mode("slow", delay_s=latency_s, answer=perfect_answer)
        urls.put(server.base_url)
        stop.wait()


@contextlib.contextmanager
def server_process(latency_s: float):
    """The scripted server in its own process, so its work does not share the client's GIL (like a
    real remote server); yields an object with `base_url`."""
    ctx = multiprocessing.get_context("fork")
    urls, stop = ctx.Queue(), ctx.Event()
    process = ctx.Process(target=_serve, args=(latency_s, urls, stop), daemon=True)
    process.start()
    try:
        yield argparse.Namespace(base_url=urls.get(timeout=60))
    finally:
        stop.set()
        process.join(timeout=10)


def run(server: ScriptedLLMServer, captions: list[str], concurrency: int, full: bool, rpm: int = 0,
        cache_dir: str = "") -> dict[str, float]:
    cfg = planner_config()
    cfg.backend = "openai"
    cfg.imagination = full
    cfg.llm.base_url = server.base_url
    cfg.llm.model = "scripted"
    cfg.llm.api_key_env = "EMPTY"
    cfg.llm.max_concurrency = concurrency
    cfg.llm.requests_per_minute = rpm
    cfg.llm.cache_dir = cache_dir
    planner = planner_from_config(cfg)
    started = time.perf_counter()
    outcomes = plan_batch(planner, captions)
    seconds = time.perf_counter() - started
    assert all(o.source == "llm" for o in outcomes), [o.source for o in outcomes]
    stats = planner.client.stats
    return {"seconds": round(seconds, 3), "items_per_s": round(len(captions) / seconds, 3),
            "calls": stats.calls, "cache_hits": stats.cache_hits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--latency_s", type=float, default=0.3)
    parser.add_argument("--concurrency", default="1,8,32")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    captions = [make_example(i, seed=99, max_actions=3).caption for i in range(args.items)]
    results: dict = {"machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
                     "items": args.items, "latency_s": args.latency_s}
    with server_process(args.latency_s) as server:
        run(server, captions[:2], 2, True)  # warm-up: imports, the demonstration bank, first connections
        for name, full in (("step_I", False), ("steps_I_to_III", True)):
            rows = {}
            for c in levels:
                rows[c] = run(server, captions, c, full)
                base = rows[levels[0]]["seconds"] * levels[0]
                rows[c]["speedup"] = round(base / rows[c]["seconds"], 2)
                rows[c]["efficiency"] = round(rows[c]["speedup"] / c, 2)
                print(name, c, rows[c], file=sys.stderr)
            results[name] = rows
        results["step_I_rpm_600_at_max_concurrency"] = run(server, captions, levels[-1], False, rpm=600)
        with tempfile.TemporaryDirectory() as cache:
            first = run(server, captions, levels[-1], True, cache_dir=cache)
            second = run(server, captions, levels[-1], True, cache_dir=cache)
        results["cached_rerun_steps_I_to_III"] = {"first": first, "second": second,
                                                  "speedup": round(first["seconds"] / second["seconds"], 1)}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
