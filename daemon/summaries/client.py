"""The HTTP call: one request to an OpenAI-compatible `POST {endpoint}/chat/completions`
(Ollama, llama.cpp's server, vLLM), answered with the first choice's text.

Loaded only in worker processes (daemon/jobs/summarize.py imports it when it runs a
summary): the supervisor never holds an HTTP client for summaries.

What goes out is the request's JSON and, when `summary.api_key_env` names a variable
that is set, `Authorization: Bearer <its value>`; to no address but the endpoint's:
redirects are not followed (a 3xx is an error), and a loopback endpoint is reached
without any proxy from the environment (`http_proxy` would otherwise carry a private
meeting to the proxy). How it fails decides what happens next:
SummaryServerError (tried again later: no connection, a timeout, 5xx, 408, 429, an
answer that is no chat completion) or SummaryRefusedError (4xx otherwise: asking the
same way again cannot help).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.error
import urllib.request
from typing import Any, Mapping, Sequence

from daemon.errors import SummaryRefusedError, SummaryServerError
from daemon.summaries.prompt import ANSWER_SCHEMA
from daemon.summary_config import SummaryConfig

__all__ = ["MAX_RESPONSE_BYTES", "TEMPERATURE", "chat"]

# A chat completion of a page of text is a few KB; anything near this is not one.
MAX_RESPONSE_BYTES = 8 * 2**20
# Low: a summary should say what the transcript says, not vary between runs.
TEMPERATURE = 0.2
# How much of an error body goes into the recorded message.
_ERROR_BODY_CHARS = 300


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError for the 3xx


def _opener(settings: SummaryConfig) -> urllib.request.OpenerDirector:
    handlers: list[Any] = [_NoRedirects()]
    if not settings.remote:
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


def _headers(settings: SummaryConfig, env: Mapping[str, str]) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if settings.api_key_env:
        key = env.get(settings.api_key_env)
        if not key:
            raise SummaryRefusedError(f"summary.api_key_env names {settings.api_key_env}, which is not set in the "
                                      "daemon's environment")
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _body_excerpt(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read(_ERROR_BODY_CHARS * 4).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the status says enough
        return ""
    text = " ".join(text.split())[:_ERROR_BODY_CHARS]
    return f": {text}" if text else ""


def chat(settings: SummaryConfig, messages: Sequence[Mapping[str, str]], *,
         env: Mapping[str, str] | None = None) -> str:
    """The model's answer to `messages` (the first choice's content, as written)."""
    body: dict[str, Any] = {"model": settings.model, "messages": list(messages), "temperature": TEMPERATURE,
                            "max_tokens": settings.max_answer_tokens, "stream": False}
    if settings.json_mode:
        body["response_format"] = {"type": "json_object", "schema": ANSWER_SCHEMA}
    url = settings.chat_url
    request = urllib.request.Request(url, data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                                     headers=_headers(settings, os.environ if env is None else env), method="POST")
    try:
        with _opener(settings).open(request, timeout=settings.timeout_seconds) as response:
            raw = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        status = exc.code
        message = f"{url} answered HTTP {status}{_body_excerpt(exc)}"
        if status in (408, 429) or status >= 500 or 300 <= status < 400:
            raise SummaryServerError(message) from None
        raise SummaryRefusedError(message) from None
    except (urllib.error.URLError, http.client.HTTPException, socket.timeout, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SummaryServerError(f"cannot get an answer from {url}: {reason}") from None
    if len(raw) > MAX_RESPONSE_BYTES:
        raise SummaryServerError(f"{url} answered more than {MAX_RESPONSE_BYTES // 2**20} MB: no chat completion")
    return _content(raw, url)


def _content(raw: bytes, url: str) -> str:
    """The first choice's message content of a chat completion, or SummaryServerError."""
    try:
        doc = json.loads(raw.decode("utf-8"))
        content = doc["choices"][0]["message"]["content"]
    except (ValueError, UnicodeDecodeError, KeyError, IndexError, TypeError):
        shown = " ".join(raw[:_ERROR_BODY_CHARS].decode("utf-8", "replace").split())
        raise SummaryServerError(f"{url} answered something that is no chat completion: {shown!r}") from None
    if not isinstance(content, str) or not content.strip():
        raise SummaryServerError(f"{url} answered an empty message")
    return content
