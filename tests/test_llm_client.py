"""LLMClient against a real HTTP server on 127.0.0.1: answers, retries, timeouts, concurrency, RPM, cache, key hygiene."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import types
from typing import Any, Iterator

import ml_collections
import pytest

from dysen_jax.planner.llm_client import (Completion, LLMClient, LLMConfig, LLMConfigError, LLMRequestError,
                                          RateLimiter, backoff_delay_s)
from tests.llm_test_server import MALFORMED_CONTENT, ScriptedLLMServer

SECRET = "sk-test-7f3c9d2e-never-show-me-41ab"


@pytest.fixture
def server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer() as s:
        yield s


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DYSEN_TEST_LLM_KEY", SECRET)
    return SECRET


def make_client(server: ScriptedLLMServer, **overrides: Any) -> LLMClient:
    """A client with tiny timeouts/backoff so failure paths take milliseconds."""
    settings: dict[str, Any] = dict(base_url=server.base_url, model="test-model", api_key_env="DYSEN_TEST_LLM_KEY",
                                    requests_per_minute=0, max_retries=3, timeout_s=5.0,
                                    backoff_base_s=0.01, backoff_max_s=0.05)
    settings.update(overrides)
    return LLMClient(LLMConfig(**settings), seed=0)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_ok_returns_text_and_tokens(server: ScriptedLLMServer) -> None:
    server.set_mode("ok", answer=lambda body: "echo: " + body["messages"][-1]["content"])
    client = make_client(server)
    [result] = client.complete_many([user("the red circle moves right")])
    assert isinstance(result, Completion)
    assert result.text == "echo: the red circle moves right"
    assert (result.prompt_tokens, result.completion_tokens) == (5, 6)
    assert result.cached is False and result.finish_reason == "stop"
    assert server.requests[0].body["model"] == "test-model"
    assert server.requests[0].body["max_tokens"] == 512 and server.requests[0].body["temperature"] == 0.0
    assert client.report()["prompt_tokens"] == 5 and client.report()["completion_tokens"] == 6


def test_async_complete_with_response_format(server: ScriptedLLMServer) -> None:
    client = make_client(server)

    async def run() -> Completion:
        try:
            return await client.complete(user("x"), response_format={"type": "json_object"})
        finally:
            await client.aclose()

    result = asyncio.run(run())
    assert result.text == server.answer
    assert server.requests[0].body["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("mode", ["429", "500"])
def test_bursts_of_errors_are_retried(server: ScriptedLLMServer, mode: str) -> None:
    server.set_mode(mode, k=3)
    client = make_client(server, max_retries=5)
    [result] = client.complete_many([user("retry me")])
    assert isinstance(result, Completion) and result.text == server.answer
    assert server.calls == 4
    assert client.stats.retries == 3 and client.stats.calls == 4 and client.stats.failures == 0


def test_backoff_honours_retry_after_capped_and_full_jitter() -> None:
    config = LLMConfig(base_url="http://127.0.0.1:9/v1", model="m", backoff_base_s=0.5, backoff_max_s=2.0)
    rng = random.Random(0)

    def error_with(headers: dict[str, str]) -> Exception:
        error = RuntimeError("x")
        error.response = types.SimpleNamespace(headers=headers)  # type: ignore[attr-defined]
        return error

    assert backoff_delay_s(config, 0, error_with({"retry-after": "0"}), rng) == 0.0
    assert backoff_delay_s(config, 0, error_with({"retry-after": "100"}), rng) == 2.0
    assert backoff_delay_s(config, 0, error_with({"retry-after-ms": "250"}), rng) == 0.25
    for attempt in range(6):
        cap = min(2.0, 0.5 * 2 ** attempt)
        delays = [backoff_delay_s(config, attempt, error_with({}), rng) for _ in range(50)]
        assert all(0.0 <= d <= cap for d in delays) and max(delays) > cap / 2


def test_too_many_errors_fail_after_max_retries(server: ScriptedLLMServer) -> None:
    server.set_mode("500", k=100)
    client = make_client(server, max_retries=2)
    [result] = client.complete_many([user("a")])
    assert isinstance(result, LLMRequestError)
    assert result.status_code == 500 and result.attempts == 3 and server.calls == 3
    assert client.stats.failures == 1


def test_other_4xx_fails_at_once(server: ScriptedLLMServer) -> None:
    client = make_client(server, base_url=server.base_url.replace("/v1", "/nope"))
    [result] = client.complete_many([user("a")])
    assert isinstance(result, LLMRequestError) and result.status_code == 404
    assert result.attempts == 1 and client.stats.retries == 0


def test_malformed_and_truncated_answers_are_returned_verbatim(server: ScriptedLLMServer) -> None:
    server.set_mode("malformed")
    client = make_client(server)
    [bad] = client.complete_many([user("a")])
    assert isinstance(bad, Completion) and bad.text == MALFORMED_CONTENT
    server.set_mode("truncated", answer="(red circle, moves, right, (0v, 1v))")
    [cut] = client.complete_many([user("b")])
    assert isinstance(cut, Completion) and cut.finish_reason == "length"
    assert cut.text == "(red circle, moves, right, (0v, 1v))"[:18]


def test_hanging_request_times_out_without_blocking_others(server: ScriptedLLMServer) -> None:
    server.route = lambda body: "hang" if "HANG" in body["messages"][-1]["content"] else None
    client = make_client(server, timeout_s=0.3, max_retries=1, max_concurrency=4)
    results = client.complete_many([user("one"), user("HANG"), user("three"), user("four")])
    assert [type(r) for r in results] == [Completion, LLMRequestError, Completion, Completion]
    error = results[1]
    assert isinstance(error, LLMRequestError) and error.kind == "APITimeoutError" and error.attempts == 2
    hang_calls = [r for r in server.requests if "HANG" in r.body["messages"][-1]["content"]]
    assert len(hang_calls) == 2


def test_concurrency_bound_is_respected(server: ScriptedLLMServer) -> None:
    server.set_mode("slow", delay_s=0.1)
    client = make_client(server, max_concurrency=3)
    results = client.complete_many([user(f"item {i}") for i in range(12)])
    assert all(isinstance(r, Completion) for r in results)
    assert server.calls == 12
    assert 1 <= server.max_in_flight <= 3


def test_results_keep_input_order(server: ScriptedLLMServer) -> None:
    server.set_mode("ok", answer=lambda body: body["messages"][-1]["content"].upper())
    client = make_client(server, max_concurrency=5)
    prompts = [f"prompt {i}" for i in range(10)]
    results = client.complete_many([user(p) for p in prompts])
    assert [r.text for r in results if isinstance(r, Completion)] == [p.upper() for p in prompts]


def test_rate_limiter_reserves_evenly_spaced_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a frozen clock, three requests at once wait 0, 1 and 2 intervals (no wall-clock timing)."""
    from dysen_jax.planner import llm_client

    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    limiter = RateLimiter(requests_per_minute=600)
    monkeypatch.setattr(llm_client.time, "monotonic", lambda: 100.0)
    monkeypatch.setattr(llm_client.asyncio, "sleep", fake_sleep)

    async def run() -> None:
        for _ in range(3):
            await limiter.acquire()

    asyncio.run(run())
    assert waits == pytest.approx([limiter.interval_s, 2 * limiter.interval_s])
    assert limiter.interval_s == pytest.approx(0.1)


