"""OpenAI-compatible chat-completions client for the Dysen planner (OpenAI, vLLM, Ollama, llama.cpp).

Why a wrapper over `openai.AsyncOpenAI`: preprocessing sends thousands of prompts, so it needs
bounded concurrency, a requests-per-minute limit shared by every request, our own retry loop
(exponential backoff with full jitter, honouring Retry-After), a persistent on-disk cache keyed by
the full request (a rerun costs no calls) and token accounting for the job's report.

The API key is read from an environment variable when a client for an event loop is built and
is handed only to the SDK: it is never stored on this object, logged, cached, reported, or put
into an exception message (errors are re-raised as `LLMRequestError` with the key redacted and
without the SDK's request object, whose headers carry it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import random
import tempfile
import time
from typing import Any, Sequence

import openai

log = logging.getLogger(__name__)

NO_KEY = "EMPTY"  # The dummy key OpenAI-compatible local servers (vLLM, llama.cpp) accept.
Messages = list[dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    """Where and how to call the LLM; `api_key_env` names the variable holding the key (never the key).

    `api_key_env="EMPTY"` (or "") means the server needs no key. `max_retries` counts retries after
    the first attempt; `requests_per_minute <= 0` disables the rate limit; `cache_dir=None` disables
    the cache.
    """

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 512
    max_concurrency: int = 8
    requests_per_minute: float = 600
    max_retries: int = 5
    timeout_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")

    @classmethod
    def from_config(cls, cfg: Any) -> "LLMConfig":
        """Builds the config from an ml_collections section (or mapping) with the same keys; unknown keys fail."""
        values = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LLM config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**values)

    def read_api_key(self) -> str:
        """The key from the environment now (so a rotated key is picked up); NO_KEY for keyless servers."""
        if self.api_key_env in ("", NO_KEY):
            return NO_KEY
        key = os.environ.get(self.api_key_env)
        if not key:
            raise LLMConfigError(f"environment variable {self.api_key_env} is not set; set it, or set "
                                 f"api_key_env='{NO_KEY}' for a local server that needs no key")
        return key


@dataclasses.dataclass(frozen=True)
class Completion:
    """One answer: its text, token usage, whether it came from the cache, and why generation stopped."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool = False
    finish_reason: str | None = None


@dataclasses.dataclass
class LLMStats:
    """Counters over the client's lifetime; asyncio runs one coroutine at a time, so plain ints suffice."""

    calls: int = 0  # HTTP attempts sent (retries included).
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0  # Requests that ended in an error after their retries.
    prompt_tokens: int = 0
    completion_tokens: int = 0


class LLMConfigError(ValueError):
    """The client is misconfigured (e.g. the key's environment variable is missing)."""


class LLMRequestError(RuntimeError):
    """A request failed for good; `kind` is the SDK error class name, `status_code` the HTTP status if any."""

    def __init__(self, message: str, *, kind: str, status_code: int | None, attempts: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.status_code = status_code
        self.attempts = attempts


class RateLimiter:
    """Spaces request starts at least 60/rpm seconds apart, shared by all coroutines of the client.

    Even spacing (a token bucket of capacity 1) rather than bursts, because server-side limits are
    often enforced over sub-minute windows. Reserving a slot has no await, so it is atomic in asyncio.
    """

    def __init__(self, requests_per_minute: float) -> None:
        self.interval_s = 60.0 / requests_per_minute if requests_per_minute > 0 else 0.0
        self._next_slot = 0.0

    async def acquire(self) -> None:
        """Waits for this request's slot."""
        if self.interval_s <= 0:
            return
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self.interval_s
        if slot > now:
            await asyncio.sleep(slot - now)


class ResponseCache:
    """One JSON file per request key under `root/<2 hex>/<key>.json`, written atomically (temp + rename)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _path(self, key: str) -> str:
        return os.path.join(self.root, key[:2], f"{key}.json")

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored answer, or None when absent or unreadable (a damaged file is just a miss)."""
        try:
            with open(self._path(key), encoding="utf-8") as f:
                entry = json.load(f)
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) and isinstance(entry.get("text"), str) else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        """Stores `entry`; concurrent writers of the same key are harmless (same content, atomic rename)."""
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f, ensure_ascii=False, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def request_key(config: LLMConfig, messages: Messages, response_format: dict[str, Any] | None) -> str:
    """SHA-256 over everything that determines the answer (never the key): server, model, prompt, sampling."""
    payload = {"base_url": config.base_url.rstrip("/"), "model": config.model, "messages": messages,
               "temperature": config.temperature, "max_tokens": config.max_tokens,
               "response_format": response_format}
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def is_retryable(error: BaseException) -> bool:
    """429, 5xx, timeouts and connection errors are transient; other errors (4xx, bad answers) are not."""
    if isinstance(error, (openai.RateLimitError, openai.APIConnectionError)):  # Timeout is a ConnectionError.
        return True
    return isinstance(error, openai.APIStatusError) and error.status_code >= 500


