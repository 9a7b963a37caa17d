"""The `summary` section of the configuration (daemon.config loads it with every other
section): where meeting summaries are asked for, and the rule that keeps recordings on
this machine unless the config says otherwise.

Summaries are off until `summary.endpoint` names an OpenAI-compatible API (Ollama,
llama.cpp's server, vLLM). An endpoint that is not loopback (127.0.0.0/8, ::1,
`localhost`) is refused unless `summary.allow_remote` is true: the transcript of a
private meeting leaves the machine only when someone wrote that it may. Host names
are never resolved here (a name that points at 127.0.0.1 today may not tomorrow), so
only the literal loopback names count as local.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from daemon.errors import ConfigError

__all__ = ["SUMMARY_RULES", "SummaryConfig", "endpoint_host", "endpoint_problem", "is_loopback_host",
           "resolved"]

# The path every OpenAI-compatible server answers chat requests on, under its base URL.
CHAT_PATH = "/chat/completions"
# Below this many tokens for the transcript in one request a summary is not worth asking for.
MIN_TRANSCRIPT_TOKENS = 512


@dataclass(frozen=True)
class SummaryConfig:
    # The base URL of an OpenAI-compatible API (`http://127.0.0.1:8080/v1`); null: no summaries.
    endpoint: str | None = None
    # The model's name as the server knows it (required with an endpoint).
    model: str | None = None
    # The name of the environment variable that holds the API key, never the key itself.
    api_key_env: str | None = None
    # The language to write the summary in; null: the transcript's own.
    language: str | None = None
    # A file whose text replaces the built-in instructions (daemon.summaries.prompt).
    prompt: Path | None = None
    allow_remote: bool = False
    # Every finished transcription gets a summary unless its sidecar says `"summary": false`;
    # false: only those whose sidecar says `"summary": true` (and `spkd summarize`).
    automatic: bool = True
    # The model's context window; a longer transcript is summarised in parts, then combined.
    context_tokens: int = 8192
    max_answer_tokens: int = 1024
    # Ask for `response_format: {"type": "json_object"}` (the server then constrains the answer to JSON).
    json_mode: bool = True
    # One request's limit: a local model on a CPU writes a page in minutes.
    timeout_seconds: float = 300.0
    max_attempts: int = 5
    # Doubled after each failed attempt.
    retry_backoff_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.endpoint is None:
            return
        if not self.model:
            raise ConfigError("summary.model: required when summary.endpoint is set (the model's name as the server "
                              "knows it, e.g. llama3.2 for Ollama)")
        host = endpoint_host(self.endpoint)
        if not self.allow_remote and not is_loopback_host(host):
            raise ConfigError(f"summary.endpoint: {host} is not this machine; transcripts would be sent there. Use "
                              "a loopback address (127.0.0.1, ::1, localhost), or set summary.allow_remote: true "
                              "to send them")
        if self.context_tokens - self.max_answer_tokens < MIN_TRANSCRIPT_TOKENS:
            raise ConfigError(f"summary.context_tokens: must exceed summary.max_answer_tokens by at least "
                              f"{MIN_TRANSCRIPT_TOKENS} (got {self.context_tokens} and {self.max_answer_tokens})")

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None

    def wanted(self, options: Mapping[str, Any]) -> bool:
        """Whether a job with these sidecar options gets a summary once it is done."""
        return self.enabled and bool(options.get("summary", self.automatic))

    @property
    def chat_url(self) -> str:
        """Where the chat requests go."""
        return (self.endpoint or "").rstrip("/") + CHAT_PATH

    @property
    def remote(self) -> bool:
        """Whether the endpoint is another machine (allowed by summary.allow_remote)."""
        return self.endpoint is not None and not is_loopback_host(endpoint_host(self.endpoint))


def endpoint_host(url: str) -> str:
    return urlsplit(url).hostname or ""


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 (also as ::ffff:127.0.0.1) and `localhost` (or `*.localhost`); no lookup."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def endpoint_problem(value: str | None) -> str | None:
    """Why `value` is not a `summary.endpoint`, or None."""
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL such as http://127.0.0.1:8080/v1"
    if parts.username or parts.password:
        return "must not hold credentials; name the variable that holds the key in summary.api_key_env"
    if parts.query or parts.fragment:
        return "must be a base URL without ?query or #fragment"
    return None


# key -> predicate(value) -> error message or None (daemon.config applies them with its own rules).
SUMMARY_RULES = {
    "summary.endpoint": endpoint_problem,
    "summary.api_key_env": lambda v: None if v is None or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", v)
    else "must be the NAME of an environment variable (letters, digits, _), never the key itself",
    "summary.model": lambda v: None if v is None or (v.strip() and v.isprintable() and len(v) <= 256)
    else "must be a model name (printable, at most 256 characters)",
    "summary.language": lambda v: None if v is None or (v.strip() and v.isprintable() and len(v) <= 64)
    else "must be null or a language name (at most 64 characters)",
    "summary.context_tokens": lambda v: None if 1024 <= v <= 10_000_000 else "must be from 1024 to 10000000",
    "summary.max_answer_tokens": lambda v: None if 64 <= v <= 1_000_000 else "must be from 64 to 1000000",
    "summary.timeout_seconds": lambda v: None if 0 < v <= 86400 else "must be more than 0 and at most 86400",
    "summary.max_attempts": lambda v: None if 1 <= v <= 100 else "must be from 1 to 100",
    "summary.retry_backoff_seconds": lambda v: None if 0 <= v <= 86400 else "must be from 0 to 86400",
}


def resolved(config: SummaryConfig, base_dir: Path) -> SummaryConfig:
    """The prompt file's path against the config's folder, like every path of the config;
    a trailing `/chat/completions` on the endpoint dropped (it is added to every request)."""
    from dataclasses import replace

    prompt = config.prompt
    if prompt is not None and not prompt.is_absolute():
        prompt = (base_dir / prompt).resolve()
    endpoint = config.endpoint
    if endpoint is not None:
        endpoint = endpoint.rstrip("/").removesuffix(CHAT_PATH)
    return replace(config, prompt=prompt, endpoint=endpoint)
