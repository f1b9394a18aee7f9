"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 for tests (real HTTP, no network).

Modes (set per test with `set_mode`, or per request with `route`):
  "ok"         answers `answer` (a string, or a function of the request JSON)
  "slow"       sleeps `delay_s`, then answers like "ok"
  "429"/"500"  the first `k` requests get that status (429 with Retry-After: 0), later ones "ok"
  "malformed"  a valid envelope whose content is garbage, not the expected line/JSON format
  "truncated"  finish_reason "length" and the answer cut in half
  "hang"       does not answer until the server stops (or `hang_s` passes)
  "icl_copier" imitates an LLM that learns from its shots (`icl_copier_answer`): answer quality
               depends on which step-I demonstrations the prompt shows; other prompts as "ok"
Every request is recorded (path, headers, JSON body, arrival time); in-flight peak is tracked.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Answer = str | Callable[[dict[str, Any]], str]
MALFORMED_CONTENT = '{"events": [[agent, "moves" (0v,, ]]}} <<garbage>> )(('


@dataclasses.dataclass
class Recorded:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    arrived_s: float  # time.monotonic() at arrival.


class _Server(ThreadingHTTPServer):
    """A listen backlog for many concurrent clients (socketserver's default of 5 drops connections)."""

    request_queue_size = 256


class ScriptedLLMServer:
    """Context manager: starts the server on an ephemeral 127.0.0.1 port in a thread, stops it on exit."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.answer: Answer = "(red circle, moves, right, (0v, 1v))"
        self.k = 0
        self.delay_s = 0.0
        self.hang_s = 30.0
        self.route: Callable[[dict[str, Any]], str | None] | None = None
        self.requests: list[Recorded] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._failures_sent = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------------------
    def set_mode(self, mode: str, *, k: int = 0, delay_s: float = 0.0, answer: Answer | None = None) -> None:
        """Switches the script; resets the failure counter of the 429/500 modes."""
        if mode not in ("ok", "slow", "429", "500", "malformed", "truncated", "hang", "icl_copier"):
            raise ValueError(f"unknown mode {mode!r}")
        with self._lock:
            self.mode, self.k, self.delay_s, self._failures_sent = mode, k, delay_s, 0
            if answer is not None:
                self.answer = answer

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (…/v1) of the running server."""
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def calls(self) -> int:
        """How many chat-completion requests arrived."""
        with self._lock:
            return len(self.requests)

    def __enter__(self) -> "ScriptedLLMServer":
        handler = type("Handler", (_Handler,), {"script": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="llm-test-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # Releases hanging handlers.
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- request handling (called from handler threads) ----------------------------------------
    def _record(self, recorded: Recorded) -> str:
        """Stores the request and decides its mode (routing rule first, then the global mode)."""
        with self._lock:
            self.requests.append(recorded)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            mode = (self.route(recorded.body) if self.route else None) or self.mode
            if mode in ("429", "500"):
                if self._failures_sent < self.k:
                    self._failures_sent += 1
                else:
                    mode = "ok"
            return mode

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _answer_text(self, body: dict[str, Any]) -> str:
        return self.answer(body) if callable(self.answer) else self.answer


class _Handler(BaseHTTPRequestHandler):
    """Serves POST /v1/chat/completions according to the owning ScriptedLLMServer."""

    script: ScriptedLLMServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silent: tests inspect `requests` instead of stderr."""

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        body = json.loads(raw or b"{}")
        recorded = Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
        mode = self.script._record(recorded)
        try:
            self._serve(mode, body)
        finally:
            self.script._done()

    def _serve(self, mode: str, body: dict[str, Any]) -> None:
        script = self.script
        if mode == "hang":
            script._stopping.wait(script.hang_s)
            self.close_connection = True
            return
        if mode == "429":
            self._send_json(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                            {"Retry-After": "0"})
            return
        if mode == "500":
            self._send_json(500, {"error": {"message": "internal error", "type": "server_error"}})
            return
        if mode == "slow":
            time.sleep(script.delay_s)
        text, finish = script._answer_text(body), "stop"
        if mode == "icl_copier":
            text = icl_copier_answer(body, text)
        elif mode == "malformed":
            text = MALFORMED_CONTENT
        elif mode == "truncated":
            text, finish = text[: max(1, len(text) // 2)], "length"
        self._send_json(200, _completion_body(body, text, finish))

    def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # The client gave up (its timeout); nothing to do.


def icl_copier_answer(body: dict[str, Any], otherwise: str = "") -> str:
    """A deterministic "LLM" whose step-I answer depends on the demonstrations its prompt shows.

    It understands the test caption (the rules planner's events, gold on synthetic captions) but
    can only write what the shots taught it:
    * an event whose predicate no shown demonstration uses gets the predicate the shots use most
      (ties: first shown; "moving" with no shots) and no target: a wrong triplet;
    * if the caption has simultaneous events but no shown demonstration does, it writes all events
      one after another: wrong temporal order.
    So the best shots cover the caption's actions (and its simultaneity), which depends on the
    caption: a selection policy can learn that, random shots get it right only by chance.
    Prompts that are not step I (imagination, polishing) get `otherwise`.
    """
    import collections

    from dysen_jax.dsg.schema import DSGError
    from dysen_jax.planner.parse import parse_events
    from dysen_jax.planner.prompts import ACTION_PLANNING_INSTRUCTION, format_events
    from dysen_jax.planner.rules import RulesPlanner

    messages = body.get("messages", [])
    if not messages or not str(messages[0].get("content", "")).startswith(ACTION_PLANNING_INSTRUCTION[:60]):
        return otherwise
    turns = messages[1:]
    test = next((i for i in range(len(turns) - 1, -1, -1)
                 if turns[i]["role"] == "user" and turns[i]["content"].startswith("Text: ")), None)
    if test is None:
        return otherwise
    caption = turns[test]["content"][len("Text: "):].split("\n")[0]
    shown = []
    for _, assistant in zip(turns[:test:2], turns[1:test:2]):
        try:
            shown.append(parse_events(assistant["content"]))
        except DSGError:
            continue
    counts = collections.Counter(e.predicate for events in shown for e in events)
    fallback = max(counts, key=lambda p: counts[p]) if counts else "moving"  # first seen wins ties
    try:
        truth = RulesPlanner().plan(caption).events
    except DSGError:
        return otherwise
    events = [e if e.predicate in counts else dataclasses.replace(e, predicate=fallback, target=None)
              for e in truth]
    concurrent = lambda evs: len({e.start for e in evs}) < len(evs)  # noqa: E731
    if concurrent(truth) and not any(concurrent(events_) for events_ in shown):
        width = truth[0].end - truth[0].start
        order = sorted(range(len(events)), key=lambda i: (events[i].start, i))
        events = [dataclasses.replace(events[i], start=r * width, end=(r + 1) * width) for r, i in enumerate(order)]
    return format_events(events)


def _completion_body(request: dict[str, Any], text: str, finish_reason: str) -> dict[str, Any]:
    """A chat.completion object; token counts are whitespace word counts (deterministic)."""
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))
    completion_tokens = len(text.split())
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
        "model": request.get("model", "test-model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
