"""Webhook notifications: a POST when a job is done or failed and when the daemon
starts or stops (`notify.*` in the config; off while `notify.webhook_url` is null).

The supervisor owns one `Notifier`. A scheduler job calls `poll(store)` every ~2 s: it
reads the job_events it has not seen yet and queues one notification per done/failed
event (the first poll starts at the newest event, so history is never re-sent).
Posting happens on a background thread behind a bounded queue, with retries and
exponential backoff, so no caller ever waits for the network; `close(timeout)` gives
what is still queued (the "stop" message) a brief chance at shutdown.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from loguru import logger

from daemon import __version__
from daemon.config import Config

if TYPE_CHECKING:
    from daemon.store import NoticeRow

__all__ = ["POLL_SECONDS", "Notifier", "build_body", "job_payload", "post"]

JOB_EVENTS = ("done", "failed")
POLL_SECONDS = 2.0  # how often the supervisor's scheduler should call poll()
QUEUE_SIZE = 256
POLL_LIMIT = 200
BACKOFF_START_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 300.0
# Client errors that a retry cannot fix (a wrong URL or key); 408 and 429 are worth a retry.
_RETRYABLE_4XX = (408, 425, 429)


class _Permanent(Exception):
    """The endpoint refused the request for good: drop it without retrying."""


@dataclass(frozen=True)
class Notification:
    event: str
    label: str  # for the log: "job 12 done"
    body: bytes


# --- bodies ------------------------------------------------------------------------------

def _iso(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        return value.replace(microsecond=0).isoformat() + ("Z" if value.tzinfo is None else "")
    return None if value is None else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def job_payload(row: NoticeRow) -> dict[str, Any]:
    """The `job` object of a json body, from a store.events_after() row."""
    detail = row.detail or {}
    event = row.kind  # the event's kind (done, failed), not an error's
    failed = event == "failed"
    return {
        "id": row.job_id,
        "event_id": row.id,
        "task": row.task or "transcribe",  # or "enrol": a file of the voices folder
        "at": _iso(row.at),
        "source_name": row.source_name,
        "output_stem": row.output_stem,
        "outputs": row.outputs or [],
        "device": row.device,
        "audio_seconds": row.audio_seconds,
        "processing_seconds": row.processing_seconds,
        "rtf": row.rtf,
        "speakers": row.speakers,
        "attempts": row.attempts,
        # The event's own reason: the row may have moved on (a retry) since.
        "error_kind": (detail.get("kind") or row.error_kind) if failed else None,
        "error_message": (detail.get("message") or row.error_message) if failed else None,
        "reused_from": detail.get("reused_from"),
    }


def job_text(event: str, job: Mapping[str, Any], host: str) -> str:
    name = job.get("source_name")
    if event == "done":
        speakers = job.get("speakers")
        who = f", {speakers} speaker{'s' if speakers != 1 else ''}" if speakers is not None else ""
        return (f"spkd: done {name} ({_duration(job.get('audio_seconds'))} of audio in "
                f"{_duration(job.get('processing_seconds'))} on {job.get('device') or '?'}{who}) [{host}]")
    return f"spkd: failed {name}: {job.get('error_kind')}: {job.get('error_message')} [{host}]"


def daemon_text(event: str, info: Mapping[str, Any], host: str) -> str:
    what = "started" if event == "start" else "stopping"
    extra = ", ".join(f"{k} {v}" for k, v in info.items() if v is not None)
    return f"spkd {what} on {host}" + (f" ({extra})" if extra else "")


def build_body(template: str, *, event: str, text: str, host: str, at: str | None,
               job: Mapping[str, Any] | None = None, daemon: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The request body for one notification in the configured style."""
    if template == "wecom":
        return {"msgtype": "text", "text": {"content": text}}
    if template == "feishu":
        return {"msg_type": "text", "content": {"text": text}}
    if template == "slack":
        return {"text": text}
    body: dict[str, Any] = {"event": event, "host": host, "at": at, "text": text}
    if job is not None:
        body["job"] = dict(job)
    if daemon is not None:
        body["daemon"] = dict(daemon)
    return body


# --- posting -------------------------------------------------------------------------

def post(url: str, body: bytes, *, timeout: float) -> None:
    """One POST; raises on anything but a 2xx (and, for chat webhooks that answer 200
    with an error code in the body, on a non-zero code)."""
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json; charset=utf-8", "User-Agent": f"spkd/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = response.read(65536)
    except urllib.error.HTTPError as exc:
        if 400 <= exc.code < 500 and exc.code not in _RETRYABLE_4XX:
            raise _Permanent(f"HTTP {exc.code} {exc.reason}") from None
        raise RuntimeError(f"HTTP {exc.code} {exc.reason}") from None
    try:
        parsed = json.loads(answer)
    except ValueError:
        return
    if isinstance(parsed, dict):
        # WeCom answers {"errcode": 0, ...}, Feishu {"code": 0, ...}, even for errors with HTTP 200.
        code = parsed.get("errcode", parsed.get("code", 0))
        if code not in (0, None, "0"):
            raise RuntimeError(f"webhook answered code {code}: {parsed.get('errmsg') or parsed.get('msg')}")


