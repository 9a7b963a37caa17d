"""The issue's own check of summaries (#30), from outside: `spkd run` as a process (the
fake engine from tests/fakes, so that the transcript is there in a second), and a
stand-in OpenAI-compatible server on 127.0.0.1 (http.server, here) that answers every
request with one fixed text, whatever it was asked.

- a finished transcript gets NAME.summary.md holding that answer;
- the request carries the transcript's text (and goes where the config says);
- with the server down, the transcript is done regardless, and the summary ends
  `failed` with the reason after its attempts;
- once the server is back, `spkd summarize JOB` writes the summary.

The real model behind a real llama.cpp server is tests/e2e/test_summaries.py's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support.daemon import REPO, Daemon, write_wav

pytestmark = pytest.mark.e2e

FIXED = "STAND-IN SUMMARY: the budget was agreed; 王总 sends the draft on Monday."


class StandIn:
    """An OpenAI-compatible `/v1/chat/completions` that answers FIXED and keeps every
    request it was sent; `stop()` closes the port, `start()` opens it again."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.port = 0
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> "StandIn":
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.paths.append(self.path)
                outer.requests.append(json.loads(body))
                reply = json.dumps({"id": "x", "object": "chat.completion", "model": "stand-in", "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": FIXED}}]})
                data = reply.encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture()
def stand_in() -> Iterator[StandIn]:
    server = StandIn().start()
    yield server
    try:
        server.stop()
    except Exception:  # noqa: BLE001 - already stopped by the test
        pass


def daemon(root: Path, server: StandIn) -> Daemon:
    return Daemon(root, config={
        "workers": {"count": 1},
        "output": {"formats": ["json", "txt", "html"]},
        "summary": {"endpoint": server.endpoint, "model": "stand-in", "timeout_seconds": 5, "max_attempts": 2,
                    "retry_backoff_seconds": 0.2},
    })


def spkd(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "--config", str(d.config_path), *args],
                          capture_output=True, text=True, env=d.env, cwd=REPO, timeout=120)


def summary_state(d: Daemon, job_id: int) -> dict[str, Any] | None:
    rows = d.query("SELECT state, attempts, error_kind, error_message, result FROM summaries WHERE job_id = ?", job_id)
    return rows[0] if rows else None


def test_the_stand_in_s_answer_becomes_the_summary_and_a_down_server_never_holds_up_the_transcript(
        tmp_path: Path, stand_in: StandIn) -> None:
    with daemon(tmp_path / "d", stand_in).start() as d:
        write_wav(d.inbox / "standup.wav", 2.0, seed=1)
        summary = d.outbox / "standup.summary.md"
        d.wait(summary.exists, timeout=90, what="standup.summary.md")
        job = d.jobs()[0]
        assert job["state"] == "done"
        assert FIXED in summary.read_text(encoding="utf-8")
        # the request went to the configured endpoint and carried the transcript's text
        assert stand_in.paths == ["/v1/chat/completions"] and stand_in.requests[0]["model"] == "stand-in"
        sent = "\n".join(m["content"] for m in stand_in.requests[0]["messages"])
        transcript = json.loads((d.outbox / "standup.json").read_text(encoding="utf-8"))
        assert transcript["segments"] and all(s["text"] in sent for s in transcript["segments"])
        assert transcript["summary"]["text"] == FIXED and transcript["summary"]["format"] == "text"
        assert d.wait(lambda: (summary_state(d, job["id"]) or {}).get("state") == "done", what="summary done")

        # the server goes away: the next transcript is done regardless, its summary fails with the reason
        stand_in.stop()
        write_wav(d.inbox / "review.wav", 2.0, seed=2)
        d.wait_finished(2, timeout=60)
        review = [j for j in d.jobs() if j["source_name"] == "review.wav"][0]
        assert review["state"] == "done" and (d.outbox / "review.json").is_file()
        failed = d.wait(lambda: (lambda s: s if s and s["state"] == "failed" else None)(summary_state(d, review["id"])),
                        timeout=60, what="the summary to fail")
        assert failed["attempts"] == 2 and failed["error_kind"] == "summary_server"
        assert f"127.0.0.1:{stand_in.port}" in failed["error_message"] and failed["result"] is None
        assert not (d.outbox / "review.summary.md").exists()
        assert "summary" not in json.loads((d.outbox / "review.json").read_text(encoding="utf-8"))
        assert [j["state"] for j in d.jobs()] == ["done", "done"]
        listed = spkd(d, "summaries", "--json")
        assert listed.returncode == 0, listed.stderr
        listed_states = {r["job_id"]: r["state"] for r in json.loads(listed.stdout)}
        assert listed_states == {job["id"]: "done", review["id"]: "failed"}
        sql = spkd(d, "sql", "SELECT job_id, state, error_kind FROM summaries ORDER BY job_id", "--json")
        assert sql.returncode == 0, sql.stderr
        assert [(r["job_id"], r["state"]) for r in json.loads(sql.stdout)] == [(job["id"], "done"),
                                                                               (review["id"], "failed")]
        status = spkd(d, "status")
        assert "summaries: 1 done, 1 failed" in status.stdout, status.stdout

        # back on the same port: `spkd summarize` asks again and the worker writes it
        stand_in.start()
        asked = spkd(d, "summarize", str(review["id"]))
        assert asked.returncode == 0, asked.stderr
        assert f"job {review['id']}: summary queued again" in asked.stdout
        d.wait((d.outbox / "review.summary.md").exists, timeout=60, what="review.summary.md")
        assert FIXED in (d.outbox / "review.summary.md").read_text(encoding="utf-8")
        assert d.wait(lambda: (summary_state(d, review["id"]) or {}).get("state") == "done", what="summary done")
        refused = spkd(d, "summarize", "999")
        assert refused.returncode == 1 and "no such job" in refused.stderr
