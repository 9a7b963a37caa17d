"""The job store: every SQL statement of spkd lives here.

Like procrastinate, the claim, the heartbeat and stalled-job recovery sit side by
side so that their invariants can be read in one place:

* A job is `running` only while a live worker holds its lease: `pid` + `host`
  name the holder, `lease_expires_at` is renewed by heartbeats.
* A claim is one `UPDATE … WHERE id = (SELECT … LIMIT 1) RETURNING …` inside
  `BEGIN IMMEDIATE` (SQLite) or with `FOR UPDATE SKIP LOCKED` (PostgreSQL), so
  two workers can never take the same job.
* Completion and failure are accepted only from the current holder; a worker
  whose job was taken back (it hung, its lease expired) cannot overwrite the
  result of the job's next attempt.
* Every state change appends a row to `job_events` in the same transaction.

Connection settings and migrations live in daemon/store/db.py; the read-only console
for the user's own SQL in daemon/store/sqlconsole.py.
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from sqlalchemy import (
    Connection,
    DateTime,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)

from daemon.store.db import make_engine
from daemon.errors import LeaseExpiredError, WorkerLostError
from daemon.store.schema import (
    FINISHED_STATES,
    JOB_STATES,
    SEGMENT_ID_STRIDE,
    job_events,
    jobs,
    segments,
    voice_samples,
    voices,
    workers,
)
from daemon.store.search import LIKE_ESCAPE, SearchQuery, fold, fts5_string
from daemon.store.search import speaker_key as key_of_speaker
from daemon.transcript import Transcript, model_identity

if TYPE_CHECKING:
    from daemon.progress import Progress

__all__ = ["DeviceFigures", "Job", "JobFilter", "MetricFigures", "Outcome", "SampleRow", "Store", "VoiceSummary",
           "hostname", "utcnow"]

# A job that leaves `running` keeps no stage, fraction or estimate.
_NO_PROGRESS: dict[str, Any] = {"stage": None, "progress": None, "eta_seconds": None, "progress_at": None}


def utcnow() -> dt.datetime:
    """Naive UTC, the one time representation in the database."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def hostname() -> str:
    return socket.gethostname()


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Job:
    id: int
    source_name: str
    spool_path: str
    output_stem: str
    sha256: str | None
    size_bytes: int | None
    state: str
    attempts: int
    max_attempts: int
    priority: int
    options: dict[str, Any]
    audio_seconds: float | None
    host: str | None
    slot: int | None
    pid: int | None
    device: str | None
    error_kind: str | None
    error_message: str | None
    dedup_key: str | None = None
    started_at: dt.datetime | None = None
    lease_expires_at: dt.datetime | None = None
    task: str = "transcribe"  # or "enrol" (daemon.store.schema.JOB_TASKS)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Job":
        return cls(**{name: row[name] for name in cls.__dataclass_fields__ if name != "options"},
                   options=dict(row["options"] or {}))


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
    workers: list[dict[str, Any]]


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


