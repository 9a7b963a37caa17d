"""Summary tasks: asked for (`request`: `spkd summarize`, a dashboard button), run by a
worker that has no transcription waiting (`run`), and judged stale or not (`status`).

A summary never touches its job: the job is `done` before its summary is queued
(Store.complete queues it in the same transaction), and whatever the summary server
does (down, slow, garbage) ends in the `summaries` row alone, retried with backoff
(daemon/store/summaries.py) until `summary.max_attempts`, then `failed` with the
reason. The HTTP client (daemon.summaries.client) is imported only here, inside the
function that calls it, so that no process but a worker running a summary loads it.

The summary records the transcript version it was made from (Store.transcript_version,
daemon.jobs.corrections); a later correction makes it stale, and `spkd summarize`
makes it again.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from loguru import logger

from daemon.errors import (
    JobRefusedError,
    NoSuchJobError,
    SpkdError,
    SummaryRefusedError,
    UnexpectedError,
    as_spkd_error,
)
from daemon.jobs import outputs, results
from daemon.summaries.mapreduce import Chat, make_summary

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Store, SummaryRow

__all__ = ["SummaryStatus", "request", "run", "run_one", "status", "transcript_version"]


def transcript_version(store: "Store", job_id: int) -> int:
    """The version of the job's transcript now (1: as the engine made it)."""
    return store.transcript_version(job_id)


@dataclass(frozen=True)
class SummaryStatus:
    """A job's summary row with what makes it stale: a newer transcript than the one
    its result was made from."""

    row: "SummaryRow"
    current_version: int

    @property
    def stale(self) -> bool:
        return self.row.transcript_version is not None and self.row.transcript_version < self.current_version


def status(store: "Store", job_id: int) -> SummaryStatus | None:
    """Job `job_id`'s summary and whether it is stale; None when it has none."""
    row = store.summary(job_id)
    if row is None:
        return None
    return SummaryStatus(row=row, current_version=transcript_version(store, job_id))


def request(config: "Config", store: "Store", job_id: int) -> tuple["SummaryRow", str | None]:
    """(Re)queue job `job_id`'s summary: (the row now, the state it was in before; None:
    it had none). A summary already queued or running is left as it is. JobRefusedError
    when summaries are off or the job is no done transcription."""
    if not config.summary.enabled:
        raise JobRefusedError("summaries are off: set summary.endpoint (and summary.model) in the config")
    asked = store.request_summary(job_id, max_attempts=config.summary.max_attempts, by="request")
    if asked is not None:
        return asked
    job = store.job(job_id)
    if job is None:
        raise NoSuchJobError(f"job {job_id}: no such job")
    what = "a voice enrolment" if job.task != "transcribe" else job.state
    raise JobRefusedError(f"job {job_id}: only a done transcription has a summary ({job.source_name} is {what})")


class _Lease:
    """Renews a running summary's lease on a thread while the server is asked (minutes,
    for a long meeting on a CPU); `lost` is set once the store says it is no longer ours."""

    def __init__(self, store: "Store", job_id: int, *, pid: int, lease_seconds: float, every_seconds: float) -> None:
        self.store, self.job_id, self.pid = store, job_id, pid
        self.lease_seconds, self.every_seconds = lease_seconds, every_seconds
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spkd-summary-lease", daemon=True)

    def __enter__(self) -> "_Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.every_seconds):
            try:
                if not self.store.summary_heartbeat(self.job_id, pid=self.pid, lease_seconds=self.lease_seconds):
                    logger.warning("job {}: the summary's lease was taken back", self.job_id)
                    self.lost.set()
                    return
            except Exception as exc:  # noqa: BLE001 - a busy database must not stop the summary
                logger.warning("job {}: summary lease renewal failed: {}", self.job_id, exc)


def _now(what: str, call: Callable[[], Any]) -> Any:
    return call()


def _http_chat(config: "Config") -> Chat:
    from daemon.summaries.client import chat  # only here: no other process loads the HTTP client

    return lambda messages: chat(config.summary, messages)


def run(config: "Config", store: "Store", row: "SummaryRow", *, pid: int, chat: Chat | None = None,
        write: results.Write | None = None) -> str:
    """Make the claimed summary `row` and publish it (daemon.jobs.results.record_summary),
    or record why not. Returns "done", "retry", "failed" or "lost" (the lease was taken
    back: nothing recorded). `write` runs the store writes (the worker's waits out a busy
    database)."""
    write = write or _now
    job_id = row.job_id
    lease = _Lease(store, job_id, pid=pid, lease_seconds=config.jobs.lease_seconds,
                   every_seconds=config.jobs.heartbeat_seconds)
    error: SpkdError | None = None
    job = transcript = None
    with lease:
        try:
            job = store.job(job_id)
            version = transcript_version(store, job_id)  # before the transcript: never newer than what is read
            transcript = outputs.load_transcript(config, job_id)
            if job is None or transcript is None:
                raise SummaryRefusedError(f"job {job_id}'s stored transcript is gone")
            logger.info("job {}: summary started ({} segments, attempt {}/{})", job_id, len(transcript.segments),
                        row.attempts, row.max_attempts)
            summary = make_summary(config.summary, transcript, chat or _http_chat(config))
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the summary, never the job
            error = as_spkd_error(exc)
            if isinstance(error, UnexpectedError):
                logger.opt(exception=exc).debug("job {} summary traceback", job_id)
    if lease.lost.is_set():
        return "lost"
    if error is not None:
        return _failed(config, store, job_id, error, pid=pid, write=write)
    assert job is not None and transcript is not None
    done = results.record_summary(config, store, job, summary, pid=pid, transcript_version=version,
                                  model=str(config.summary.model), write=write)
    if not done:
        return "lost"
    logger.info("job {} summary done: {} ({} part(s), {})", job_id, job.source_name, summary.get("parts"),
                "points" if summary.get("format") == "json" else "the model's text, not the JSON asked for")
    return "done"


def _failed(config: "Config", store: "Store", job_id: int, error: SpkdError, *, pid: int,
            write: results.Write) -> str:
    outcome = write(f"recording job {job_id}'s summary failed", lambda: store.fail_summary(
        job_id, pid=pid, kind=error.kind, message=error.message[:4000], permanent=error.permanent,
        retry_backoff_seconds=config.summary.retry_backoff_seconds))
    if outcome is None:
        return "lost"
    if outcome.state == "failed":
        logger.error("job {} summary failed after {} attempt(s) ({}: {}); the transcript is done regardless", job_id,
                     outcome.attempts, error.kind, error.message)
        return "failed"
    logger.warning("job {} summary will be tried again at {} ({}: {}; attempt {}/{})", job_id,
                   outcome.next_attempt_at, error.kind, error.message, outcome.attempts, outcome.max_attempts)
    return "retry"


def run_one(config: "Config", store: "Store", *, pid: int | None = None, chat: Chat | None = None,
            write: results.Write | None = None) -> str | None:
    """Claim one due summary and run it (`run`'s outcome); None when none was due or
    summaries are off. What a worker does when no transcription waits."""
    if not config.summary.enabled:
        return None
    holder = os.getpid() if pid is None else pid
    row = store.claim_summary(pid=holder, lease_seconds=config.jobs.lease_seconds)
    if row is None:
        return None
    return run(config, store, row, pid=holder, chat=chat, write=write)
