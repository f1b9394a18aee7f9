"""LLM steps I-III against a real local HTTP server: good answers, repaired answers, counted fallbacks."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from dysen_jax.data.shapes import make_example
from dysen_jax.dsg.schema import DSGError, Plan
from dysen_jax.planner.bank import synthetic_demonstrations
from dysen_jax.planner.imagination import SceneImaginer
from dysen_jax.planner.llm_client import LLMClient, LLMConfig
from dysen_jax.planner.llm_planner import LLMPlanner
from dysen_jax.planner.prompts import action_planning_messages
from dysen_jax.planner.selection import FixedSelector
from tests.llm_test_server import ScriptedLLMServer
from tests.scripted_answers import perfect_answer, prompt_kind

CAPTIONS = [make_example(i, seed=7, max_actions=3).caption for i in range(6)]
GOLD = [make_example(i, seed=7, max_actions=3).events for i in range(6)]


@pytest.fixture
def server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer() as s:
        yield s


def _planner(server: ScriptedLLMServer, imagine: dict | None = None, **overrides: Any) -> LLMPlanner:
    """Step I only, or steps I-III when `imagine` holds SceneImaginer settings."""
    config = LLMConfig(base_url=server.base_url, model="test", api_key_env="EMPTY", requests_per_minute=0,
                       max_retries=1, timeout_s=5.0, backoff_base_s=0.01, backoff_max_s=0.02)
    client = LLMClient(config, seed=0)
    selector = FixedSelector(synthetic_demonstrations(3))
    imaginer = SceneImaginer(client, selector, 3, **imagine) if imagine is not None else None
    return LLMPlanner(client, selector, 3, imaginer=imaginer, **overrides)


_good_answer = perfect_answer


def test_prompt_is_instruction_demonstrations_then_test():
    demos = synthetic_demonstrations(5)
    messages = action_planning_messages("a dog runs", demos)
    assert len(demos) == 5 and messages[0]["role"] == "system"
    assert len(messages) == 1 + 2 * 5 + 1 and messages[-1]["content"] == "Text: a dog runs"
    assert messages[2]["content"].startswith("(") and messages[2]["content"].endswith("v))")


def test_good_answers_are_used_as_planned(server):
    server.set_mode("ok", answer=_good_answer)
    outcomes = _planner(server).plan_many(CAPTIONS)
    assert [o.source for o in outcomes] == ["llm"] * len(CAPTIONS)
    assert [tuple(o.plan.events) for o in outcomes] == [tuple(g) for g in GOLD]
    assert server.calls == len(CAPTIONS)


def test_bad_answer_is_repaired_with_the_error_fed_back(server):
    def answer(body: dict) -> str:
        asked_again = any("invalid" in m["content"] for m in body["messages"] if m["role"] == "user")
        return _good_answer(body) if asked_again else "(red circle, moving left, (0v, 2v))"

    server.set_mode("ok", answer=answer)
    [outcome] = _planner(server).plan_many(CAPTIONS[:1])
    assert outcome.source == "repaired" and tuple(outcome.plan.events) == tuple(GOLD[0])
    assert "line 1" in outcome.errors[0]
    repair_turn = server.requests[-1].body["messages"][-1]["content"]
    assert "line 1" in repair_turn


@pytest.mark.parametrize("mode", ["malformed", "500"])
def test_hopeless_answers_fall_back_to_rules_and_are_counted(server, mode):
    server.set_mode(mode, k=1000)  # every answer malformed / every request a 500
    outcomes = _planner(server, max_repairs=1).plan_many(CAPTIONS[:3])
    assert [o.source for o in outcomes] == ["fallback"] * 3
    assert [tuple(o.plan.events) for o in outcomes] == [tuple(g) for g in GOLD[:3]]
    assert all(o.errors for o in outcomes)


def test_empty_caption_is_rejected(server):
    with pytest.raises(DSGError, match="empty"):
        _planner(server).plan_many(["  "])


def test_preprocess_with_the_openai_backend_runs_steps_one_to_three(server, tmp_path, monkeypatch, capfd, caplog):
    from dysen_jax import preprocess as preprocess_lib
    import glob

    import tensorflow as tf

    from tests.helpers import tiny_test_config

    server.set_mode("ok", answer=_good_answer)
    config = tiny_test_config()
    config.planner.backend = "openai"
    config.planner.num_demonstrations = 2
    config.planner.llm.base_url = server.base_url
    secret = "sk-preprocess-5e1f-never-written"
    monkeypatch.setenv("DYSEN_TEST_LLM_KEY", secret)
    config.planner.llm.api_key_env = "DYSEN_TEST_LLM_KEY"
    config.planner.llm.cache_dir = str(tmp_path / "cache")
    manifest = preprocess_lib.preprocess(config, str(tmp_path / "data"), show_progress=True)
    assert server.requests[0].headers["authorization"] == f"Bearer {secret}"
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or secret.encode() not in path.read_bytes(), path
    out, err = capfd.readouterr()
    assert secret not in out + err + caplog.text
    assert manifest["counts"]["written"] == 16 and manifest["counts"]["planner_matches_gold"] == 16
    scenes = sum(make_example(i, seed=config.seed, num_frames=config.data.num_frames,
                              resolution=config.data.resolution,
                              max_actions=config.data.max_actions).dsg.duration for i in range(16))
    # step I + one imagination call per scene + one polish; a repeated caption is answered from the cache
    llm = manifest["report"]["llm"]
    assert server.calls == llm["calls"] and llm["calls"] + llm["cache_hits"] == 16 + scenes + 16
    kinds = [prompt_kind(r.body) for r in server.requests]
    assert kinds.count("plan") + kinds.count("polish") + kinds.count("imagine") == server.calls
    plans = [Plan.loads(tf.train.Example.FromString(raw.numpy()).features.feature["plan"].bytes_list.value[0])
             for raw in tf.data.TFRecordDataset(sorted(glob.glob(str(tmp_path / "data" / "*.tfrecord"))))]
    assert len(plans) == 16
    assert all(("polished" in {a for _, a in sg.attributes}) for p in plans for sg in p.dsg.graphs)


def test_plan_cli_with_the_openai_backend(server):
    import json
    import os
    import subprocess
    import sys

    server.set_mode("ok", answer=_good_answer)
    caption = CAPTIONS[0]
    done = subprocess.run([sys.executable, "-m", "dysen_jax.plan", "--backend", "openai", "--base_url",
                           server.base_url, "--model", "test", "--api_key_env", "EMPTY", "--no-imagination",
                           "--prompt", caption],
                          capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-2000:]
    plan = json.loads(done.stdout)
    assert [(e["agent"], e["predicate"], e["start"], e["end"]) for e in plan["events"]] == [
        (e.agent, e.predicate, e.start, e.end) for e in GOLD[0]]
    assert server.calls == 1