class Notifier:
    def __init__(self, config: Config, *, host: str | None = None, queue_size: int = QUEUE_SIZE,
                 backoff_seconds: float = BACKOFF_START_SECONDS, start_after: int | None = None) -> None:
        """`start_after`: the last event id a previous notifier saw (a SIGHUP reload builds
        a new one from the new config without skipping or repeating events)."""
        self.config = config.notify
        self.host = host or socket.gethostname()
        self.backoff_seconds = backoff_seconds
        self.enabled = bool(self.config.webhook_url)
        self.sent = 0
        self.dropped = 0
        self._job_kinds = [k for k in JOB_EVENTS if k in self.config.events]
        self._last_event_id: int | None = start_after
        self._queue: queue.Queue[Notification | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._deadline: float | None = None  # set by close(): stop retrying past it
        self._closing = threading.Event()  # wakes a backoff sleep when close() is called

    @property
    def last_event_id(self) -> int | None:
        return self._last_event_id

    # --- producing (supervisor threads) ------------------------------------------------

    def prime(self, store: Any) -> None:
        """Start after the newest event already in the database (history is not re-sent)."""
        if self.enabled and self._job_kinds:
            self._last_event_id = store.last_event_id()

    def poll(self, store: Any) -> int:
        """Queue a notification for each new done/failed event; returns how many."""
        if not self.enabled or not self._job_kinds:
            return 0
        try:
            if self._last_event_id is None:
                self.prime(store)
                return 0
            rows = store.events_after(self._last_event_id, self._job_kinds, POLL_LIMIT, host=store.host)
        except Exception as exc:  # noqa: BLE001 - a busy database: next poll
            logger.warning("notify: reading job events failed: {}", exc)
            return 0
        queued = 0
        for row in rows:
            self._last_event_id = max(self._last_event_id, int(row.id))
            job = job_payload(row)
            event = row.kind
            text = job_text(event, job, self.host)
            body = build_body(self.config.template, event=event, text=text, host=self.host, at=job["at"], job=job)
            queued += self._enqueue(Notification(event=event, label=f"job {job['id']} {event}",
                                                 body=_encode(body)))
        return queued

    def daemon_event(self, event: str, info: Mapping[str, Any] | None = None) -> bool:
        """Queue a "start" or "stop" notification; False when it is not wanted or dropped."""
        if not self.enabled or event not in self.config.events:
            return False
        details = dict(info or {})
        at = _iso(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))
        body = build_body(self.config.template, event=event, text=daemon_text(event, details, self.host),
                          host=self.host, at=at, daemon=details)
        return bool(self._enqueue(Notification(event=event, label=f"daemon {event}", body=_encode(body))))

    def _enqueue(self, item: Notification) -> int:
        if self._deadline is not None:
            logger.debug("notify: {} after close(); not sent", item.label)
            return 0
        self._ensure_thread()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            logger.warning("notify: queue full ({} waiting); dropped {}", self._queue.qsize(), item.label)
            return 0
        return 1

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="spkd-notify", daemon=True)
                self._thread.start()

    # --- shutting down -------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Give queued notifications up to `timeout` seconds, then stop; never blocks longer."""
        with self._lock:
            self._deadline = time.monotonic() + timeout
            thread = self._thread
        self._closing.set()
        if thread is None:
            return
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # the thread sees the deadline instead
        thread.join(timeout + 0.5)
        left = self._queue.qsize()
        if thread.is_alive() or left:
            logger.warning("notify: {} notification(s) not sent at shutdown", max(left, 1))

    # --- sending (background thread) -----------------------------------------------------

    def _remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def _run(self) -> None:
        while True:
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                return
            try:
                item = self._queue.get(timeout=0.5 if remaining is None else min(0.5, remaining))
            except queue.Empty:
                continue
            if item is None:
                if self._queue.empty():
                    return
                continue  # close() was called with items still queued: send them first
            self._deliver(item)

    def _deliver(self, item: Notification) -> None:
        url = self.config.webhook_url
        assert url is not None
        attempts = self.config.max_attempts
        delay = self.backoff_seconds
        for attempt in range(1, attempts + 1):
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                break
            timeout = self.config.timeout_seconds if remaining is None else max(0.1, min(
                self.config.timeout_seconds, remaining))
            try:
                post(url, item.body, timeout=timeout)
            except _Permanent as exc:
                self.dropped += 1
                logger.warning("notify: {} refused by the webhook: {}; not retrying", item.label, exc)
                return
            except Exception as exc:  # noqa: BLE001 - network, timeout, 5xx: retry
                logger.debug("notify: {} attempt {}/{} failed: {}", item.label, attempt, attempts, exc)
                if attempt < attempts and self._sleep(delay):
                    delay = min(delay * 2, BACKOFF_MAX_SECONDS)
                    continue
                self.dropped += 1
                logger.warning("notify: {} dropped after {} attempt(s): {}", item.label, attempt, exc)
                return
            self.sent += 1
            logger.debug("notify: sent {}", item.label)
            return
        self.dropped += 1
        logger.warning("notify: {} not sent: shutting down", item.label)

    def _sleep(self, seconds: float) -> bool:
        """Back off; False as soon as close()'s deadline would come first."""
        end = time.monotonic() + seconds
        while True:
            if self._deadline is not None and self._deadline < end:
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            if self._closing.is_set():
                time.sleep(left)  # closing, but the deadline leaves room for this retry
            else:
                self._closing.wait(left)


def _encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")
