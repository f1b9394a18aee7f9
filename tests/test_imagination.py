"""Dysen step III (scene imagination with SWC, global polishing), its validation, the bank and selection."""

from __future__ import annotations

import json
from typing import Iterator

import pytest

from dysen_jax.data.shapes import gold_scene_dsg, make_example
from dysen_jax.dsg.schema import DSGError, Event, SceneGraph
from dysen_jax.planner.bank import Demonstration, load_bank, save_bank, synthetic_demonstrations
from dysen_jax.planner.imagination import SceneImaginer, check_scene
from dysen_jax.planner.llm_client import LLMClient, LLMConfig
from dysen_jax.planner.llm_planner import LLMPlanner, check_action_plan
from dysen_jax.planner.parse import PlanParseError
from dysen_jax.planner.prompts import demonstration_window, imagination_messages
from dysen_jax.planner.selection import FixedSelector, RandomSelector
from tests.llm_test_server import ScriptedLLMServer
from tests.scripted_answers import perfect_answer, prompt_kind

EXAMPLES = [make_example(i, seed=7, max_actions=3) for i in range(4)]
CAPTIONS = [e.caption for e in EXAMPLES]


@pytest.fixture
def server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer() as s:
        s.set_mode("ok", answer=perfect_answer)
        yield s


def _planner(server: ScriptedLLMServer, **imagine) -> LLMPlanner:
    config = LLMConfig(base_url=server.base_url, model="test", api_key_env="EMPTY", requests_per_minute=0,
                       max_retries=0, timeout_s=5.0)
    client = LLMClient(config, seed=0)
    selector = FixedSelector(synthetic_demonstrations(4))
    return LLMPlanner(client, selector, 2, max_repairs=1,
                      imaginer=SceneImaginer(client, selector, 2, max_repairs=1, **imagine))


def _query(request) -> str:
    return request.body["messages"][-1]["content"]


def test_sliding_window_sees_the_previous_enriched_scene_and_the_next_one(server):
    outcomes = _planner(server).plan_many(CAPTIONS)
    scenes = sum(e.dsg.duration for e in EXAMPLES)
    assert server.calls == len(CAPTIONS) + scenes + len(CAPTIONS)
    imagine = [r for r in server.requests if prompt_kind(r.body) == "imagine"]
    assert all("Previous scene:" in _query(r) and "Next scene:" in _query(r) for r in imagine)
    # the previous scene shown is the LLM's enriched one (it added 'shiny'), never for the first scene
    with_previous = [r for r in imagine if "Previous scene:\nnone" not in _query(r)]
    assert len(with_previous) == scenes - len(CAPTIONS)
    assert all("shiny" in _query(r).split("Current scene:")[0] for r in with_previous)
    for outcome, example in zip(outcomes, EXAMPLES):
        assert outcome.source == "llm" and outcome.plan.events == example.events
        assert outcome.imagination == {"scenes": example.dsg.duration, "scenes_llm": example.dsg.duration,
                                       "scenes_repaired": 0, "scenes_kept": 0, "polished": 1, "polish_kept": 0}
        for sg, skeleton in zip(outcome.plan.dsg.graphs, example.dsg.graphs):
            assert set(skeleton.triplets) <= set(sg.triplets)
            assert {a for _, a in sg.attributes} == {"shiny", "polished"}


def test_without_swc_each_scene_is_asked_alone(server):
    outcomes = _planner(server, sliding_window=False, polish=False).plan_many(CAPTIONS)
    imagine = [r for r in server.requests if prompt_kind(r.body) == "imagine"]
    assert len(imagine) == sum(e.dsg.duration for e in EXAMPLES)
    assert not any("Previous scene" in _query(r) or "Next scene" in _query(r) for r in imagine)
    assert all(o.imagination["polished"] == 0 for o in outcomes)


def test_bad_scenes_are_repaired_then_kept_and_a_bad_polish_is_dropped(server):
    def answer(body: dict) -> str:
        kind = prompt_kind(body)
        if kind == "imagine":
            repaired = any("invalid" in m["content"] for m in body["messages"] if m["role"] == "user")
            current = body["messages"][-1]["content"]
            if "moving" in current and not repaired:
                return "(a cat, sleeping, none)"  # drops the scene's objects
            return perfect_answer(body)
        if kind == "polish":
            return "t=0: (nobody, doing, nothing)"  # misses steps: never valid
        return perfect_answer(body)

    server.set_mode("ok", answer=answer)
    outcomes = _planner(server).plan_many(CAPTIONS)
    repaired = [r for r in server.requests if any("invalid" in m["content"] for m in r.body["messages"])]
    assert any("missing" in r.body["messages"][-1]["content"] for r in repaired)
    for outcome, example in zip(outcomes, EXAMPLES):
        counts = outcome.imagination
        assert counts["scenes_llm"] + counts["scenes_repaired"] == example.dsg.duration
        assert counts["polished"] == 0 and counts["polish_kept"] == 1
        assert all("shiny" in {a for _, a in sg.attributes} for sg in outcome.plan.dsg.graphs)
    assert sum(o.imagination["scenes_repaired"] for o in outcomes) > 0


