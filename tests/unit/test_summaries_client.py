"""The summary client's HTTP call (daemon/summaries/client.py) against a small server on
127.0.0.1 in the test: what it sends (the model, the messages, the key only from the
variable named), and how each way a server fails becomes SummaryServerError (tried again)
or SummaryRefusedError (not): refused connections, 5xx, 429, timeouts, garbage, 4xx;
redirects never followed, no proxy for a loopback endpoint."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from daemon.config import from_dict
from daemon.errors import SummaryRefusedError, SummaryServerError
from daemon.summaries.client import chat
from daemon.summaries.prompt import ANSWER_SCHEMA
from daemon.summary_config import SummaryConfig

MESSAGES = [{"role": "system", "content": "Summarise."}, {"role": "user", "content": "[1] 00:00:01 王总: 预算"}]


def completion(content: Any) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


class Server:
    """Answers each POST with `reply(handler_body) -> (status, headers, body)`; keeps what it got."""

    def __init__(self, reply: Callable[[dict], tuple[int, dict[str, str], bytes]]) -> None:
        self.reply = reply
        self.got: list[tuple[str, dict[str, str], dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                outer.got.append((self.path, dict(self.headers), body))
                status, headers, data = outer.reply(body)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def settings(self, tmp_path: Path, **extra: Any) -> SummaryConfig:
        raw = {"endpoint": f"http://127.0.0.1:{self.httpd.server_address[1]}/v1", "model": "smollm2",
               "timeout_seconds": 2, **extra}
        return from_dict({"summary": raw}, base_dir=tmp_path, env={}).summary


@pytest.fixture()
def serve() -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(reply: Callable[[dict], tuple[int, dict[str, str], bytes]]) -> Server:
        made.append(Server(reply))
        return made[-1]

    yield make
    for server in made:
        server.httpd.shutdown()
        server.httpd.server_close()


def test_the_request_carries_the_model_and_messages_and_the_answer_comes_back(tmp_path: Path, serve) -> None:
    server = serve(lambda body: (200, {"Content-Type": "application/json"}, completion("The answer.")))
    assert chat(server.settings(tmp_path), MESSAGES, env={}) == "The answer."
    path, headers, body = server.got[0]
    assert path == "/v1/chat/completions" and body["model"] == "smollm2" and body["messages"] == MESSAGES
    assert body["response_format"] == {"type": "json_object", "schema": ANSWER_SCHEMA} and body["max_tokens"] == 1024
    assert "Authorization" not in headers
    chat(server.settings(tmp_path, json_mode=False), MESSAGES, env={})
    assert "response_format" not in server.got[1][2]


def test_the_key_comes_from_the_variable_named_and_its_absence_is_not_retried(tmp_path: Path, serve) -> None:
    server = serve(lambda body: (200, {}, completion("ok")))
    settings = server.settings(tmp_path, api_key_env="LLM_KEY")
    chat(settings, MESSAGES, env={"LLM_KEY": "sk-local"})
    assert server.got[0][1]["Authorization"] == "Bearer sk-local"
    with pytest.raises(SummaryRefusedError, match="LLM_KEY, which is not set"):
        chat(settings, MESSAGES, env={})


@pytest.mark.parametrize(("status", "error"), [(500, SummaryServerError), (503, SummaryServerError),
                                               (429, SummaryServerError), (408, SummaryServerError),
                                               (400, SummaryRefusedError), (401, SummaryRefusedError),
                                               (404, SummaryRefusedError)])
def test_http_errors_are_told_apart(tmp_path: Path, serve, status: int, error: type) -> None:
    server = serve(lambda body: (status, {}, b'{"error": "model \\"smollm2\\" not found"}'))
    with pytest.raises(error, match=f"answered HTTP {status}: .*not found"):
        chat(server.settings(tmp_path), MESSAGES, env={})


@pytest.mark.parametrize("data", [b"<html>bad gateway</html>", b'{"choices": []}', completion(None), completion("  "),
                                  b'{"object": "list"}'])
def test_an_answer_that_is_no_chat_completion_is_a_server_error(tmp_path: Path, serve, data: bytes) -> None:
    server = serve(lambda body: (200, {}, data))
    with pytest.raises(SummaryServerError):
        chat(server.settings(tmp_path), MESSAGES, env={})


def test_a_redirect_is_never_followed(tmp_path: Path, serve) -> None:
    elsewhere = serve(lambda body: (200, {}, completion("leaked")))
    target = f"http://127.0.0.1:{elsewhere.httpd.server_address[1]}/v1/chat/completions"
    server = serve(lambda body: (307, {"Location": target}, b""))
    with pytest.raises(SummaryServerError, match="HTTP 307"):
        chat(server.settings(tmp_path), MESSAGES, env={})
    assert elsewhere.got == []


def test_a_loopback_endpoint_is_reached_without_the_environment_s_proxy(tmp_path: Path, serve,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(lambda body: (200, {}, completion("direct")))
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("no_proxy", "")
    assert chat(server.settings(tmp_path), MESSAGES, env={}) == "direct"


def test_a_server_that_is_down_or_slow_is_a_server_error(tmp_path: Path, serve) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = from_dict({"summary": {"endpoint": f"http://127.0.0.1:{port}/v1", "model": "m"}}, base_dir=tmp_path,
                     env={}).summary
    with pytest.raises(SummaryServerError, match="cannot get an answer"):
        chat(down, MESSAGES, env={})
    slow = serve(lambda body: (time.sleep(1.5), (200, {}, completion("late")))[1])
    started = time.monotonic()
    with pytest.raises(SummaryServerError, match="timed out"):
        chat(slow.settings(tmp_path, timeout_seconds=0.3), MESSAGES, env={})
    assert time.monotonic() - started < 1.4
