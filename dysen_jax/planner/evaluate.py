"""`python -m dysen_jax.plan evaluate`: planner quality against gold events (paper Fig. 9).

    python -m dysen_jax.plan evaluate --gold FILE.jsonl [--limit N] [--output report.json] [planner flags]
    python -m dysen_jax.plan evaluate --gold builtin:everyday          # the packaged everyday examples

A gold file has one JSON object per line, {"caption": str, "events": [[agent, predicate, target|null,
start, end], ...]} (events may also be objects; other keys such as "dsg" are ignored). All captions
are planned in one `plan_batch` call, so an LLM backend's requests run concurrently. Prints the mean
of every metric of dysen_jax/planner/metrics.py and how many plans came from each source; exits 2
with the file, line and fix for a bad gold file or setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from dysen_jax.dsg.schema import DSGError, Event
from dysen_jax.planner.base import SOURCES, PlanOutcome, plan_batch, planner_from_config
from dysen_jax.planner.metrics import METRIC_KEYS, aggregate, align, score_events
from dysen_jax.planner.settings import add_planner_flags, check_planner_config, planner_config_from_flags

BUILTIN_PREFIX = "builtin:"
DATA_DIR = Path(__file__).resolve().parent / "data"


class GoldError(ValueError):
    """A gold file that cannot be read; the message names the file, the line and the fix."""


@dataclasses.dataclass(frozen=True)
class GoldItem:
    """One gold line: the caption and its events."""

    caption: str
    events: tuple[Event, ...]
    line: int


def resolve_gold_path(spec: str) -> Path:
    """A file path, or `builtin:NAME` for dysen_jax/planner/data/NAME.jsonl."""
    if not spec.startswith(BUILTIN_PREFIX):
        return Path(spec)
    name = spec[len(BUILTIN_PREFIX):]
    path = DATA_DIR / f"{name}.jsonl"
    if not name or not path.is_file():
        known = sorted(p.stem for p in DATA_DIR.glob("*.jsonl"))
        raise GoldError(f"--gold {spec!r}: no packaged gold file {name!r}; "
                        f"use one of {', '.join(BUILTIN_PREFIX + k for k in known) or '(none packaged)'}")
    return path


def _parse_line(text: str, where: str, lineno: int) -> GoldItem:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise GoldError(f"{where}: not valid JSON ({err.msg} at column {err.colno}): "
                        "write one JSON object per line") from err
    if not isinstance(obj, dict):
        raise GoldError(f"{where}: expected an object {{\"caption\": ..., \"events\": [...]}}, "
                        f"got {type(obj).__name__}")
    caption = obj.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise GoldError(f"{where}: 'caption' must be a non-empty string, got {caption!r}")
    raw_events = obj.get("events")
    if not isinstance(raw_events, list) or not raw_events:
        raise GoldError(f"{where}: 'events' must be a non-empty list of "
                        f"[agent, predicate, target|null, start, end], got {raw_events!r}")
    events = []
    for k, raw in enumerate(raw_events):
        try:
            events.append(Event.from_json(raw))
        except DSGError as err:
            raise GoldError(f"{where}: events[{k}]: {err}") from err
    return GoldItem(caption, tuple(events), lineno)


def load_gold(spec: str, limit: int | None = None) -> list[GoldItem]:
    """The items of a gold JSONL file (blank lines skipped), at most `limit` of them."""
    path = resolve_gold_path(spec)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise GoldError(f"--gold {spec!r}: cannot read the file ({err.strerror}): give an existing JSONL file "
                        "or builtin:everyday") from err
    items: list[GoldItem] = []
    for lineno, text in enumerate(lines, start=1):
        if limit is not None and len(items) >= limit:
            break
        if text.strip():
            items.append(_parse_line(text, f"{path}:{lineno}", lineno))
    if not items:
        raise GoldError(f"{path}: no gold items: add lines {{\"caption\": str, \"events\": [...]}}")
    return items


def evaluate(items: Sequence[GoldItem], outcomes: Sequence[PlanOutcome]) -> tuple[dict[str, float], list[dict]]:
    """The mean scores and one record per item (caption, gold, prediction, source, scores, alignment)."""
    records = []
    for item, outcome in zip(items, outcomes, strict=True):
        pred = list(outcome.plan.events) if outcome.plan is not None else []
        records.append({
            "line": item.line, "caption": item.caption, "source": outcome.source, "errors": list(outcome.errors),
            "gold": [e.to_json() for e in item.events], "pred": [e.to_json() for e in pred],
            "alignment": [list(p) for p in align(pred, item.events)],
            "scores": score_events(pred, item.events)})
    return aggregate([r["scores"] for r in records]), records


def format_report(summary: dict[str, float], sources: dict[str, int], title: str) -> str:
    """A plain-text table of the mean metrics and the outcome sources."""
    lines = [title, f"{'metric':<20}{'mean':>8}"]
    lines += [f"{k:<20}{summary[k]:>8.3f}" for k in METRIC_KEYS]
    lines += ["", f"{'source':<20}{'items':>8}"]
    lines += [f"{s:<20}{sources.get(s, 0):>8d}" for s in SOURCES]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dysen_jax.plan evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--gold", required=True,
                        help="gold JSONL ({caption, events} per line) or builtin:everyday (the packaged examples)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N gold items")
    parser.add_argument("--output", default="", help="write the summary and per-item results to this JSON file")
    add_planner_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Plans every gold caption, prints the metric table; 0 on success, 2 for bad input."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.limit is not None and args.limit < 1:
            raise GoldError(f"--limit={args.limit} must be >= 1 (leave it out to evaluate every item)")
        items = load_gold(args.gold, args.limit)
        config = planner_config_from_flags(args)
        check_planner_config(config)
        planner = planner_from_config(config)
    except (GoldError, DSGError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    outcomes = plan_batch(planner, [item.caption for item in items])
    summary, records = evaluate(items, outcomes)
    sources = {s: sum(o.source == s for o in outcomes) for s in SOURCES}
    print(format_report(summary, sources, f"planner evaluation: {len(items)} items from {args.gold} "
                                          f"(backend={config.backend})"))
    if args.output:
        report: dict[str, Any] = {"gold": args.gold, "backend": config.backend, "summary": summary,
                                  "sources": sources, "items": records}
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"per-item results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