def test_hopeless_scene_answers_keep_the_skeleton(server):
    server.set_mode("malformed", answer=perfect_answer)
    server.route = lambda body: "ok" if prompt_kind(body) == "plan" else None
    [outcome] = _planner(server, polish=False).plan_many(CAPTIONS[:1])
    assert outcome.source == "llm"
    assert outcome.imagination["scenes_kept"] == EXAMPLES[0].dsg.duration
    assert outcome.plan.dsg == EXAMPLES[0].dsg


def test_check_scene_enforces_the_dsg_rules():
    skeleton = SceneGraph(3, (("red circle", "jumping", None), ("red circle", "near", "blue star")))
    scene = check_scene([("Red  Circle", "landing", None), ("blue star", "beside", "red circle")],
                        [("RED CIRCLE", "shiny")], skeleton, max_items=4)
    assert scene.t == 3 and scene.triplets[0] == ("red circle", "landing", None)
    assert scene.attributes == (("red circle", "shiny"),)
    with pytest.raises(PlanParseError, match="blue star.*missing"):
        check_scene([("red circle", "jumping", None)], [], skeleton, 4)
    with pytest.raises(PlanParseError, match="red circle must stay the subject"):
        check_scene([("blue star", "near", "red circle")], [], skeleton, 4)
    with pytest.raises(PlanParseError, match="more than 1"):
        check_scene([("red circle", "jumping", "blue star"), ("red circle", "near", "blue star")], [], skeleton, 1)
    with pytest.raises(PlanParseError, match="too long"):
        check_scene([("red circle", "jumping over the very tall and wide blue star", "blue star")], [], skeleton, 4)


def test_check_action_plan_shifts_and_bounds():
    plan = check_action_plan("(dog, running, none, (2v, 4v))\n(dog, sitting, none, (4v, 5v))", max_events=8)
    assert [(e.start, e.end) for e in plan.events] == [(0, 2), (2, 3)]
    with pytest.raises(PlanParseError, match="more than 1"):
        check_action_plan("(dog, running, none, (0v, 1v))\n(dog, sitting, none, (1v, 2v))", max_events=1)


def test_imagination_prompt_is_instruction_demonstrations_then_window():
    demos = synthetic_demonstrations(3)
    skeleton = EXAMPLES[0].dsg
    messages = imagination_messages(CAPTIONS[0], None, skeleton.graphs[0], skeleton.graphs[1], demos)
    assert messages[0]["role"] == "system" and len(messages) == 1 + 2 * 3 + 1
    previous, current, following, gold = demonstration_window(demos[0])
    assert set(current.triplets) <= set(gold.triplets) and gold.attributes  # demonstrations teach additions
    assert messages[2]["content"].count("(") == len(gold.triplets) + len(gold.attributes)


def test_gold_scene_dsg_extends_the_skeleton():
    for example in EXAMPLES:
        gold = gold_scene_dsg(example)
        assert [sg.t for sg in gold.graphs] == [sg.t for sg in example.dsg.graphs]
        for sg, skeleton in zip(gold.graphs, example.dsg.graphs):
            assert set(skeleton.triplets) <= set(sg.triplets)
            assert all(attr in {"red", "green", "blue", "yellow", "purple", "orange", "small", "large",
                                "white", "pink", "cyan", "brown"} for _, attr in sg.attributes), sg.attributes


def test_bank_round_trip_and_errors(tmp_path):
    bank = synthetic_demonstrations(3) + [Demonstration("a dog runs", (Event("dog", "running", None, 0, 1),))]
    path = str(tmp_path / "bank.jsonl")
    save_bank(bank, path)
    assert load_bank(path) == bank
    with open(path, "a") as f:
        f.write(json.dumps({"caption": "x", "events": [["a", "b", None, 2, 1]]}) + "\n")
    with pytest.raises(DSGError, match="bank.jsonl:5"):
        load_bank(path)
    with pytest.raises(FileNotFoundError, match="build-bank"):
        load_bank(str(tmp_path / "missing.jsonl"))