def retry_after_s(error: BaseException) -> float | None:
    """The server's Retry-After (or retry-after-ms) in seconds, if it sent a numeric one."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def backoff_delay_s(config: LLMConfig, attempt: int, error: BaseException, rng: random.Random) -> float:
    """Retry-After when given (capped), else full jitter: uniform(0, min(max, base * 2**attempt))."""
    hinted = retry_after_s(error)
    if hinted is not None:
        return min(hinted, config.backoff_max_s)
    return rng.uniform(0.0, min(config.backoff_max_s, config.backoff_base_s * 2 ** attempt))


class _LoopResources:
    """The SDK client and concurrency bound of one event loop (httpx pools cannot cross loops)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sdk: openai.AsyncOpenAI, max_concurrency: int) -> None:
        self.loop = loop
        self.sdk = sdk
        self.semaphore = asyncio.Semaphore(max_concurrency)


class LLMClient:
    """Chat completions with bounded concurrency, RPM limit, retries, on-disk cache and token stats."""

    def __init__(self, config: LLMConfig, *, seed: int | None = None) -> None:
        self.config = config
        self.stats = LLMStats()
        self._limiter = RateLimiter(config.requests_per_minute)
        self._cache = ResponseCache(config.cache_dir) if config.cache_dir else None
        self._rng = random.Random(seed)
        self._loop_resources: _LoopResources | None = None

    def __repr__(self) -> str:
        return (f"LLMClient(base_url={self.config.base_url!r}, model={self.config.model!r}, "
                f"api_key_env={self.config.api_key_env!r})")

    def _resources(self) -> _LoopResources:
        """The SDK client for the running loop, built (reading the key) on first use in that loop."""
        loop = asyncio.get_running_loop()
        if self._loop_resources is None or self._loop_resources.loop is not loop:
            sdk = openai.AsyncOpenAI(base_url=self.config.base_url, api_key=self.config.read_api_key(),
                                     max_retries=0, timeout=self.config.timeout_s)
            self._loop_resources = _LoopResources(loop, sdk, self.config.max_concurrency)
        return self._loop_resources

    async def aclose(self) -> None:
        """Closes the SDK client of the running loop (its connection pool)."""
        resources, self._loop_resources = self._loop_resources, None
        if resources is not None and resources.loop is asyncio.get_running_loop():
            await resources.sdk.close()

    async def complete(self, messages: Messages, *, response_format: dict[str, Any] | None = None) -> Completion:
        """One chat completion: from the cache if present, else over HTTP with retries (then cached)."""
        key = request_key(self.config, messages, response_format)
        hit = self._cache.get(key) if self._cache else None
        if hit is not None:
            self.stats.cache_hits += 1
            return Completion(text=hit["text"], prompt_tokens=int(hit.get("prompt_tokens", 0)),
                              completion_tokens=int(hit.get("completion_tokens", 0)), cached=True,
                              finish_reason=hit.get("finish_reason"))
        completion = await self._complete_with_retries(messages, response_format)
        if self._cache:
            self._cache.put(key, {"text": completion.text, "prompt_tokens": completion.prompt_tokens,
                                  "completion_tokens": completion.completion_tokens,
                                  "finish_reason": completion.finish_reason, "model": self.config.model})
        return completion

    async def _complete_with_retries(self, messages: Messages,
                                     response_format: dict[str, Any] | None) -> Completion:
        """Attempts the request up to 1 + max_retries times, sleeping between transient failures."""
        for attempt in range(self.config.max_retries + 1):
            try:
                return await self._attempt(messages, response_format)
            except (openai.OpenAIError, LLMRequestError) as error:
                if not is_retryable(error) or attempt == self.config.max_retries:
                    self.stats.failures += 1
                    raise self._sanitized(error, attempt + 1) from None
                delay = backoff_delay_s(self.config, attempt, error, self._rng)
                self.stats.retries += 1
                log.info("LLM request failed (%s), retry %d/%d in %.2f s", _describe(error), attempt + 1,
                         self.config.max_retries, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _attempt(self, messages: Messages, response_format: dict[str, Any] | None) -> Completion:
        """One HTTP call, inside the concurrency bound and after the rate limiter's slot."""
        resources = self._resources()
        kwargs: dict[str, Any] = {"model": self.config.model, "messages": messages,
                                  "temperature": self.config.temperature, "max_tokens": self.config.max_tokens}
        if response_format is not None:
            kwargs["response_format"] = response_format
        async with resources.semaphore:
            await self._limiter.acquire()
            self.stats.calls += 1
            response = await resources.sdk.chat.completions.create(**kwargs)
        return self._to_completion(response)

    def _to_completion(self, response: Any) -> Completion:
        """Extracts text, finish reason and usage; counts the tokens."""
        choices = getattr(response, "choices", None) or []
        text = choices[0].message.content if choices and choices[0].message is not None else None
        if not isinstance(text, str):
            raise LLMRequestError("the server's answer has no message content", kind="EmptyAnswer",
                                  status_code=None, attempts=1)
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        return Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          cached=False, finish_reason=choices[0].finish_reason)

    def _sanitized(self, error: BaseException, attempts: int) -> LLMRequestError:
        """Our own error with the key redacted and no reference to the SDK request (its headers hold the key)."""
        if isinstance(error, LLMRequestError):
            error.attempts = attempts
            return error
        detail = " ".join(str(error).split())[:300]
        message = (f"LLM request to {self.config.base_url} failed after {attempts} attempt(s): "
                   f"{_describe(error)}: {detail}")
        return LLMRequestError(self._redact(message), kind=type(error).__name__,
                               status_code=getattr(error, "status_code", None), attempts=attempts)

    def _redact(self, text: str) -> str:
        """`text` with the current key (if any) replaced by ***."""
        try:
            key = self.config.read_api_key()
        except LLMConfigError:
            return text
        return text.replace(key, "***") if key != NO_KEY else text

    async def acomplete_many(self, list_of_messages: Sequence[Messages], *,
                             response_format: dict[str, Any] | None = None) -> list[Completion | Exception]:
        """All requests concurrently (bounded by max_concurrency), in input order; failures are returned."""
        tasks = [self.complete(messages, response_format=response_format) for messages in list_of_messages]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # KeyboardInterrupt / cancellation must not be swallowed.
        return list(results)

    def complete_many(self, list_of_messages: Sequence[Messages], *,
                      response_format: dict[str, Any] | None = None) -> list[Completion | Exception]:
        """Sync entry point for `acomplete_many` (runs its own event loop; call `acomplete_many` inside one).
        Called from a thread that already runs a loop (a Jupyter / Colab cell), it runs in a worker thread."""
        async def run() -> list[Completion | Exception]:
            try:
                return await self.acomplete_many(list_of_messages, response_format=response_format)
            finally:
                await self.aclose()

        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: the usual case
            return asyncio.run(run())
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, run()).result()

    def report(self) -> dict[str, Any]:
        """Counters plus the non-secret settings, for the job's report (JSON-serialisable)."""
        return {"model": self.config.model, "base_url": self.config.base_url, **dataclasses.asdict(self.stats)}


def _describe(error: BaseException) -> str:
    """A short, key-free description: class name and HTTP status (no response body, no headers)."""
    status = getattr(error, "status_code", None)
    return f"{type(error).__name__}" + (f" (HTTP {status})" if status is not None else "")
