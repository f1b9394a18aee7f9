"""Planner metrics (forgiving names, strict order), the everyday gold data, and `plan evaluate`."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dysen_jax.data.shapes import make_example
from dysen_jax.dsg.schema import Event, Plan
from dysen_jax.planner.evaluate import DATA_DIR, GoldError, load_gold
from dysen_jax.planner.metrics import METRIC_KEYS, aggregate, align, normalize_name, normalize_predicate, score_events


def ev(agent, predicate, target, start, end):
    return Event(agent, predicate, target, start, end)


# --- normalisation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("a,b", [
    ("Woman", "  woman "), ("the woman", "a woman"), ("bottles of water", "the bottle of water"),
    ("boxes", "box"), ("children", "child"), ("Two children", "the children"), ("her coat", "coat"),
    ("red-ball.", "red ball"), ("glasses", "glass"), ("cookies", "cookie"), ("dishes", "dish"),
])
def test_names_match_forgivingly(a, b):
    assert normalize_name(a) == normalize_name(b)


@pytest.mark.parametrize("a,b", [("dog", "cat"), ("bus", "bu"), ("man", "woman"), ("her", ""), ("glass", "gla")])
def test_different_names_stay_different(a, b):
    assert normalize_name(a) != normalize_name(b)


@pytest.mark.parametrize("target", [None, "none", "None", "null", "", " n/a "])
def test_missing_targets_are_one_form(target):
    assert normalize_name(target) == ""


@pytest.mark.parametrize("form", ["puts", "put", "putting", "is putting", "Was putting", "PUTS."])
def test_predicate_inflections(form):
    assert normalize_predicate(form) == "putting"


@pytest.mark.parametrize("a,b", [
    ("moves left", "moving left"), ("moves to the left", "moving left"), ("drinks from", "drinking from"),
    ("ran", "running"), ("lies", "lying"), ("knocked over", "knocking over"), ("sprints", "sprinting"),
    ("approaches", "moving toward"),
])
def test_predicates_match_forgivingly(a, b):
    assert normalize_predicate(a) == normalize_predicate(b)


def test_predicates_keep_particles_and_verbs_apart():
    assert normalize_predicate("putting on") != normalize_predicate("putting")
    assert normalize_predicate("moves left") != normalize_predicate("moves right")
    assert normalize_predicate("over") == "over"  # a verbless relation is left alone


# --- scores -------------------------------------------------------------------------------------------
GOLD = [ev("woman", "putting", "bottle of water", 0, 2), ev("woman", "drinking from", "bottle of water", 2, 4),
        ev("dog", "running", None, 2, 4)]


def test_exact_gold_scores_one_and_forgiving_forms_still_match():
    assert score_events(GOLD, GOLD) == dict.fromkeys(METRIC_KEYS, 1.0)
    sloppy = [ev("The Woman", "puts", "bottles of water", 0, 2),
              ev("a woman", "is drinking from", "the bottle of water", 2, 4), ev("dogs", "runs", "none", 2, 4)]
    assert score_events(sloppy, GOLD) == dict.fromkeys(METRIC_KEYS, 1.0)


@pytest.mark.parametrize("pred", [[], None])
def test_empty_prediction_scores_zero(pred):
    assert score_events(pred, GOLD) == dict.fromkeys(METRIC_KEYS, 0.0)


def test_swapping_sequential_actions_lowers_order_only():
    swapped = [ev("woman", "putting", "bottle of water", 2, 4), ev("woman", "drinking from", "bottle of water", 0, 2),
               ev("dog", "running", None, 0, 2)]
    s = score_events(swapped, GOLD)
    assert s["triplet_f1"] == s["predicate_accuracy"] == s["argument_accuracy"] == 1.0
    # pairs: (put, drink) reversed; (put, run) before -> after; (drink, run) together -> together
    assert s["order_accuracy"] == pytest.approx(1 / 3)
    assert s["exact"] == 0.0


def test_simultaneous_and_sequential_differ():
    gold = [ev("man", "throwing", "ball", 0, 2), ev("dog", "running", None, 0, 2)]
    sequential = [ev("man", "throwing", "ball", 0, 2), ev("dog", "running", None, 2, 4)]
    assert score_events(sequential, gold)["order_accuracy"] == 0.0
    assert score_events(gold, gold)["order_accuracy"] == 1.0
    # longer durations with the same start keep the relation (judged from start times)
    longer = [ev("man", "throws", "ball", 0, 3), ev("dog", "runs", None, 0, 1)]
    assert score_events(longer, gold)["order_accuracy"] == 1.0


def test_single_event_order_rule():
    gold = [ev("man", "walking", None, 0, 2)]
    assert score_events([ev("man", "walks", None, 0, 2)], gold)["order_accuracy"] == 1.0
    assert score_events([ev("cat", "sleeping", None, 0, 2)], gold)["order_accuracy"] == 0.0  # nothing matched
    two = [ev("man", "walking", None, 0, 2), ev("man", "sitting", None, 2, 4)]
    assert score_events([ev("man", "walking", None, 0, 2)], two)["order_accuracy"] == 0.0  # 1 of 2 matched


def test_partial_matches_split_predicate_and_argument_accuracy():
    gold = [ev("woman", "putting", "bottle", 0, 2), ev("man", "reading", "book", 2, 4)]
    pred = [ev("woman", "placing", "bottle", 0, 2), ev("boy", "reading", "newspaper", 2, 4)]
    s = score_events(pred, gold)
    assert s["triplet_f1"] == 0.0
    assert s["predicate_accuracy"] == 0.5  # reading ~ reading
    assert s["argument_accuracy"] == 0.5   # (woman, bottle) ~ (woman, bottle)
    assert align(pred, gold) == [(0, 0), (1, 1)]


def test_alignment_takes_exact_matches_first_and_is_one_to_one():
    gold = [ev("man", "walking", None, 0, 2), ev("man", "walking", "dog", 2, 4)]
    pred = [ev("man", "walking", "dog", 0, 2)]
    assert align(pred, gold) == [(0, 1)]
    s = score_events(pred + pred, gold)
    assert s["triplet_precision"] == 0.5 and s["triplet_recall"] == 0.5


def test_extra_predictions_lower_precision_not_recall():
    s = score_events(GOLD + [ev("cat", "sleeping", None, 0, 4)], GOLD)
    assert s["triplet_recall"] == 1.0 and s["triplet_precision"] == 0.75 and s["exact"] == 0.0


def test_aggregate_means():
    agg = aggregate([dict.fromkeys(METRIC_KEYS, 1.0), dict.fromkeys(METRIC_KEYS, 0.0)])
    assert agg == dict.fromkeys(METRIC_KEYS, 0.5)
    with pytest.raises(ValueError, match="no item scores"):
        aggregate([])


# --- the everyday gold data ----------------------------------------------------------------------------
EVERYDAY = [json.loads(line) for line in (DATA_DIR / "everyday.jsonl").read_text().splitlines() if line.strip()]


def test_everyday_plans_are_valid_enriched_dsgs():
    assert 20 <= len(EVERYDAY) <= 40
    for item in EVERYDAY:
        events = [Event.from_json(e) for e in item["events"]]
        assert 1 <= len(events) <= 4, item["caption"]
        plan = Plan.from_json({"events": [e.to_json() for e in events], "dsg": item["dsg"]})
        assert plan.dsg.duration == max(e.end for e in events)
        extra = 0
        for tau in range(plan.dsg.duration):
            sg = plan.dsg.at(tau)
            active = {e.triplet for e in events if e.start <= tau < e.end}
            where = f"{item['caption']!r} t={tau}"
            assert active <= set(sg.triplets), f"{where}: the scene misses {active - set(sg.triplets)}"
            in_triplets = {x for s, _, o in sg.triplets for x in (s, o) if x is not None}
            assert {o for o, _ in sg.attributes} <= in_triplets, f"{where}: attribute of an absent object"
            extra += len(set(sg.triplets) - active)
        assert extra > 0 and any(g.attributes for g in plan.dsg), f"{item['caption']!r} is not enriched"


def test_everyday_covers_temporal_wording():
    captions = [item["caption"].lower() for item in EVERYDAY]
    assert len(set(captions)) == len(captions)
    for word in (" before ", " after ", "after ", " while ", " then "):
        assert any(word in f" {c}" for c in captions), word
    assert {len(item["events"]) for item in EVERYDAY} >= {1, 2, 3}


def test_everyday_loads_as_gold():
    items = load_gold("builtin:everyday")
    assert len(items) == len(EVERYDAY) and items[0].caption == EVERYDAY[0]["caption"]
    assert len(load_gold("builtin:everyday", limit=3)) == 3


# --- the CLI -------------------------------------------------------------------------------------------
def _evaluate(*args):
    return subprocess.run([sys.executable, "-m", "dysen_jax.plan", "evaluate", *args],
                          capture_output=True, text=True, timeout=120)


def _write_gold(path: Path, n: int) -> None:
    lines = []
    for i in range(n):
        ex = make_example(i, seed=0)
        lines.append(json.dumps({"caption": ex.caption,
                                 "events": [[e.agent, e.predicate, e.target, e.start, e.end] for e in ex.events]}))
    path.write_text("\n".join(lines) + "\n")


def test_cli_rules_planner_on_synthetic_gold(tmp_path):
    gold = tmp_path / "gold.jsonl"
    _write_gold(gold, 20)
    report = tmp_path / "out" / "report.json"
    proc = _evaluate("--gold", str(gold), "--output", str(report))
    assert proc.returncode == 0, proc.stderr
    for key in METRIC_KEYS + ("rules", "fallback", "failed"):
        assert key in proc.stdout
    data = json.loads(report.read_text())
    assert len(data["items"]) == 20 and data["sources"]["rules"] == 20
    assert data["summary"]["triplet_f1"] > 0.9 and data["summary"]["order_accuracy"] > 0.9
    assert set(data["items"][0]["scores"]) >= set(METRIC_KEYS)


def test_cli_builtin_everyday_with_limit(tmp_path):
    report = tmp_path / "report.json"
    proc = _evaluate("--gold", "builtin:everyday", "--limit", "5", "--output", str(report))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    assert len(data["items"]) == 5 and data["summary"]["triplet_f1"] > 0.5


@pytest.mark.parametrize("line,problem", [
    ('{"caption": "a dog runs", "events": [["dog", "running", null, 2, 1]]}', "events[0]"),
    ('{"caption": "a dog runs", "events": [["dog", "running", null]]}', "5 items"),
    ('{"caption": "", "events": [["dog", "running", null, 0, 2]]}', "'caption'"),
    ('{"caption": "a dog runs"}', "'events'"),
    ("{not json", "not valid JSON"),
])
def test_bad_gold_line_error_names_the_line(tmp_path, line, problem):
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"caption": "a cat sleeps", "events": [["cat", "sleeping", null, 0, 2]]}\n\n' + line + "\n")
    with pytest.raises(GoldError, match=re.escape(problem)) as err:
        load_gold(str(gold))
    assert f"{gold}:3:" in str(err.value)


def test_cli_bad_gold_exits_2(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"caption": "a cat sleeps", "events": [["cat", "sleeping", null, 0, 2]]}\n{"caption": 3}\n')
    proc = _evaluate("--gold", str(gold))
    assert proc.returncode == 2 and f"{gold}:2:" in proc.stderr and "'caption'" in proc.stderr
    proc = _evaluate("--gold", "builtin:nope")
    assert proc.returncode == 2 and "builtin:everyday" in proc.stderr
    proc = _evaluate("--gold", str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 2 and "missing.jsonl" in proc.stderr
    assert _evaluate().returncode == 2  # --gold is required