def test_selection_excludes_the_caption_and_is_reproducible():
    bank = synthetic_demonstrations(6)
    fixed = FixedSelector(bank)
    assert fixed.select(bank[0].caption, 2) == bank[1:3]
    random_a, random_b = RandomSelector(bank, seed=1), RandomSelector(bank, seed=1)
    picks = random_a.select("a dog runs", 3)
    assert picks == random_b.select("a dog runs", 3) and len(set(d.caption for d in picks)) == 3
    assert bank[0] not in random_a.select(bank[0].caption, 5)
    assert any(RandomSelector(bank, seed=s).select("a dog runs", 3) != picks for s in range(2, 6))


def test_table4_switches_reach_the_planner():
    import sys
    sys.path.insert(0, ".")
    from configs.tiny import get_config
    from dysen_jax.planner.base import planner_from_config

    def planner(variant):
        c = get_config(variant)
        c.planner.backend = "openai"
        c.planner.llm.api_key_env = "EMPTY"
        return planner_from_config(c.planner)

    assert planner("").imaginer.sliding_window and planner("").imaginer.polish
    assert planner("no_imagination").imaginer is None
    assert not planner("no_swc").imaginer.sliding_window
    assert isinstance(planner("no_rl_icl").selector, RandomSelector)
    assert get_config("no_dysen").model.use_dsg is False


def test_json_mode_asks_for_json_and_reads_it(server):
    from dysen_jax.planner.parse import parse_dsg_lines, parse_events, parse_scene

    def answer(body: dict) -> str:
        assert body.get("response_format") == {"type": "json_object"}
        assert "JSON" in body["messages"][0]["content"]
        text, kind = perfect_answer(body), prompt_kind(body)
        if kind == "plan":
            return json.dumps({"events": [[e.agent, e.predicate, e.target, e.start, e.end]
                                          for e in parse_events(text)]})
        if kind == "imagine":
            triplets, attributes = parse_scene(text)
            return json.dumps({"triplets": triplets, "attributes": attributes})
        return json.dumps({"dsg": [{"t": t, "triplets": tr, "attributes": at}
                                   for t, (tr, at) in parse_dsg_lines(text).items()]})

    server.set_mode("ok", answer=answer)
    config = LLMConfig(base_url=server.base_url, model="test", api_key_env="EMPTY", requests_per_minute=0,
                       max_retries=0, timeout_s=5.0)
    client = LLMClient(config, seed=0)
    selector = FixedSelector(synthetic_demonstrations(2))
    planner = LLMPlanner(client, selector, 2, max_repairs=0, json_mode=True,
                         imaginer=SceneImaginer(client, selector, 2, max_repairs=0, json_mode=True))
    [outcome] = planner.plan_many(CAPTIONS[:1])
    assert outcome.source == "llm" and outcome.plan.events == EXAMPLES[0].events
    assert outcome.imagination["scenes_llm"] == EXAMPLES[0].dsg.duration and outcome.imagination["polished"] == 1


def test_a_caption_neither_the_llm_nor_the_fallback_can_plan_fails_alone(server):
    from dysen_jax.planner.base import plan_batch

    server.set_mode("malformed")
    server.route = lambda body: "ok" if "Text: " + CAPTIONS[0] in body["messages"][-1]["content"] else None
    planner = _planner(server, polish=False)
    outcomes = plan_batch(planner, [CAPTIONS[0], "!!! ???"])
    assert outcomes[0].source == "llm" and outcomes[1].source == "failed" and outcomes[1].plan is None
    assert any("fallback" in e for e in outcomes[1].errors)
    with pytest.raises(DSGError, match="could not plan"):
        planner.plan("!!! ???")


def test_names_the_caption_never_mentions_are_sent_back():
    caption = "The red circles jump while a Blue Star spins."
    plan = check_action_plan("(red circle, jumping, none, (0v, 1v))\n(blue star, spinning, none, (0v, 1v))",
                             max_events=8, caption=caption)
    assert len(plan.events) == 2
    with pytest.raises(PlanParseError, match="'green heart' are not in the text"):
        check_action_plan("(green heart, shrinking, none, (0v, 1v))", max_events=8, caption=caption)
    with pytest.raises(PlanParseError, match="'red star' are not in the text"):
        check_action_plan("(red star, jumping, none, (0v, 1v))", max_events=8, caption=caption)
