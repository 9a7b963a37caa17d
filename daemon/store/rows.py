"""What the store returns: one frozen dataclass per kind of row, and the store's clock.

Callers read attributes (`job.state`), never keys: a misspelt column is then an
AttributeError at the line that misspells it, not a None far away. Where a mapping is
really wanted (JSON output, templates), `dataclasses.asdict` gives one.
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass, fields
from typing import Any, Mapping, TypeVar

__all__ = ["DeviceFigures", "EventRow", "Job", "JobFilter", "MetricFigures", "NoticeRow", "Outcome", "SampleRow",
           "SearchBackfill", "SegmentMatch", "SummaryRow", "TranscriptVersion", "VoiceSummary", "WorkerRow", "hostname",
           "utcnow"]


def utcnow() -> dt.datetime:
    """Naive UTC, the one time representation in the database."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def hostname() -> str:
    return socket.gethostname()


R = TypeVar("R")


def _from_mapping(cls: type[R], row: Mapping[str, Any]) -> R:
    """`cls` from a result row holding (at least) its fields."""
    return cls(**{f.name: row[f.name] for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Job:
    """One row of `jobs`, every column (daemon/store/schema.py).

    One type for every read of the table, the claim's included: the claim returns the
    whole row anyway (RETURNING *), and a narrower view only hid columns that other
    readers then fetched again as dicts."""

    id: int
    # Path of the dropped file relative to the inbox, e.g. "team/standup.m4a".
    source_name: str
    spool_path: str
    # Output path relative to the outbox without extension, e.g. "team/standup".
    output_stem: str
    sha256: str | None
    size_bytes: int | None
    state: str
    attempts: int
    max_attempts: int
    not_before: dt.datetime | None
    priority: int
    # Never None: a row stored without options reads as {}.
    options: dict[str, Any]
    host: str | None
    slot: int | None
    pid: int | None
    device: str | None
    lease_expires_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    audio_seconds: float | None
    processing_seconds: float | None
    rtf: float | None
    speakers: int | None
    outputs: list[str] | None
    error_kind: str | None
    error_message: str | None
    reused_from: int | None
    dedup_key: str | None
    # While running: the stage, the fraction done, the seconds left, and when the worker said so.
    stage: str | None
    progress: float | None
    eta_seconds: float | None
    progress_at: dt.datetime | None
    archive_name: str | None
    task: str  # "transcribe" or "enrol" (daemon.store.schema.JOB_TASKS)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Job":
        return cls(**{f.name: row[f.name] for f in fields(cls) if f.name != "options"},
                   options=dict(row["options"] or {}))


@dataclass(frozen=True)
class EventRow:
    """One row of `job_events`."""

    id: int
    job_id: int
    at: dt.datetime
    kind: str
    detail: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "EventRow":
        return _from_mapping(cls, row)


@dataclass(frozen=True)
class TranscriptVersion:
    """One version of a done job's transcript (`transcript_versions`; daemon.jobs.corrections).
    Version 1, the transcript as the engine made it, has no row: its `origin` is "engine",
    its `created_at` the job's finishing time and its `overlay` empty."""

    job_id: int
    version: int
    created_at: dt.datetime | None
    origin: str  # cli, web; "engine" for version 1
    change: str  # what changed, in words
    # segment index (as text) -> the correction in effect: {"text"?, "speaker"?, "was": {…}}
    overlay: dict[str, Any]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "TranscriptVersion":
        return cls(job_id=int(row["job_id"]), version=int(row["version"]), created_at=row["created_at"],
                   origin=row["origin"], change=row["change"], overlay=dict(row["overlay"] or {}))


@dataclass(frozen=True)
class NoticeRow:
    """An event with what a notification says about its job (Store.events_after)."""

    id: int
    job_id: int
    at: dt.datetime
    kind: str
    detail: dict[str, Any] | None
    source_name: str
    output_stem: str
    host: str | None
    device: str | None
    state: str
    attempts: int
    audio_seconds: float | None
    processing_seconds: float | None
    rtf: float | None
    speakers: int | None
    outputs: list[str] | None
    error_kind: str | None
    error_message: str | None
    task: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "NoticeRow":
        return _from_mapping(cls, row)


@dataclass(frozen=True)
class SummaryRow:
    """One row of `summaries`: a done transcription's summary task and its last result."""

    job_id: int
    state: str  # daemon.store.schema.SUMMARY_STATES
    attempts: int
    max_attempts: int
    next_attempt_at: dt.datetime | None
    host: str | None
    pid: int | None
    lease_expires_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    error_kind: str | None
    error_message: str | None
    # The transcript version `result` was made from (None: no result yet).
    transcript_version: int | None
    model: str | None
    # The summary object of the last success (daemon.summaries.answer), kept while a renewal runs.
    result: dict[str, Any] | None
    requested_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "SummaryRow":
        return _from_mapping(cls, row)


@dataclass(frozen=True)
class WorkerRow:
    """One row of `workers`: a worker slot of one host."""

    id: int
    host: str
    slot: int
    pid: int | None
    device: str | None
    # The device the slot was configured for, when it fell back to `device`.
    fallback_from: str | None
    state: str
    started_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    jobs_done: int
    current_job_id: int | None
    rss_mb: float | None
    last_error: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "WorkerRow":
        return _from_mapping(cls, row)


@dataclass(frozen=True)
class SegmentMatch:
    """A segment that a search found, with its job's name and when spkd received it."""

    id: int
    job_id: int
    idx: int
    start_seconds: float
    end_seconds: float
    speaker: str
    text: str
    source_name: str
    received_at: dt.datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "SegmentMatch":
        return _from_mapping(cls, row)


@dataclass(frozen=True)
class SearchBackfill:
    """The index of unigrams and bigrams (short searches) while migration 0010's
    backfill has not finished: `done` of `total` segments indexed (PostgreSQL: the
    index build's own count, 0 before it starts)."""

    done: int
    total: int

    def describe(self) -> str:
        share = self.done / self.total if self.total else 0.0
        return f"{self.done:,} of {self.total:,} segments, {share:.0%}"


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a list shows: a state, a window of `created_at` (naive UTC, `until`
    exclusive) and a piece of the file name (literal, case-insensitive for ASCII)."""

    state: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    name_contains: str | None = None


@dataclass(frozen=True)
class DeviceFigures:
    """What the done jobs (not reuses) of one device add up to, for /metrics."""

    device: str
    jobs: int
    audio_seconds: float
    processing_seconds: float
    # upper bound -> jobs at or below it (cumulative, as Prometheus histograms count)
    processing_buckets: dict[float, int]
    rtf_buckets: dict[float, int]
    rtf_sum: float


@dataclass(frozen=True)
class MetricFigures:
    jobs_by_state: dict[str, int]
    devices: list[DeviceFigures]
    oldest_queued_at: dt.datetime | None
    last_done_at: dt.datetime | None
    workers: list[WorkerRow]


@dataclass(frozen=True)
class Outcome:
    """What became of a job the store took back or failed: the caller moves files accordingly."""

    job: Job
    state: str  # "queued" or "failed"


@dataclass(frozen=True)
class SampleRow:
    """One enrolled embedding of a voice (daemon.voices compares only those of its model)."""

    id: int
    voice_id: int
    name: str
    embedding: tuple[float, ...]
    model_name: str
    model_revision: str | None
    dimension: int
    sha256: str | None
    speech_seconds: float
    origin: str
    source: str | None
    job_id: int | None
    created_at: dt.datetime


@dataclass(frozen=True)
class VoiceSummary:
    id: int
    name: str
    created_at: dt.datetime
    samples: int
    speech_seconds: float
    models: tuple[str, ...]  # "name@revision/dimension" of its samples
    origins: tuple[str, ...]