def test_second_run_is_served_from_cache(server: ScriptedLLMServer, tmp_path: Any) -> None:
    batch = [user(f"cache me {i}") for i in range(3)]
    first = make_client(server, cache_dir=str(tmp_path))
    assert all(isinstance(r, Completion) and not r.cached for r in first.complete_many(batch))
    calls_after_first = server.calls
    second = make_client(server, cache_dir=str(tmp_path))
    results = second.complete_many(batch)
    assert server.calls == calls_after_first == 3
    assert all(isinstance(r, Completion) and r.cached for r in results)
    assert [r.text for r in results] == [server.answer] * 3
    assert second.stats.cache_hits == 3 and second.stats.calls == 0
    # A different request (other temperature) is a different key.
    third = make_client(server, cache_dir=str(tmp_path), temperature=0.5)
    third.complete_many(batch[:1])
    assert server.calls == 4


def test_failures_are_not_cached(server: ScriptedLLMServer, tmp_path: Any) -> None:
    server.set_mode("500", k=100)
    client = make_client(server, cache_dir=str(tmp_path), max_retries=0)
    [error] = client.complete_many([user("a")])
    assert isinstance(error, LLMRequestError)
    assert not [f for _, _, files in os.walk(tmp_path) for f in files]
    server.set_mode("ok")
    [ok] = client.complete_many([user("a")])
    assert isinstance(ok, Completion) and not ok.cached


def test_key_reaches_server_but_never_leaks(server: ScriptedLLMServer, tmp_path: Any,
                                            caplog: pytest.LogCaptureFixture,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    server.set_mode("429", k=1)
    client = make_client(server, cache_dir=str(tmp_path), max_retries=2)
    results = client.complete_many([user("a"), user("b")])
    assert all(isinstance(r, Completion) for r in results)
    server.set_mode("500", k=100)
    [error] = make_client(server, max_retries=1).complete_many([user("c")])
    assert isinstance(error, LLMRequestError)

    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert client.stats.retries >= 1 and caplog.records  # The retry was logged ...
    assert SECRET not in caplog.text  # ... without the key.
    captured = capsys.readouterr()
    assert SECRET not in captured.out and SECRET not in captured.err
    for root, _, files in os.walk(tmp_path):
        for name in files:
            with open(os.path.join(root, name), encoding="utf-8") as f:
                assert SECRET not in f.read()
    assert SECRET not in repr(client) and SECRET not in repr(client.config)
    assert SECRET not in str(client.report()) and SECRET not in str(error) and SECRET not in repr(error)


def test_key_is_read_at_call_time(server: ScriptedLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client(server)
    monkeypatch.setenv("DYSEN_TEST_LLM_KEY", "sk-rotated")
    client.complete_many([user("a")])
    assert server.requests[-1].headers["authorization"] == "Bearer sk-rotated"


def test_missing_key_and_keyless_server(server: ScriptedLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DYSEN_TEST_LLM_KEY")
    [error] = make_client(server).complete_many([user("a")])
    assert isinstance(error, LLMConfigError) and "DYSEN_TEST_LLM_KEY" in str(error)
    assert server.calls == 0
    [ok] = make_client(server, api_key_env="EMPTY").complete_many([user("a")])
    assert isinstance(ok, Completion)
    assert server.requests[-1].headers["authorization"] == "Bearer EMPTY"


def test_config_from_ml_collections() -> None:
    section = ml_collections.ConfigDict({"base_url": "http://127.0.0.1:9/v1", "model": "m",
                                         "max_concurrency": 2, "cache_dir": None})
    config = LLMConfig.from_config(section)
    assert config.max_concurrency == 2 and config.api_key_env == "OPENAI_API_KEY"
    assert config == dataclasses.replace(LLMConfig(base_url="http://127.0.0.1:9/v1", model="m"), max_concurrency=2)
    with pytest.raises(ValueError, match="unknown LLM config keys"):
        LLMConfig.from_config({"base_url": "u", "model": "m", "max_tokenz": 3})