class Store:
    def __init__(self, url: str, *, host: str | None = None) -> None:
        self.url = url
        self.host = host or hostname()
        self.engine = make_engine(url)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._claim: Any = None
        self._trigram_cjk: bool | None = None

    def close(self) -> None:
        self.engine.dispose()

    def _read(self) -> Connection:
        """A connection for reading: a plain (deferred) BEGIN, so readers never queue
        behind writers for the write lock."""
        return self.engine.connect().execution_options(spkd_read=True)

    # --- events -----------------------------------------------------------------------

    def _event(self, conn: Connection, job_id: int, kind: str, now: dt.datetime, /, **detail: Any) -> None:
        conn.execute(insert(job_events).values(job_id=job_id, at=now, kind=kind,
                                               detail={k: v for k, v in detail.items() if v is not None}))

    # --- enqueue (watcher) ------------------------------------------------------------

    def _insert_job(self, conn: Connection, now: dt.datetime, *, source_name: str, spool_path: str,
                    output_stem: str, sha256: str | None, size_bytes: int | None,
                    options: Mapping[str, Any] | None, **values: Any) -> int:
        """Insert one jobs row (the columns every new job has, plus `values`) and return its id."""
        return int(conn.execute(
            insert(jobs).values(source_name=source_name, spool_path=spool_path, output_stem=output_stem,
                                sha256=sha256, size_bytes=size_bytes, options=dict(options or {}), created_at=now,
                                attempts=0, **values).returning(jobs.c.id)
        ).scalar_one())

    def enqueue(self, *, source_name: str, spool_path: str, output_stem: str, sha256: str | None,
                size_bytes: int | None, options: Mapping[str, Any] | None = None, priority: int = 0,
                max_attempts: int = 3, audio_seconds: float | None = None, dedup_key: str | None = None,
                task: str = "transcribe") -> int:
        now = utcnow()
        with self.engine.begin() as conn:
            job_id = self._insert_job(conn, now, source_name=source_name, spool_path=spool_path,
                                      output_stem=output_stem, sha256=sha256, size_bytes=size_bytes, options=options,
                                      state="queued", max_attempts=max_attempts, priority=priority,
                                      audio_seconds=audio_seconds, dedup_key=dedup_key, task=task)
            self._event(conn, job_id, "queued", now, source=source_name, sha256=sha256, size_bytes=size_bytes,
                        host=self.host, task=None if task == "transcribe" else task)
        return job_id

    def add_reused(self, *, source_name: str, spool_path: str, output_stem: str, sha256: str | None,
                   size_bytes: int | None, options: Mapping[str, Any], dedup_key: str | None, twin: "Job",
                   outputs: Sequence[str], audio_seconds: float | None, speakers: int | None,
                   transcript: Transcript | None = None) -> int:
        """Record a duplicate of a finished job: `done` at once, its outputs rendered from
        the earlier job's transcript, whose `segments` it gets as its own rows."""
        now = utcnow()
        with self.engine.begin() as conn:
            job_id = self._insert_job(conn, now, source_name=source_name, spool_path=spool_path,
                                      output_stem=output_stem, sha256=sha256, size_bytes=size_bytes, options=options,
                                      state="done", max_attempts=0, priority=0, started_at=now, finished_at=now,
                                      host=self.host, dedup_key=dedup_key, reused_from=twin.id, outputs=list(outputs),
                                      audio_seconds=audio_seconds, speakers=speakers, processing_seconds=0.0, rtf=0.0,
                                      device=twin.device)
            self._event(conn, job_id, "queued", now, source=source_name, sha256=sha256, size_bytes=size_bytes,
                        host=self.host)
            self._event(conn, job_id, "done", now, reused_from=twin.id)
            self._write_segments(conn, job_id, transcript)
        return job_id

    def done_twin(self, dedup_key: str | None) -> "Job | None":
        """The newest `done` job that transcribed the same content with the same
        transcript options (never a reuse itself, so `reused_from` names the original)."""
        if dedup_key is None:
            return None
        with self._read() as conn:
            row = conn.execute(select(*jobs.c).where(jobs.c.dedup_key == dedup_key, jobs.c.state == "done",
                                                     jobs.c.reused_from.is_(None))
                               .order_by(jobs.c.id.desc()).limit(1)).mappings().first()
        return Job.from_row(row) if row else None

    def add_failed(self, *, source_name: str, spool_path: str, output_stem: str, sha256: str | None,
                   size_bytes: int | None, kind: str, message: str,
                   options: Mapping[str, Any] | None = None) -> int:
        """Record a file that failed before it could be queued (no audio, bad sidecar, …)."""
        now = utcnow()
        with self.engine.begin() as conn:
            job_id = self._insert_job(conn, now, source_name=source_name, spool_path=spool_path,
                                      output_stem=output_stem, sha256=sha256, size_bytes=size_bytes, options=options,
                                      state="failed", max_attempts=0, priority=0, finished_at=now, error_kind=kind,
                                      error_message=message, host=self.host)
            self._event(conn, job_id, "failed", now, kind=kind, message=message, source=source_name)
        return job_id

    def jobs_by_spool_path(self, paths: Iterable[str]) -> dict[str, Job]:
        # A path that is not valid UTF-8 (a name spooled by an older spkd) has no row: it cannot be stored.
        wanted = [p for p in paths if _storable(p)]
        found: dict[str, Job] = {}
        with self._read() as conn:
            for start in range(0, len(wanted), 500):
                rows = conn.execute(select(*jobs.c).where(jobs.c.spool_path.in_(wanted[start:start + 500])))
                found.update({row["spool_path"]: Job.from_row(row) for row in rows.mappings()})
        return found

    def output_stems_in_use(self, prefix: str) -> set[str]:
        """Output stems of jobs starting with `prefix`, so a new job never takes another's names."""
        with self._read() as conn:
            rows = conn.execute(select(jobs.c.output_stem).where(jobs.c.output_stem.startswith(prefix,
                                                                                               autoescape=True)))
            return set(rows.scalars())

    # --- claim, heartbeat, complete, fail (worker) -------------------------------------

    def _claim_statement(self) -> Any:
        """The claim, built once per store: constructing it costs more Python time (about
        1 ms) than SQLite takes to run it, and the write lock is held meanwhile."""
        if self._claim is not None:
            return self._claim
        now = bindparam("now", type_=DateTime)
        twin = jobs.alias("twin")
        # A duplicate waits while its twin runs, then reuses the twin's result.
        twin_running = exists(select(twin.c.id).where(twin.c.dedup_key == jobs.c.dedup_key,
                                                      twin.c.state == "running"))
        candidate = (
            select(jobs.c.id)
            .where(jobs.c.state == "queued", or_(jobs.c.not_before.is_(None), jobs.c.not_before <= now),
                   ~twin_running)
            .order_by(jobs.c.priority.desc(), jobs.c.id)
            .limit(1)
        )
        if self.is_postgres:
            candidate = candidate.with_for_update(skip_locked=True)
        self._claim = (
            update(jobs)
            .where(jobs.c.id == candidate.scalar_subquery(), jobs.c.state == "queued")
            .values(state="running", attempts=jobs.c.attempts + 1, host=bindparam("c_host"),
                    slot=bindparam("c_slot"), pid=bindparam("c_pid"), device=bindparam("c_device"),
                    started_at=now, heartbeat_at=now, lease_expires_at=bindparam("c_lease", type_=DateTime),
                    finished_at=None, **_NO_PROGRESS)
            .returning(*jobs.c)
        )
        return self._claim

    def claim(self, *, slot: int, pid: int, device: str, lease_seconds: float) -> Job | None:
        now = utcnow()
        params = {"now": now, "c_host": self.host, "c_slot": slot, "c_pid": pid, "c_device": device,
                  "c_lease": now + dt.timedelta(seconds=lease_seconds)}
        with self.engine.begin() as conn:
            row = conn.execute(self._claim_statement(), params).mappings().first()
            if row is None:
                return None
            job = Job.from_row(row)
            self._event(conn, job.id, "claimed", now, host=self.host, slot=slot, pid=pid, device=device,
                        attempt=job.attempts)
        return job

    def _held(self, job_id: int, pid: int) -> Any:
        return and_(jobs.c.id == job_id, jobs.c.state == "running", jobs.c.pid == pid, jobs.c.host == self.host)

    def heartbeat(self, job_id: int, *, pid: int, lease_seconds: float, progress: "Progress | None" = None) -> bool:
        """Renew the lease (and record how far the job is); False when the job is no
        longer this worker's."""
        now = utcnow()
        values: dict[str, Any] = {"heartbeat_at": now, "lease_expires_at": now + dt.timedelta(seconds=lease_seconds)}
        if progress is not None:
            values.update(stage=progress.stage, progress=progress.fraction, eta_seconds=progress.eta_seconds,
                          progress_at=now)
        with self.engine.begin() as conn:
            result = conn.execute(update(jobs).where(self._held(job_id, pid)).values(**values))
        return result.rowcount == 1

    def recent_rtf(self, *, slot: int, limit: int = 5) -> float | None:
        """The median real-time factor of this host's slot over its last `limit`
        transcriptions (reuses excluded), or None before its first."""
        with self._read() as conn:
            values = sorted(conn.execute(
                select(jobs.c.rtf).where(jobs.c.state == "done", jobs.c.host == self.host, jobs.c.slot == slot,
                                         jobs.c.reused_from.is_(None), jobs.c.rtf > 0)
                .order_by(jobs.c.finished_at.desc()).limit(limit)).scalars())
        if not values:
            return None
        middle = len(values) // 2
        return float(values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2)

    def complete(self, job_id: int, *, pid: int, audio_seconds: float, processing_seconds: float,
                 speakers: int, outputs: Sequence[str], device: str, reused_from: int | None = None,
                 transcript: Transcript | None = None) -> bool:
        """Mark a held job done; its `transcript`'s segments become its rows in the same
        transaction, so a done job always has them."""
        now = utcnow()
        rtf = processing_seconds / audio_seconds if audio_seconds > 0 else None
        with self.engine.begin() as conn:
            result = conn.execute(update(jobs).where(self._held(job_id, pid)).values(
                state="done", finished_at=now, audio_seconds=audio_seconds, processing_seconds=processing_seconds,
                rtf=rtf, speakers=speakers, outputs=list(outputs), device=device, lease_expires_at=None,
                error_kind=None, error_message=None, reused_from=reused_from, **_NO_PROGRESS))
            if result.rowcount != 1:
                return False
            self._event(conn, job_id, "done", now, device=device, audio_seconds=round(audio_seconds, 3),
                        processing_seconds=round(processing_seconds, 3), speakers=speakers, reused_from=reused_from)
            self._write_segments(conn, job_id, transcript)
        return True

    def fail(self, job_id: int, *, pid: int | None, kind: str, message: str, permanent: bool,
             retry_backoff_seconds: float) -> Outcome | None:
        """A job's attempt failed. Permanent errors, and transient ones once attempts are
        spent, end `failed`; others go back to `queued` after an exponential backoff.
        `pid` None: the supervisor speaking for a worker that is gone."""
        now = utcnow()
        with self.engine.begin() as conn:
            where = self._held(job_id, pid) if pid is not None else and_(jobs.c.id == job_id,
                                                                          jobs.c.state == "running")
            row = conn.execute(select(*jobs.c).where(where)).mappings().first()
            if row is None:
                return None
            return self._fail_row(conn, row, now, kind=kind, message=message, permanent=permanent,
                                  retry_backoff_seconds=retry_backoff_seconds)

    def _fail_row(self, conn: Connection, row: Mapping[str, Any], now: dt.datetime, *, kind: str, message: str,
                  permanent: bool, retry_backoff_seconds: float) -> Outcome:
        spent = row["attempts"] >= row["max_attempts"]
        if permanent or spent:
            values: dict[str, Any] = dict(state="failed", finished_at=now, error_kind=kind,
                                          error_message=message, lease_expires_at=None, **_NO_PROGRESS)
            event_kind = "failed"
        else:
            backoff = retry_backoff_seconds * (2 ** max(0, row["attempts"] - 1))
            values = dict(state="queued", not_before=now + dt.timedelta(seconds=backoff), error_kind=kind,
                          error_message=message, lease_expires_at=None, pid=None, **_NO_PROGRESS)
            event_kind = "retry"
        conn.execute(update(jobs).where(jobs.c.id == row["id"]).values(**values))
        self._event(conn, row["id"], event_kind, now, kind=kind, message=message, attempt=row["attempts"],
                    permanent=permanent or None)
        new_row = {**row, **values}
        return Outcome(job=Job.from_row(new_row), state=values["state"])

    # --- taking jobs back (supervisor) -----------------------------------------------

    def release(self, *, pid: int, reason: str, kind: str = WorkerLostError.kind, counts_as_attempt: bool = True,
                retry_backoff_seconds: float = 0.0, **detail: Any) -> list[Outcome]:
        """Put back the jobs a worker of this host held when it died or was stopped.

        A crash counts as an attempt, so a file that kills every worker that opens
        it ends `failed` instead of looping; a clean shutdown does not count.
        """
        now = utcnow()
        outcomes: list[Outcome] = []
        with self.engine.begin() as conn:
            rows = conn.execute(select(*jobs.c).where(jobs.c.state == "running", jobs.c.pid == pid,
                                                      jobs.c.host == self.host)).mappings().all()
            for row in rows:
                outcomes.append(self._take_back(conn, row, now, reason=reason, kind=kind,
                                                counts_as_attempt=counts_as_attempt,
                                                retry_backoff_seconds=retry_backoff_seconds, **detail))
        return outcomes

    def _take_back(self, conn: Connection, row: Mapping[str, Any], now: dt.datetime, *, reason: str, kind: str,
                   counts_as_attempt: bool, retry_backoff_seconds: float, **detail: Any) -> Outcome:
        if counts_as_attempt and row["attempts"] >= row["max_attempts"]:
            return self._fail_row(conn, row, now, kind=kind,
                                  message=f"{reason} (attempt {row['attempts']} of {row['max_attempts']})",
                                  permanent=True, retry_backoff_seconds=0)
        attempts = row["attempts"] if counts_as_attempt else max(0, row["attempts"] - 1)
        not_before = now + dt.timedelta(seconds=retry_backoff_seconds) if retry_backoff_seconds else None
        values = dict(state="queued", pid=None, lease_expires_at=None, attempts=attempts, not_before=not_before,
                      **_NO_PROGRESS)
        conn.execute(update(jobs).where(jobs.c.id == row["id"]).values(**values))
        self._event(conn, row["id"], "requeued", now, reason=reason, kind=kind, attempt=row["attempts"],
                    host=row["host"], pid=row["pid"], **detail)
        return Outcome(job=Job.from_row({**row, **values}), state="queued")

    def running_jobs(self, *, host: str | None = None) -> list[Job]:
        with self._read() as conn:
            query = select(*jobs.c).where(jobs.c.state == "running")
            if host is not None:
                query = query.where(jobs.c.host == host)
            return [Job.from_row(r) for r in conn.execute(query).mappings()]

    def recover(self, *, is_alive: Callable[[int], bool], reason: str) -> list[Outcome]:
        """At start: jobs of this host left `running` by processes that no longer exist
        go back to the queue (a previous supervisor died with them)."""
        now = utcnow()
        outcomes: list[Outcome] = []
        with self.engine.begin() as conn:
            rows = conn.execute(select(*jobs.c).where(jobs.c.state == "running",
                                                      jobs.c.host == self.host)).mappings().all()
            for row in rows:
                if row["pid"] is not None and is_alive(row["pid"]):
                    continue
                outcomes.append(self._take_back(conn, row, now, reason=reason, kind=WorkerLostError.kind,
                                                counts_as_attempt=True, retry_backoff_seconds=0))
        return outcomes

    def expired_leases(self, *, now: dt.datetime | None = None) -> list[Job]:
        now = now or utcnow()
        with self._read() as conn:
            rows = conn.execute(select(*jobs.c).where(jobs.c.state == "running",
                                                      jobs.c.lease_expires_at < now)).mappings().all()
        return [Job.from_row(r) for r in rows]

    def reap(self, job_id: int, *, reason: str) -> Outcome | None:
        """Take back one running job whose lease expired (the caller made sure its holder is gone)."""
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(select(*jobs.c).where(jobs.c.id == job_id, jobs.c.state == "running",
                                                     jobs.c.lease_expires_at < now)).mappings().first()
            if row is None:
                return None
            return self._take_back(conn, row, now, reason=reason, kind=LeaseExpiredError.kind, counts_as_attempt=True,
                                   retry_backoff_seconds=0)

    def retry(self, *, job_ids: Iterable[int] = (), all_failed: bool = False) -> list[int]:
        """Requeue failed (or cancelled) jobs with fresh attempts; returns the ids requeued."""
        now = utcnow()
        ids = list(job_ids)
        with self.engine.begin() as conn:
            query = select(jobs.c.id).where(jobs.c.state.in_(("failed", "cancelled")))
            if not all_failed:
                query = query.where(jobs.c.id.in_(ids))
            chosen = list(conn.execute(query).scalars())
            for job_id in chosen:
                conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                    state="queued", attempts=0, not_before=None, finished_at=None, pid=None,
                    max_attempts=func.max(jobs.c.max_attempts, 1) if not self.is_postgres
                    else func.greatest(jobs.c.max_attempts, 1)))
                self._event(conn, job_id, "retry_requested", now)
        return chosen

    def set_archive_name(self, job_id: int, archive_name: str) -> None:
        """Where the job's source now lies under paths.archive (relative, POSIX)."""
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(archive_name=archive_name))

    def set_spool_path(self, job_id: int, spool_path: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(spool_path=spool_path))

    def add_event(self, job_id: int, kind: str, **detail: Any) -> None:
        with self.engine.begin() as conn:
            self._event(conn, job_id, kind, utcnow(), **detail)

    # --- workers table ---------------------------------------------------------------

    def worker_update(self, slot: int, **values: Any) -> None:
        """Upsert this host's row for `slot`."""
        values = {**values, "heartbeat_at": values.get("heartbeat_at", utcnow())}
        with self.engine.begin() as conn:
            result = conn.execute(update(workers).where(workers.c.host == self.host, workers.c.slot == slot)
                                  .values(**values))
            if result.rowcount == 0:
                conn.execute(insert(workers).values(host=self.host, slot=slot,
                                                    **{"state": "booting", "jobs_done": 0, **values}))

    def worker_job_done(self, slot: int, *, rss_mb: float | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(workers).where(workers.c.host == self.host, workers.c.slot == slot).values(
                jobs_done=workers.c.jobs_done + 1, rss_mb=rss_mb, current_job_id=None, state="ready",
                heartbeat_at=utcnow()))

    def worker_rows(self, *, host: str | None = None) -> list[dict[str, Any]]:
        with self._read() as conn:
            query = select(*workers.c).order_by(workers.c.host, workers.c.slot)
            if host is not None:
                query = query.where(workers.c.host == host)
            return [dict(r) for r in conn.execute(query).mappings()]

    def forget_workers_above(self, slot_count: int) -> None:
        """After the pool shrank (SIGHUP), slots that no longer exist are shown as stopped."""
        with self.engine.begin() as conn:
            conn.execute(update(workers).where(workers.c.host == self.host, workers.c.slot >= slot_count)
                         .values(state="stopped", pid=None, current_job_id=None))

    # --- reading -----------------------------------------------------------------------

    def job(self, job_id: int) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(select(*jobs.c).where(jobs.c.id == job_id)).mappings().first()
            return dict(row) if row else None

    def jobs(self, *, limit: int = 20, state: str | None = None) -> list[dict[str, Any]]:
        with self._read() as conn:
            query = select(*jobs.c).order_by(jobs.c.id.desc()).limit(limit)
            if state:
                query = query.where(jobs.c.state == state)
            return [dict(r) for r in conn.execute(query).mappings()]

    def events(self, job_id: int | None = None) -> list[dict[str, Any]]:
        with self._read() as conn:
            query = select(*job_events.c).order_by(job_events.c.id)
            if job_id is not None:
                query = query.where(job_events.c.job_id == job_id)
            return [dict(r) for r in conn.execute(query).mappings()]

    def job_page(self, where: JobFilter, *, offset: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        """One page of jobs matching `where`, newest first, and how many match in all."""
        conditions: list[Any] = []
        if where.state:
            conditions.append(jobs.c.state == where.state)
        if where.since is not None:
            conditions.append(jobs.c.created_at >= where.since)
        if where.until is not None:
            conditions.append(jobs.c.created_at < where.until)
        if where.name_contains:
            conditions.append(func.lower(jobs.c.source_name).contains(where.name_contains.lower(), autoescape=True))
        with self._read() as conn:
            total = int(conn.execute(select(func.count()).select_from(jobs).where(*conditions)).scalar_one())
            rows = conn.execute(select(*jobs.c).where(*conditions).order_by(jobs.c.id.desc())
                                .offset(max(0, offset)).limit(limit)).mappings()
            return [dict(r) for r in rows], total

    def metric_figures(self, *, processing_buckets: Sequence[float], rtf_buckets: Sequence[float]) -> MetricFigures:
        """Everything /metrics reports, read in one go at scrape time. Histograms count
        done jobs that were transcribed (not reuses) at or below each bucket bound."""
        transcribed = and_(jobs.c.state == "done", jobs.c.reused_from.is_(None), jobs.c.processing_seconds.isnot(None))

        def at_most(column: Any, bound: float) -> Any:
            return func.sum(case((column <= bound, 1), else_=0))

        device = jobs.c.device
        columns = [device, func.count().label("jobs"),
                   func.coalesce(func.sum(jobs.c.audio_seconds), 0.0).label("audio_seconds"),
                   func.coalesce(func.sum(jobs.c.processing_seconds), 0.0).label("processing_seconds"),
                   func.coalesce(func.sum(jobs.c.rtf), 0.0).label("rtf_sum")]
        columns += [at_most(jobs.c.processing_seconds, b).label(f"p{i}") for i, b in enumerate(processing_buckets)]
        columns += [at_most(jobs.c.rtf, b).label(f"r{i}") for i, b in enumerate(rtf_buckets)]
        with self._read() as conn:
            by_state = {state: int(n) for state, n in
                        conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all()}
            devices = [DeviceFigures(
                device=r["device"] or "unknown", jobs=int(r["jobs"]), audio_seconds=float(r["audio_seconds"]),
                processing_seconds=float(r["processing_seconds"]), rtf_sum=float(r["rtf_sum"]),
                processing_buckets={b: int(r[f"p{i}"] or 0) for i, b in enumerate(processing_buckets)},
                rtf_buckets={b: int(r[f"r{i}"] or 0) for i, b in enumerate(rtf_buckets)})
                for r in conn.execute(select(*columns).where(transcribed).group_by(device).order_by(device)).mappings()]
            oldest = conn.execute(select(func.min(jobs.c.created_at)).where(jobs.c.state == "queued")).scalar_one()
            last_done = conn.execute(select(func.max(jobs.c.finished_at)).where(jobs.c.state == "done")).scalar_one()
            worker_rows = [dict(r) for r in conn.execute(select(*workers.c).order_by(workers.c.host, workers.c.slot))
                           .mappings()]
        return MetricFigures(jobs_by_state={s: by_state.get(s, 0) for s in JOB_STATES}, devices=devices,
                             oldest_queued_at=oldest, last_done_at=last_done, workers=worker_rows)

    def counts(self) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all()
        return {state: int(n) for state, n in rows}

    def checkpoint(self) -> None:
        """Fold the WAL back into the database file so it does not grow for months."""
        if self.engine.dialect.name != "sqlite":
            return
        raw = self.engine.raw_connection()
        try:
            # Outside any transaction: a checkpoint inside one would find the table locked.
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()

    # --- retention and notifications (daemon/service/retention.py, daemon/service/notify.py) -------------
    # Kept together at the end of the class so that the rest of the store merges cleanly.

    def delete_finished_jobs_before(self, cutoff: dt.datetime, *, batch: int = 500,
                                    batch_segments: int = 20000) -> int:
        """Delete finished jobs (done, failed, cancelled) that finished before `cutoff`,
        with their events and segments; returns how many job rows went. A row that another
        job's `reused_from` still points to stays until that job goes too. Works in batches
        (at most `batch` jobs and, past the first job, `batch_segments` segments: each one
        also leaves the full-text index) so the write lock is never held for long."""
        other = jobs.alias("referrer")
        deletable = and_(
            jobs.c.state.in_(FINISHED_STATES),
            func.coalesce(jobs.c.finished_at, jobs.c.created_at) < cutoff,
            ~exists(select(other.c.id).where(other.c.reused_from == jobs.c.id)),
        )
        total = 0
        while True:
            with self.engine.begin() as conn:
                ids = list(conn.execute(select(jobs.c.id).where(deletable).order_by(jobs.c.id).limit(batch))
                           .scalars())
                if not ids:
                    return total
                ids = self._within_segment_budget(conn, ids, batch_segments)
                conn.execute(delete(segments).where(segments.c.job_id.in_(ids)))
                conn.execute(delete(job_events).where(job_events.c.job_id.in_(ids)))
                conn.execute(delete(jobs).where(jobs.c.id.in_(ids)))
            total += len(ids)

    def last_event_id(self) -> int:
        """The newest job_events id (0 when there are none): where a notifier starts."""
        with self._read() as conn:
            return int(conn.execute(select(func.coalesce(func.max(job_events.c.id), 0))).scalar_one())

    def events_after(self, event_id: int, kinds: Sequence[str], limit: int = 100, *,
                     host: str | None = None) -> list[dict[str, Any]]:
        """Events newer than `event_id` of the given kinds, oldest first, each with its
        job's name and figures. `host`: only jobs this host ran (or recorded), so that
        supervisors sharing one database don't each report every job."""
        query = (
            select(job_events.c.id, job_events.c.job_id, job_events.c.at, job_events.c.kind, job_events.c.detail,
                   jobs.c.source_name, jobs.c.output_stem, jobs.c.host, jobs.c.device, jobs.c.state,
                   jobs.c.attempts, jobs.c.audio_seconds, jobs.c.processing_seconds, jobs.c.rtf, jobs.c.speakers,
                   jobs.c.outputs, jobs.c.error_kind, jobs.c.error_message, jobs.c.task)
            .join(jobs, jobs.c.id == job_events.c.job_id)
            .where(job_events.c.id > event_id, job_events.c.kind.in_(list(kinds)))
            .order_by(job_events.c.id)
            .limit(limit)
        )
        if host is not None:
            query = query.where(or_(jobs.c.host.is_(None), jobs.c.host == host))
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    # --- segments and full-text search (daemon/store/search.py) --------------------------------
    # What was said, as rows: written with the job's `done` (complete, add_reused), replaced
    # when speakers are renamed, deleted with the job by retention. On SQLite the FTS5
    # table `segments_fts` follows `segments` through triggers (see migration 0005).

    @staticmethod
    def _segment_rows(job_id: int, transcript: Transcript | None) -> list[dict[str, Any]]:
        """One row per segment; the speaker as every format shows it (its name, else its label)."""
        if transcript is None:
            return []
        if len(transcript.segments) > SEGMENT_ID_STRIDE:
            raise ValueError(f"job {job_id}: {len(transcript.segments)} segments, more than one job can hold "
                             f"({SEGMENT_ID_STRIDE})")
        rows = []
        for idx, seg in enumerate(transcript.segments):
            speaker = transcript.speaker_display(seg.speaker)
            rows.append({"id": job_id * SEGMENT_ID_STRIDE + idx, "job_id": job_id, "idx": idx,
                         "start_seconds": float(seg.start), "end_seconds": float(seg.end), "speaker": speaker,
                         "text": seg.text, "folded_text": fold(seg.text), "speaker_key": key_of_speaker(speaker)})
        return rows

    def _write_segments(self, conn: Connection, job_id: int, transcript: Transcript | None) -> int:
        """The job's rows become exactly `transcript`'s segments (replacing any it had)."""
        from sqlalchemy import delete

        rows = self._segment_rows(job_id, transcript)
        conn.execute(delete(segments).where(segments.c.job_id == job_id))
        if rows:
            conn.execute(insert(segments), rows)
        return len(rows)

    @staticmethod
    def _within_segment_budget(conn: Connection, job_ids: Sequence[int], budget: int) -> list[int]:
        """The longest prefix of `job_ids` (at least one) whose segments number at most `budget`."""
        counts = dict(conn.execute(select(segments.c.job_id, func.count()).where(segments.c.job_id.in_(job_ids))
                                   .group_by(segments.c.job_id)).all())
        chosen: list[int] = []
        total = 0
        for job_id in job_ids:
            total += int(counts.get(job_id, 0))
            if chosen and total > budget:
                break
            chosen.append(job_id)
        return chosen

    def add_segments(self, job_id: int, transcript: Transcript) -> int:
        """Backfill: give a done job without rows its segments; 0 (nothing written) when
        it has rows already or is not done, so running it twice adds nothing."""
        with self.engine.begin() as conn:
            done = conn.execute(select(jobs.c.id).where(jobs.c.id == job_id, jobs.c.state == "done")).first()
            has_rows = conn.execute(select(segments.c.id).where(segments.c.job_id == job_id)
                                    .limit(1)).first()
            if done is None or has_rows is not None:
                return 0
            return self._write_segments(conn, job_id, transcript)

    def replace_segments(self, job_id: int, transcript: Transcript, *, event: str | None = None,
                         **detail: Any) -> int | None:
        """A done job's rows become its (changed) transcript's segments, in one
        transaction: renamed speakers are found under their new names at once; with
        `event` (renamed, rematched), a job_events row of that kind with `detail` in the
        same transaction. Returns the number of rows, or None when there is no done job
        `job_id`."""
        with self.engine.begin() as conn:
            if conn.execute(select(jobs.c.id).where(jobs.c.id == job_id, jobs.c.state == "done")).first() is None:
                return None
            count = self._write_segments(conn, job_id, transcript)
            if event is not None:
                self._event(conn, job_id, event, utcnow(), **detail)
            return count

    def done_jobs_without_segments(self) -> list[int]:
        """Done jobs of this host (whose transcripts this host stored) that have no rows."""
        has_rows = exists(select(segments.c.id).where(segments.c.job_id == jobs.c.id))
        with self._read() as conn:
            return [int(i) for i in conn.execute(
                select(jobs.c.id).where(jobs.c.state == "done", or_(jobs.c.host == self.host, jobs.c.host.is_(None)),
                                        ~has_rows).order_by(jobs.c.id)).scalars()]

    def search_segments(self, query: SearchQuery, *, speaker_key: str | None = None, since: dt.datetime | None = None,
                        until: dt.datetime | None = None, job_id: int | None = None,
                        limit: int = 20) -> tuple[list[dict[str, Any]], bool]:
        """Segments whose folded text contains `query.folded` (of the speaker with
        `speaker_key`), newest job first, then by time in the recording: at most `limit`
        rows, and whether there are more.

        Row ids are (job, idx) in order, so the index is walked from the highest id down
        and stops after `limit` + 1 matches, however many segments match in all. Walking
        down gives the oldest job in the page its *last* matches, so its first ones are
        fetched by a second walk upwards inside that job's id range."""
        with self._read() as conn:
            bounds = self._id_bounds(conn, job_id=job_id, since=since, until=until)
            if bounds is None:
                return [], False
            lo, hi = bounds
            filters = dict(speaker_key=speaker_key, since=since, until=until)
            rows = self._hit_rows(conn, query, lo=lo, hi=hi, limit=limit + 1, newest_first=True, **filters)
            more = len(rows) > limit
            rows = rows[:limit]
            if more:
                oldest = rows[-1]["job_id"]
                newer = [r for r in rows if r["job_id"] != oldest]
                first_lo = max(lo, oldest * SEGMENT_ID_STRIDE)
                first_hi = min(hi, oldest * SEGMENT_ID_STRIDE + SEGMENT_ID_STRIDE - 1)
                rows = newer + self._hit_rows(conn, query, lo=first_lo, hi=first_hi, limit=limit - len(newer),
                                              newest_first=False, **filters)
        rows.sort(key=lambda r: (-r["job_id"], r["idx"]))
        return rows, more

    def _id_bounds(self, conn: Connection, *, job_id: int | None, since: dt.datetime | None,
                   until: dt.datetime | None) -> tuple[int, int] | None:
        """The segment id range the filters allow (None: nothing can match)."""
        lo, hi = 0, 2**63 - 1
        if job_id is not None:
            lo, hi = job_id * SEGMENT_ID_STRIDE, job_id * SEGMENT_ID_STRIDE + SEGMENT_ID_STRIDE - 1
        if since is not None or until is not None:
            # Received times follow job ids (all but exactly: hosts' clocks differ), so the
            # date range becomes the id range of its jobs, and each row is checked as well.
            span = select(func.min(jobs.c.id), func.max(jobs.c.id))
            if since is not None:
                span = span.where(jobs.c.created_at >= since)
            if until is not None:
                span = span.where(jobs.c.created_at < until)
            first, last = conn.execute(span).one()
            if first is None:
                return None
            lo = max(lo, int(first) * SEGMENT_ID_STRIDE)
            hi = min(hi, int(last) * SEGMENT_ID_STRIDE + SEGMENT_ID_STRIDE - 1)
        return (lo, hi) if lo <= hi else None

    def _hit_rows(self, conn: Connection, query: SearchQuery, *, lo: int, hi: int, limit: int, newest_first: bool,
                  speaker_key: str | None, since: dt.datetime | None,
                  until: dt.datetime | None) -> list[dict[str, Any]]:
        s = segments
        columns = (s.c.id, s.c.job_id, s.c.idx, s.c.start_seconds, s.c.end_seconds, s.c.speaker, s.c.text,
                   jobs.c.source_name, jobs.c.created_at.label("received_at"))
        if self.is_postgres or not query.indexed:
            # pg_trgm serves LIKE itself; on SQLite a 1-2 character query is compared
            # with every segment (the trigram index has nothing to look up).
            statement = (select(*columns).select_from(s.join(jobs, jobs.c.id == s.c.job_id))
                         .where(s.c.folded_text.like(query.like_pattern, escape=LIKE_ESCAPE), s.c.id.between(lo, hi))
                         .order_by(s.c.id.desc() if newest_first else s.c.id.asc()).limit(limit))
            if speaker_key is not None:
                statement = statement.where(s.c.speaker_key == speaker_key)
            if since is not None:
                statement = statement.where(jobs.c.created_at >= since)
            if until is not None:
                statement = statement.where(jobs.c.created_at < until)
            return [dict(r) for r in conn.execute(statement).mappings()]
        # FTS5 first (CROSS JOIN keeps SQLite from reordering the join), walking its
        # matches in rowid order, which it does without sorting; a speaker is a second
        # phrase of the same MATCH, so the index intersects the two itself.
        match = "{folded_text} : " + query.fts5_phrase
        if speaker_key is not None:
            match += " AND {speaker_key} : " + fts5_string(speaker_key)
        sql = ("SELECT s.id, s.job_id, s.idx, s.start_seconds, s.end_seconds, s.speaker, s.text, j.source_name, "
               "j.created_at AS received_at FROM segments_fts CROSS JOIN segments AS s ON s.id = segments_fts.rowid "
               "CROSS JOIN jobs AS j ON j.id = s.job_id "
               "WHERE segments_fts MATCH :match AND segments_fts.rowid BETWEEN :lo AND :hi")
        params: dict[str, Any] = {"match": match, "lo": lo, "hi": hi, "limit": limit}
        if since is not None:
            sql += " AND j.created_at >= :since"
            params["since"] = since
        if until is not None:
            sql += " AND j.created_at < :until"
            params["until"] = until
        sql += f" ORDER BY segments_fts.rowid {'DESC' if newest_first else 'ASC'} LIMIT :limit"
        statement = text(sql).columns(*columns)
        return [dict(r) for r in conn.execute(statement, params).mappings()]

    def trigram_index_covers_cjk(self) -> bool:
        """False where pg_trgm cannot index Chinese characters (a database whose LC_CTYPE
        is C): searches then still find everything, but by reading every segment."""
        if not self.is_postgres:
            return True
        if self._trigram_cjk is None:
            with self._read() as conn:
                self._trigram_cjk = bool(conn.execute(text("SELECT cardinality(show_trgm('中文字')) > 0")).scalar())
        return self._trigram_cjk

    # --- the voice library (daemon/voices/__init__.py) ----------------------------------------------

    def add_voice_sample(self, name: str, sample: Mapping[str, Any]) -> tuple[int, int]:
        """Add one embedding to voice `name` (made if new); returns (voice id, sample id).
        `sample`: embedding, model_name, model_revision, sha256, speech_seconds, origin,
        source, job_id."""
        now = utcnow()
        with self.engine.begin() as conn:
            voice_id, sample_id = _insert_sample(conn, name, sample, now)
        return voice_id, sample_id

    def complete_enrolment(self, job_id: int, *, pid: int, name: str, sample: Mapping[str, Any],
                           processing_seconds: float, device: str) -> bool:
        """Mark a held enrolment job done and add its sample, in one transaction: a crash
        between the two can neither lose the sample nor enrol the file twice."""
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(update(jobs).where(self._held(job_id, pid)).values(
                state="done", finished_at=now, processing_seconds=processing_seconds,
                audio_seconds=float(sample.get("audio_seconds") or 0.0) or None, speakers=1, outputs=[],
                device=device, lease_expires_at=None, error_kind=None, error_message=None, **_NO_PROGRESS))
            if result.rowcount != 1:
                return False
            voice_id, sample_id = _insert_sample(conn, name, sample, now)
            self._event(conn, job_id, "done", now, device=device, voice=name, voice_id=voice_id, sample_id=sample_id,
                        speech_seconds=round(float(sample["speech_seconds"]), 3),
                        processing_seconds=round(processing_seconds, 3))
        return True

    def voice_samples_of(self, *, names: Sequence[str] | None = None) -> list[SampleRow]:
        """Every enrolled sample (of the voices `names` only, when given), oldest first."""
        query = (select(voice_samples, voices.c.name).join(voices, voices.c.id == voice_samples.c.voice_id)
                 .order_by(voice_samples.c.id))
        if names is not None:
            query = query.where(voices.c.name.in_(list(names)))
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        return [SampleRow(id=r["id"], voice_id=r["voice_id"], name=r["name"],
                          embedding=tuple(float(x) for x in r["embedding"]), model_name=r["model_name"],
                          model_revision=r["model_revision"], dimension=r["dimension"], sha256=r["sha256"],
                          speech_seconds=r["speech_seconds"], origin=r["origin"], source=r["source"],
                          job_id=r["job_id"], created_at=r["created_at"]) for r in rows]

    def voice_summaries(self) -> list[VoiceSummary]:
        by_voice: dict[int, list[SampleRow]] = {}
        for sample in self.voice_samples_of():
            by_voice.setdefault(sample.voice_id, []).append(sample)
        with self._read() as conn:
            rows = conn.execute(select(voices).order_by(voices.c.name)).mappings().all()
        out = []
        for r in rows:
            samples = by_voice.get(r["id"], [])
            models = tuple(dict.fromkeys(model_identity(s.model_name, s.model_revision, s.dimension)
                                         for s in samples))
            out.append(VoiceSummary(id=r["id"], name=r["name"], created_at=r["created_at"], samples=len(samples),
                                    speech_seconds=round(sum(s.speech_seconds for s in samples), 3), models=models,
                                    origins=tuple(dict.fromkeys(s.origin for s in samples))))
        return out

    def remove_voice(self, name: str) -> int:
        """Remove voice `name` with all its samples; returns how many samples went (0: no such voice)."""
        with self.engine.begin() as conn:
            voice_id = conn.execute(select(voices.c.id).where(voices.c.name == name)).scalar()
            if voice_id is None:
                return 0
            count = conn.execute(delete(voice_samples).where(voice_samples.c.voice_id == voice_id)).rowcount
            conn.execute(delete(voices).where(voices.c.id == voice_id))
        return int(count)

    def remove_voice_samples(self, sample_ids: Sequence[int]) -> list[str]:
        """Remove these samples; voices left without one go too (their names are returned)."""
        if not sample_ids:
            return []
        with self.engine.begin() as conn:
            conn.execute(delete(voice_samples).where(voice_samples.c.id.in_(list(sample_ids))))
            return _drop_empty_voices(conn)

    def enrol_jobs(self, *, states: Sequence[str] | None = None) -> list[Job]:
        """Enrolment jobs (of the given states), oldest first."""
        query = select(*jobs.c).where(jobs.c.task == "enrol").order_by(jobs.c.id)
        if states is not None:
            query = query.where(jobs.c.state.in_(list(states)))
        with self._read() as conn:
            return [Job.from_row(r) for r in conn.execute(query).mappings()]

    def duplicates_of(self, job_id: int) -> list[int]:
        """Done jobs that reused job `job_id`'s transcript."""
        with self._read() as conn:
            return [int(i) for i in conn.execute(select(jobs.c.id).where(jobs.c.reused_from == job_id,
                                                                         jobs.c.state == "done")
                                                 .order_by(jobs.c.id)).scalars()]

    def done_transcriptions(self, *, since: dt.datetime | None = None) -> list[int]:
        """Done transcription jobs of this host (whose transcripts it stored), finished at or after `since`."""
        query = select(jobs.c.id).where(jobs.c.state == "done", jobs.c.task == "transcribe",
                                        or_(jobs.c.host == self.host, jobs.c.host.is_(None))).order_by(jobs.c.id)
        if since is not None:
            query = query.where(jobs.c.finished_at >= since)
        with self._read() as conn:
            return [int(i) for i in conn.execute(query).scalars()]


def _sample_values(name_id: int, now: dt.datetime, sample: Mapping[str, Any]) -> dict[str, Any]:
    embedding = [float(x) for x in sample["embedding"]]
    return {"voice_id": name_id, "embedding": embedding, "model_name": sample["model_name"],
            "model_revision": sample.get("model_revision"), "dimension": len(embedding),
            "sha256": sample.get("sha256"), "speech_seconds": float(sample["speech_seconds"]),
            "origin": sample["origin"], "source": sample.get("source"), "job_id": sample.get("job_id"),
            "created_at": now}


def _insert_sample(conn: Connection, name: str, sample: Mapping[str, Any], now: dt.datetime) -> tuple[int, int]:
    """One sample of voice `name` (made if new): (voice id, sample id)."""
    voice_id = _voice_id(conn, name, now)
    sample_id = int(conn.execute(insert(voice_samples).values(**_sample_values(voice_id, now, sample))
                                 .returning(voice_samples.c.id)).scalar_one())
    return voice_id, sample_id


def _voice_id(conn: Connection, name: str, now: dt.datetime) -> int:
    """The id of voice `name`, made if new."""
    found = conn.execute(select(voices.c.id).where(voices.c.name == name)).scalar()
    if found is not None:
        return int(found)
    return int(conn.execute(insert(voices).values(name=name, created_at=now).returning(voices.c.id)).scalar_one())


def _drop_empty_voices(conn: Connection) -> list[str]:
    """Voices left without a sample go (a voice is its samples); returns their names."""
    has_sample = exists(select(voice_samples.c.id).where(voice_samples.c.voice_id == voices.c.id))
    names = list(conn.execute(select(voices.c.name).where(~has_sample)).scalars())
    if names:
        conn.execute(delete(voices).where(voices.c.name.in_(names)))
    return names
