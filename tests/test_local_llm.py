"""The planner against a real local LLM (SmolLM2-135M-Instruct behind llama.cpp's OpenAI server).

The integration tests need the [local-llm] extra and are skipped without it; the tests of the
server's error handling run everywhere (they start small stand-in processes, not llama.cpp).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from typing import Iterator

import pytest

from dysen_jax.data.shapes import make_example
from dysen_jax.dsg.schema import DSG, Plan
from dysen_jax.planner import local_llm
from dysen_jax.planner.base import plan_batch, planner_from_config
from dysen_jax.planner.local_llm import LocalLLMError, LocalLLMServer

SKIP_REASON = "needs the [local-llm] extra: pip install -e '.[local-llm]' (llama-cpp-python builds from source, ~7 min)"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPTIONS = ["a man opens the door and then sits on a chair"] + [make_example(i, seed=0).caption for i in range(3)]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalLLMServer]:
    """One llama.cpp server for the module's integration tests."""
    _installed()
    with LocalLLMServer() as s:
        yield s


def _installed() -> None:
    """Skips unless the [local-llm] extra is installed (for tests that start their own server)."""
    pytest.importorskip("llama_cpp", reason=SKIP_REASON)
    try:
        local_llm.smollm2_gguf_path()
    except LocalLLMError as err:
        pytest.skip(f"{SKIP_REASON}: {err}")


def test_real_llm_plans_are_valid_and_counted(server):
    config = local_llm.local_planner_config(server, max_tokens=160, max_repairs=1, num_demonstrations=3)
    planner = planner_from_config(config)
    outcomes = plan_batch(planner, CAPTIONS)
    assert len(outcomes) == len(CAPTIONS)
    for caption, outcome in zip(CAPTIONS, outcomes):
        assert outcome.source in ("llm", "repaired", "fallback"), (caption, outcome)
        assert outcome.plan is not None and outcome.plan.events, (caption, outcome)
        assert isinstance(outcome.plan, Plan) and isinstance(outcome.plan.dsg, DSG)
        assert Plan.from_json(outcome.plan.to_json()) == outcome.plan  # the schema re-validates it
        if outcome.source != "llm":
            assert outcome.errors, "a repaired or fallback plan records what went wrong"
    stats = planner.client.stats
    assert stats.calls >= len(CAPTIONS) and stats.failures == 0  # real HTTP calls, all answered
    assert stats.completion_tokens > 0


def test_step_three_enriches_llm_plans(server):
    """Scene imagination + polishing against the real model: every answer is validated or counted as kept."""
    config = local_llm.local_planner_config(server, max_tokens=120, max_repairs=0, num_demonstrations=2,
                                            imagination=True, polish=True)
    planner = planner_from_config(config)
    outcomes = plan_batch(planner, ["The red heart jumps.", "The blue star shrinks."])
    for outcome in outcomes:
        assert outcome.source in ("llm", "repaired", "fallback") and outcome.plan is not None
        assert Plan.from_json(outcome.plan.to_json()) == outcome.plan
    imagined = [o.imagination for o in outcomes if o.source != "fallback"]
    assert imagined, "step III needs at least one LLM-planned item: every step-I answer fell back"
    for counts in imagined:
        assert counts["scenes"] == counts["scenes_llm"] + counts["scenes_repaired"] + counts["scenes_kept"]
        assert counts["polished"] + counts["polish_kept"] == 1
    assert planner.client.stats.failures == 0  # the prompts fit the server's context


def test_plan_command_prints_plan_source_and_stats(capsys):
    _installed()
    code = local_llm.main(["--prompt", CAPTIONS[0], "--max_tokens", "120", "--max_repairs", "0",
                           "--num_demonstrations", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(lines) == 2
    record, stats = json.loads(lines[0]), json.loads(lines[1])["stats"]
    assert record["caption"] == CAPTIONS[0] and record["source"] in ("llm", "fallback")
    assert Plan.from_json(record["plan"]).events
    assert stats["calls"] == 1 and stats["model"] == local_llm.MODEL_ALIAS


def test_serve_then_plan_with_the_plan_cli():
    """The documented two-shell workflow: `local_llm serve`, then `dysen_jax.plan --backend openai`."""
    _installed()
    port = local_llm.free_port()
    serve = subprocess.Popen([sys.executable, "-m", "dysen_jax.planner.local_llm", "serve", "--port", str(port)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = serve.stdout.readline()
        assert first.startswith(f"serving {local_llm.MODEL_ALIAS} at http://127.0.0.1:{port}/v1"), \
            first + serve.stderr.read() if serve.poll() is not None else first
        done = subprocess.run([sys.executable, "-m", "dysen_jax.plan", "--backend", "openai", "--base_url",
                               f"http://127.0.0.1:{port}/v1", "--model", local_llm.MODEL_ALIAS, "--api_key_env",
                               "EMPTY", "--max_concurrency", "1", "--max_tokens", "120", "--max_repairs", "0",
                               "--num_demonstrations", "2", "--no-imagination", "--prompt", CAPTIONS[0]],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert Plan.from_json(json.loads(done.stdout)).events
    finally:
        serve.send_signal(signal.SIGINT)  # Ctrl-C: serve stops its llama.cpp server and exits 0
        try:
            code = serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
            code = serve.wait()
    assert code == 0


def test_server_reports_its_model_and_url(server):
    assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
    assert server.model == local_llm.MODEL_ALIAS and server.startup_s is not None


# --- error handling (no llama.cpp needed) ----------------------------------------------------------------
def test_missing_gguf_names_the_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(LocalLLMError, match=r"pip install -e '\.\[local-llm\]'"):
        local_llm.smollm2_gguf_path()


def test_missing_llama_cpp_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name))
    with pytest.raises(LocalLLMError, match=r"llama-cpp-python is not installed.*\[local-llm\]"):
        LocalLLMServer(model_path=__file__).start()


class _StandIn(LocalLLMServer):
    """A server whose command is a given Python snippet (to test startup handling without llama.cpp)."""

    def __init__(self, code: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.code = code

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.code]


def test_server_that_exits_reports_its_log_tail():
    server = _StandIn("import sys; print('loading model'); sys.stderr.write('bad magic in GGUF'); sys.exit(3)")
    with pytest.raises(LocalLLMError, match=r"(?s)exited with code 3.*bad magic in GGUF"):
        server.start()
    assert server._process is None  # stopped and cleaned up


def test_server_that_never_answers_times_out_with_its_log_tail():
    server = _StandIn("import time; print('still loading', flush=True); time.sleep(60)", startup_timeout_s=1.0)
    with pytest.raises(LocalLLMError, match=r"(?s)did not answer GET .*/v1/models within 1 s.*still loading"):
        server.start()
    assert server._process is None


def test_ready_server_is_stopped_on_exit():
    code = ("import http.server, sys\n"
            "class H(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        self.send_response(200); self.end_headers(); self.wfile.write(b'{}')\n"
            "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n")

    class _Http(_StandIn):
        def command(self) -> list[str]:
            return [*super().command(), str(self.port)]

    with _Http(code) as server:
        process = server._process
        assert process is not None and process.poll() is None and server.startup_s is not None
    assert process.poll() is not None
