"""Webhook notifications against a local HTTP server (127.0.0.1, an ephemeral port)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from loguru import logger

from daemon.service import notify
from daemon import store as st
from tests.support.config import make_config


class Hook:
    """Records every POST; answers `statuses` in turn (then 200), after `delay` seconds."""

    def __init__(self, statuses: tuple[int, ...] = (), delay: float = 0.0, answer: bytes = b"ok") -> None:
        self.bodies: list[dict] = []
        self.requests: list[dict] = []
        self.statuses = list(statuses)
        self.delay = delay
        self.answer = answer
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(hook.delay)
                status = hook.statuses.pop(0) if hook.statuses else 200
                hook.requests.append({"path": self.path, "status": status,
                                      "content_type": self.headers["Content-Type"]})
                if status == 200:
                    hook.bodies.append(json.loads(body))
                try:
                    self.send_response(status)
                    self.end_headers()
                    self.wfile.write(hook.answer)
                except OSError:
                    pass  # the client gave up waiting (the slow-webhook tests)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True  # close() must not wait for a deliberately slow answer
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def wait(self, n: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.bodies) < n:
            time.sleep(0.02)
        return self.bodies

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture()
def hook():
    h = Hook()
    yield h
    h.close()


def finish(store: st.Store, name: str, *, ok: bool = True, pid: int = 7) -> int:
    job_id = store.enqueue(source_name=name, spool_path=f"/spool/{name}", output_stem=name, sha256=None,
                           size_bytes=1, max_attempts=1)
    job = store.claim(slot=0, pid=pid, device="cuda:0", lease_seconds=60)
    assert job is not None and job.id == job_id
    if ok:
        store.complete(job_id, pid=pid, audio_seconds=754.0, processing_seconds=41.0, speakers=2,
                       outputs=[f"{name}.json"], device="cuda:0")
    else:
        store.fail(job_id, pid=pid, kind="bad_audio", message="cannot decode", permanent=True,
                   retry_backoff_seconds=0)
    return job_id


def test_history_is_not_re_sent_and_new_jobs_are_posted_as_json(tmp_path, hook, store):
    finish(store, "before.wav")
    notifier = notify.Notifier(make_config(tmp_path, notify={"webhook_url": hook.url}), host="box")
    assert notifier.poll(store) == 0  # the first poll only finds where "now" is
    done_id = finish(store, "team/standup.m4a")
    failed_id = finish(store, "broken.wav", ok=False)
    assert notifier.poll(store) == 2
    assert notifier.poll(store) == 0
    notifier.close(5)
    bodies = hook.wait(2)
    assert [b["event"] for b in bodies] == ["done", "failed"]
    done, failed = bodies
    assert done["host"] == "box" and done["at"].endswith("Z")
    assert done["job"]["id"] == done_id and done["job"]["source_name"] == "team/standup.m4a"
    assert done["job"]["device"] == "cuda:0" and done["job"]["audio_seconds"] == 754.0
    assert done["job"]["processing_seconds"] == 41.0 and done["job"]["speakers"] == 2
    assert done["job"]["error_kind"] is None
    assert "12m34s of audio in 41s" in done["text"]
    assert failed["job"]["id"] == failed_id
    assert (failed["job"]["error_kind"], failed["job"]["error_message"]) == ("bad_audio", "cannot decode")
    assert hook.requests[0]["content_type"].startswith("application/json")
    assert notifier.sent == 2 and notifier.dropped == 0


def test_prime_at_start_catches_jobs_that_finish_before_the_first_poll(tmp_path, hook, store):
    finish(store, "history.wav")
    notifier = notify.Notifier(make_config(tmp_path, notify={"webhook_url": hook.url}))
    notifier.prime(store)
    finish(store, "early.wav")
    assert notifier.poll(store) == 1
    notifier.close(5)
    assert [b["job"]["source_name"] for b in hook.wait(1)] == ["early.wav"]


def test_a_reloaded_notifier_continues_where_the_old_one_stopped(tmp_path, hook, store):
    old = notify.Notifier(make_config(tmp_path, notify={"webhook_url": hook.url}))
    old.prime(store)
    finish(store, "seen.wav")
    assert old.poll(store) == 1
    old.close(5)
    finish(store, "during-reload.wav")
    config = make_config(tmp_path, notify={"webhook_url": hook.url, "template": "slack"})
    new = notify.Notifier(config, start_after=old.last_event_id)
    assert new.poll(store) == 1
    new.close(5)
    bodies = hook.wait(2)
    assert bodies[0]["job"]["source_name"] == "seen.wav" and "during-reload.wav" in bodies[1]["text"]


@pytest.mark.parametrize("template, check", [
    ("wecom", lambda b: b["msgtype"] == "text" and "done a.wav" in b["text"]["content"]),
    ("feishu", lambda b: b["msg_type"] == "text" and "done a.wav" in b["content"]["text"]),
    ("slack", lambda b: set(b) == {"text"} and "done a.wav" in b["text"]),
])
def test_chat_templates(tmp_path, hook, store, template, check):
    notifier = notify.Notifier(make_config(tmp_path, notify={"webhook_url": hook.url, "template": template}))
    notifier.prime(store)
    finish(store, "a.wav")
    notifier.poll(store)
    notifier.close(5)
    (body,) = hook.wait(1)
    assert check(body), body


def test_daemon_events_and_the_events_filter(tmp_path, hook, store):
    config = make_config(tmp_path, notify={"webhook_url": hook.url, "events": ["failed", "stop"]})
    notifier = notify.Notifier(config, host="box")
    notifier.prime(store)
    finish(store, "fine.wav")
    finish(store, "broken.wav", ok=False)
    assert notifier.poll(store) == 1  # done is not wanted
    assert notifier.daemon_event("start", {"pid": 1}) is False
    assert notifier.daemon_event("stop", {"pid": 42, "reason": "SIGTERM"}) is True
    notifier.close(5)
    bodies = hook.wait(2)
    assert [b["event"] for b in bodies] == ["failed", "stop"]
    assert bodies[1]["daemon"] == {"pid": 42, "reason": "SIGTERM"} and "job" not in bodies[1]
    assert "spkd stopping on box" in bodies[1]["text"]


def test_jobs_of_other_hosts_are_theirs_to_report(tmp_path, hook, store):
    notifier = notify.Notifier(make_config(tmp_path, notify={"webhook_url": hook.url}))
    notifier.prime(store)
    other = st.Store(store.url, host="h2")
    try:
        finish(other, "theirs.wav")
    finally:
        other.close()
    finish(store, "ours.wav")
    assert notifier.poll(store) == 1
    notifier.close(5)
    assert [b["job"]["source_name"] for b in hook.wait(1)] == ["ours.wav"]


def test_a_failing_webhook_is_retried_with_backoff_until_it_answers(tmp_path, store):
    hook = Hook(statuses=(500, 503))
    try:
        config = make_config(tmp_path, notify={"webhook_url": hook.url, "max_attempts": 4})
        notifier = notify.Notifier(config, backoff_seconds=0.05)
        assert notifier.daemon_event("start", {"pid": 1})
        bodies = hook.wait(1)
        notifier.close(5)
        assert [r["status"] for r in hook.requests] == [500, 503, 200]
        assert [b["event"] for b in bodies] == ["start"] and notifier.sent == 1
    finally:
        hook.close()


def test_gives_up_after_max_attempts_and_logs_it(tmp_path):
    hook = Hook(statuses=(500,) * 10)
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    try:
        config = make_config(tmp_path, notify={"webhook_url": hook.url, "max_attempts": 3})
        notifier = notify.Notifier(config, backoff_seconds=0.01)
        notifier.daemon_event("start")
        deadline = time.monotonic() + 5
        while notifier.dropped == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        notifier.close(1)
        assert len(hook.requests) == 3 and notifier.dropped == 1 and notifier.sent == 0
        assert any("dropped after 3 attempt(s)" in line for line in lines)
    finally:
        logger.remove(sink)
        hook.close()


def test_a_client_error_is_not_retried(tmp_path):
    hook = Hook(statuses=(404,) * 5)
    try:
        config = make_config(tmp_path, notify={"webhook_url": hook.url, "max_attempts": 5})
        notifier = notify.Notifier(config, backoff_seconds=0.01)
        notifier.daemon_event("start")
        notifier.close(2)
        assert len(hook.requests) == 1 and notifier.dropped == 1
    finally:
        hook.close()


def test_an_error_code_in_a_chat_answer_counts_as_a_failure(tmp_path):
    hook = Hook(answer=b'{"errcode": 93000, "errmsg": "invalid webhook url"}')
    try:
        config = make_config(tmp_path, notify={"webhook_url": hook.url, "template": "wecom", "max_attempts": 2})
        notifier = notify.Notifier(config, backoff_seconds=0.01)
        notifier.daemon_event("start")
        notifier.close(2)
        assert len(hook.requests) == 2 and notifier.sent == 0 and notifier.dropped == 1
    finally:
        hook.close()


def test_callers_never_wait_for_a_slow_webhook_and_close_is_bounded(tmp_path, store):
    hook = Hook(delay=3.0)
    try:
        notifier = notify.Notifier(make_config(tmp_path, notify={"webhook_url": hook.url, "timeout_seconds": 10}))
        notifier.prime(store)
        finish(store, "a.wav")
        # The webhook answers after 3 s: a caller that waited for it would take that long.
        # Only the notifier's calls are timed (a loaded machine slows the store's writes).
        started = time.monotonic()
        notifier.daemon_event("start")
        notifier.poll(store)
        assert time.monotonic() - started < 2.5
        started = time.monotonic()
        notifier.close(0.5)
        assert time.monotonic() - started < 2.0
    finally:
        hook.close()


def test_a_full_queue_drops_instead_of_blocking(tmp_path):
    hook = Hook(delay=1.0)
    try:
        notifier = notify.Notifier(make_config(tmp_path, notify={"webhook_url": hook.url}), queue_size=2)
        results = [notifier.daemon_event("start", {"n": i}) for i in range(6)]
        assert results.count(False) >= 3 and notifier.dropped >= 3
        notifier.close(0.2)
    finally:
        hook.close()


def test_without_a_url_nothing_runs(tmp_path, store):
    before = set(threading.enumerate())
    notifier = notify.Notifier(make_config(tmp_path, notify={"webhook_url": None}))
    finish(store, "a.wav")
    assert notifier.poll(store) == 0 and notifier.daemon_event("start") is False
    notifier.close(1)
    assert not [t for t in set(threading.enumerate()) - before if t.name == "spkd-notify"]
