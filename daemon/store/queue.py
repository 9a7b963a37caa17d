"""The queue: jobs in, claimed, held under a lease, done or failed, taken back.

Like procrastinate, the claim, the heartbeat and stalled-job recovery sit side by
side so that their invariants can be read in one place:

* A job is `running` only while a live worker holds its lease: `pid` + `host`
  name the holder, `lease_expires_at` is renewed by heartbeats.
* A claim is one `UPDATE … WHERE id = (SELECT … LIMIT 1) RETURNING …` inside
  `BEGIN IMMEDIATE` (SQLite) or with `FOR UPDATE SKIP LOCKED` (PostgreSQL), so
  two workers can never take the same job.
* Completion and failure are accepted only from the current holder; a worker
  whose job was taken back (it hung, its lease expired) cannot overwrite the
  result of the job's next attempt. A job's result is therefore recorded exactly
  once: `complete` (with its segments, in the same transaction) succeeds for one
  attempt only.
* A cancel (`cancel`) ends a running job's hold at once: the job is `cancelled`, so
  its worker's heartbeat, completion and failure, which all require `running`, are
  refused, and a queued job is never claimed.
* A retry (`requeue`) takes a job back only from the state it was seen in, so two
  people retrying the same job queue it once.
* Every state change appends a row to `job_events` in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from sqlalchemy import Connection, DateTime, and_, bindparam, exists, insert, or_, select, update

from daemon.errors import JobCancelledError, LeaseExpiredError, WorkerLostError
from daemon.store.base import NO_PROGRESS, StoreBase
from daemon.store.corrections import copy_latest_version, delete_versions
from daemon.store.rows import Job, Outcome, utcnow
from daemon.store.schema import jobs
from daemon.store.segments import delete_segments, write_segments
from daemon.store.summaries import delete_summaries, queue_summary

if TYPE_CHECKING:
    from daemon.progress import Progress
    from daemon.transcript import Transcript

__all__ = ["QueueStore"]


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class QueueStore(StoreBase):
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
        with self._write() as conn:
            job_id = self._insert_job(conn, now, source_name=source_name, spool_path=spool_path,
                                      output_stem=output_stem, sha256=sha256, size_bytes=size_bytes, options=options,
                                      state="queued", max_attempts=max_attempts, priority=priority,
                                      audio_seconds=audio_seconds, dedup_key=dedup_key, task=task)
            self._event(conn, job_id, "queued", now, source=source_name, sha256=sha256, size_bytes=size_bytes,
                        host=self.host, task=None if task == "transcribe" else task)
        return job_id

    def add_reused(self, *, source_name: str, spool_path: str, output_stem: str, sha256: str | None,
                   size_bytes: int | None, options: Mapping[str, Any], dedup_key: str | None, twin: Job,
                   outputs: Sequence[str], audio_seconds: float | None, speakers: int | None,
                   transcript: Transcript | None = None, summary_attempts: int | None = None) -> int:
        """Record a duplicate of a finished job: `done` at once, its outputs rendered from
        the earlier job's transcript, whose `segments` it gets as its own rows (and
        its corrections, as its version 2: daemon.store.corrections.copy_latest_version)."""
        now = utcnow()
        with self._write() as conn:
            job_id = self._insert_job(conn, now, source_name=source_name, spool_path=spool_path,
                                      output_stem=output_stem, sha256=sha256, size_bytes=size_bytes, options=options,
                                      state="done", max_attempts=0, priority=0, started_at=now, finished_at=now,
                                      host=self.host, dedup_key=dedup_key, reused_from=twin.id, outputs=list(outputs),
                                      audio_seconds=audio_seconds, speakers=speakers, processing_seconds=0.0, rtf=0.0,
                                      device=twin.device)
            self._event(conn, job_id, "queued", now, source=source_name, sha256=sha256, size_bytes=size_bytes,
                        host=self.host)
            self._event(conn, job_id, "done", now, reused_from=twin.id)
            write_segments(conn, job_id, transcript)
            copy_latest_version(conn, twin.id, job_id, now)
            if summary_attempts is not None:  # its summary queued with its done (daemon/store/summaries.py)
                queue_summary(conn, job_id, now, max_attempts=summary_attempts, event=self._event)
        return job_id

    def done_twin(self, dedup_key: str | None) -> Job | None:
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
        with self._write() as conn:
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
                    finished_at=None, **NO_PROGRESS)
            .returning(*jobs.c)
        )
        return self._claim

    def claim(self, *, slot: int, pid: int, device: str, lease_seconds: float) -> Job | None:
        now = utcnow()
        params = {"now": now, "c_host": self.host, "c_slot": slot, "c_pid": pid, "c_device": device,
                  "c_lease": now + dt.timedelta(seconds=lease_seconds)}
        with self._write() as conn:
            row = conn.execute(self._claim_statement(), params).mappings().first()
            if row is None:
                return None
            job = Job.from_row(row)
            self._event(conn, job.id, "claimed", now, host=self.host, slot=slot, pid=pid, device=device,
                        attempt=job.attempts)
        return job

    def heartbeat(self, job_id: int, *, pid: int, lease_seconds: float, progress: Progress | None = None) -> bool:
        """Renew the lease (and record how far the job is); False when the job is no
        longer this worker's."""
        now = utcnow()
        values: dict[str, Any] = {"heartbeat_at": now, "lease_expires_at": now + dt.timedelta(seconds=lease_seconds)}
        if progress is not None:
            values.update(stage=progress.stage, progress=progress.fraction, eta_seconds=progress.eta_seconds,
                          progress_at=now)
        with self._write() as conn:
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
                 transcript: Transcript | None = None, summary_attempts: int | None = None) -> bool:
        """Mark a held job done; its `transcript`'s segments become its rows in the same
        transaction, so a done job always has them. `summary_attempts`: its summary is
        queued in the same transaction too, with that many attempts."""
        now = utcnow()
        rtf = processing_seconds / audio_seconds if audio_seconds > 0 else None
        with self._write() as conn:
            result = conn.execute(update(jobs).where(self._held(job_id, pid)).values(
                state="done", finished_at=now, audio_seconds=audio_seconds, processing_seconds=processing_seconds,
                rtf=rtf, speakers=speakers, outputs=list(outputs), device=device, lease_expires_at=None,
                error_kind=None, error_message=None, reused_from=reused_from, **NO_PROGRESS))
            if result.rowcount != 1:
                return False
            self._event(conn, job_id, "done", now, device=device, audio_seconds=round(audio_seconds, 3),
                        processing_seconds=round(processing_seconds, 3), speakers=speakers, reused_from=reused_from)
            write_segments(conn, job_id, transcript)
            if summary_attempts is not None:
                queue_summary(conn, job_id, now, max_attempts=summary_attempts, event=self._event)
        return True

    def fail(self, job_id: int, *, pid: int | None, kind: str, message: str, permanent: bool,
             retry_backoff_seconds: float) -> Outcome | None:
        """A job's attempt failed. Permanent errors, and transient ones once attempts are
        spent, end `failed`; others go back to `queued` after an exponential backoff.
        `pid` None: the supervisor speaking for a worker that is gone."""
        now = utcnow()
        with self._write() as conn:
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
                                          error_message=message, lease_expires_at=None, **NO_PROGRESS)
            event_kind = "failed"
        else:
            backoff = retry_backoff_seconds * (2 ** max(0, row["attempts"] - 1))
            values = dict(state="queued", not_before=now + dt.timedelta(seconds=backoff), error_kind=kind,
                          error_message=message, lease_expires_at=None, pid=None, **NO_PROGRESS)
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
        with self._write() as conn:
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
                      **NO_PROGRESS)
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
        with self._write() as conn:
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
        with self._write() as conn:
            row = conn.execute(select(*jobs.c).where(jobs.c.id == job_id, jobs.c.state == "running",
                                                     jobs.c.lease_expires_at < now)).mappings().first()
            if row is None:
                return None
            return self._take_back(conn, row, now, reason=reason, kind=LeaseExpiredError.kind, counts_as_attempt=True,
                                   retry_backoff_seconds=0)

    # --- retry, cancel (spkd retry / cancel, the dashboard) -------------------------------

    def job_state(self, job_id: int) -> str | None:
        """The job's state now (None: no such job): what a worker's heartbeat asks to
        learn that its job was cancelled."""
        with self._read() as conn:
            return conn.execute(select(jobs.c.state).where(jobs.c.id == job_id)).scalar_one_or_none()

    def still_held(self, job_id: int, *, pid: int) -> bool:
        """Whether worker `pid` of this host still holds the job (asked just before its
        outputs are published, so a cancelled job publishes nothing)."""
        with self._read() as conn:
            return conn.execute(select(jobs.c.id).where(self._held(job_id, pid))).first() is not None

    def requeue(self, job_id: int, *, from_state: str, options: Mapping[str, Any], dedup_key: str | None,
                sha256: str | None, size_bytes: int | None, audio_seconds: float | None, max_attempts: int,
                **detail: Any) -> Job | None:
        """A finished job back to the queue with fresh attempts and the `options` it will
        run with (its priority theirs), the file's `sha256`/`size_bytes` as they are now;
        only while it is still in `from_state` (None otherwise: someone else acted first).
        A `retry_requested` event with `detail` and the `options` says so. What a done job had recorded
        (its segments, outputs list) is withdrawn first by daemon.jobs.results.withdraw."""
        now = utcnow()
        with self._write() as conn:
            row = conn.execute(select(*jobs.c).where(jobs.c.id == job_id, jobs.c.state == from_state)
                               ).mappings().first()
            if row is None:
                return None
            values: dict[str, Any] = dict(
                state="queued", attempts=0, not_before=None, finished_at=None, pid=None, lease_expires_at=None,
                error_kind=None, error_message=None, options=dict(options), priority=int(options.get("priority", 0)),
                dedup_key=dedup_key, sha256=sha256, size_bytes=size_bytes,
                max_attempts=max(int(row["max_attempts"]), max_attempts), archive_name=None, **NO_PROGRESS)
            if audio_seconds is not None:
                values["audio_seconds"] = audio_seconds
            if from_state == "done":
                values.update(outputs=None, processing_seconds=None, rtf=None, speakers=None, reused_from=None)
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
            self._event(conn, job_id, "retry_requested", now, was=from_state, options=dict(options), **detail)
        return Job.from_row({**row, **values})

    def withdraw_result(self, job_id: int) -> None:
        """A done job's recorded result is taken back (its segments, its outputs list),
        before it runs again or is removed: daemon.jobs.results.withdraw, only. Its
        corrections and its summary go too: they were of the transcript that goes."""
        with self._write() as conn:
            delete_segments(conn, [job_id])
            delete_versions(conn, [job_id])
            delete_summaries(conn, [job_id])
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(outputs=None))

    def cancel(self, job_id: int, *, message: str, **detail: Any) -> Job | None:
        """Cancel a queued or running job: `cancelled` at once, with `message` and a
        `cancelled` event (`detail` its fields). A queued job is never claimed after
        this; the worker of a running one loses its hold (a heartbeat or a result it
        tries to record is refused) and abandons it. Returns the job as it was (its
        state then, queued or running), or None when it was in neither state."""
        now = utcnow()
        with self._write() as conn:
            row = conn.execute(select(*jobs.c).where(jobs.c.id == job_id, jobs.c.state.in_(("queued", "running")))
                               ).mappings().first()
            if row is None:
                return None
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                state="cancelled", finished_at=now, error_kind=JobCancelledError.kind, error_message=message,
                lease_expires_at=None, not_before=None, **NO_PROGRESS))
            holder = {"host": row["host"], "pid": row["pid"]} if row["state"] == "running" else {}
            self._event(conn, job_id, "cancelled", now, was=row["state"], message=message, **holder, **detail)
        return Job.from_row(row)

    def set_archive_name(self, job_id: int, archive_name: str) -> None:
        """Where the job's source now lies under paths.archive (relative, POSIX)."""
        with self._write() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(archive_name=archive_name))

    def set_spool_path(self, job_id: int, spool_path: str) -> None:
        with self._write() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(spool_path=spool_path))

    def add_event(self, job_id: int, kind: str, **detail: Any) -> None:
        with self._write() as conn:
            self._event(conn, job_id, kind, utcnow(), **detail)
