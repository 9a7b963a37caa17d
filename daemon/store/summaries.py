"""Summary tasks: a done transcription's summary queued, claimed under a lease, retried
with backoff, done or failed (daemon/jobs/summarize.py runs them in the workers).

The queue's rules (daemon/store/queue.py), for a task of its own table, side by side:

* A summary is `running` only while its holder (`host` + `pid`) renews its lease
  (`summary_heartbeat`); a CHECK constraint keeps the holder's columns set while
  running and empty otherwise.
* A claim is one `UPDATE … WHERE job_id = (SELECT … LIMIT 1) RETURNING …` inside
  `BEGIN IMMEDIATE` (SQLite) or with `FOR UPDATE SKIP LOCKED` (PostgreSQL): two
  workers never take the same summary. The same claim is the recovery: a `running`
  summary whose lease ran out (its worker died) is claimed again, its attempt counted,
  or ends `failed` when its attempts are spent. There is no other place that takes a
  summary back.
* A result and a failure are accepted only from the current holder, so a worker whose
  lease was taken back cannot overwrite the next attempt's.
* A summary is queued with its job's `done` (`queue_summary`, called by
  Store.complete / add_reused in their transaction), or again on request
  (`request_summary`); the last good `result` stays until a new one replaces it.
* Every change appends a `summary_*` event to `job_events` in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Mapping, Sequence

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, or_, select, update

from daemon.errors import LeaseExpiredError
from daemon.store.base import StoreBase
from daemon.store.rows import SummaryRow, utcnow
from daemon.store.schema import jobs, summaries

__all__ = ["SummaryStore", "delete_summaries", "queue_summary"]

# What a re-queued summary starts from: no attempts, no holder, no error, not finished.
_FRESH: dict[str, Any] = {"state": "queued", "attempts": 0, "next_attempt_at": None, "host": None, "pid": None,
                          "lease_expires_at": None, "heartbeat_at": None, "error_kind": None, "error_message": None,
                          "started_at": None, "finished_at": None}
# Nobody holds a summary that is not running.
_NO_HOLDER: dict[str, Any] = {"pid": None, "lease_expires_at": None}


def queue_summary(conn: Connection, job_id: int, now: dt.datetime, *, max_attempts: int, event: Any,
                  **detail: Any) -> None:
    """Queue job `job_id`'s summary inside the caller's transaction (a new row, or the
    existing one back to `queued` with fresh attempts, its last result kept). `event` is
    the store's event writer (StoreBase._event)."""
    values = {**_FRESH, "max_attempts": max_attempts, "requested_at": now}
    if conn.execute(update(summaries).where(summaries.c.job_id == job_id).values(**values)).rowcount == 0:
        conn.execute(insert(summaries).values(job_id=job_id, **values))
    event(conn, job_id, "summary_queued", now, **detail)


def delete_summaries(conn: Connection, job_ids: Sequence[int]) -> None:
    """The jobs' summary rows, inside the caller's transaction (a job removed, or its
    result withdrawn before it runs again: its summary was of the transcript that goes)."""
    if job_ids:
        conn.execute(delete(summaries).where(summaries.c.job_id.in_(list(job_ids))))


class SummaryStore(StoreBase):
    # --- asking (Store.complete, spkd summarize) ------------------------------------------

    def request_summary(self, job_id: int, *, max_attempts: int, **detail: Any) -> tuple[SummaryRow, str | None] | None:
        """(Re)queue a done transcription's summary. Returns the row as it is now and the
        state it was in before (None: it had none); a summary already queued or running
        is left as it is. None when `job_id` is no done transcription."""
        now = utcnow()
        with self._write() as conn:
            job = conn.execute(select(jobs.c.state, jobs.c.task).where(jobs.c.id == job_id)).first()
            if job is None or job.state != "done" or job.task != "transcribe":
                return None
            before = self._summary_row(conn, job_id)
            if before is not None and before.state in ("queued", "running"):
                return before, before.state
            queue_summary(conn, job_id, now, max_attempts=max_attempts, event=self._event, **detail)
            after = self._summary_row(conn, job_id)
        assert after is not None
        return after, before.state if before is not None else None

    # --- claim, heartbeat, done, failed (workers) -----------------------------------------

    def _claim_summary_statement(self) -> Any:
        now = bindparam("now", type_=summaries.c.requested_at.type)
        due = or_(and_(summaries.c.state == "queued",
                       or_(summaries.c.next_attempt_at.is_(None), summaries.c.next_attempt_at <= now)),
                  and_(summaries.c.state == "running", summaries.c.lease_expires_at < now))
        candidate = (select(summaries.c.job_id)
                     .where(due, summaries.c.attempts < summaries.c.max_attempts)
                     .order_by(summaries.c.requested_at, summaries.c.job_id).limit(1))
        if self.is_postgres:
            candidate = candidate.with_for_update(skip_locked=True)
        return (update(summaries)
                .where(summaries.c.job_id == candidate.scalar_subquery(), due)
                .values(state="running", attempts=summaries.c.attempts + 1, host=bindparam("host"),
                        pid=bindparam("pid"), lease_expires_at=bindparam("lease"), heartbeat_at=now,
                        started_at=now, next_attempt_at=None)
                .returning(*summaries.c))

    def claim_summary(self, *, pid: int, lease_seconds: float) -> SummaryRow | None:
        """Take the oldest summary that is due (queued past its backoff, or running under
        a lease that ran out) under a lease of `lease_seconds`; None when none is."""
        now = utcnow()
        with self._write() as conn:
            self._fail_spent_leases(conn, now)
            row = conn.execute(self._claim_summary_statement(), {
                "now": now, "host": self.host, "pid": pid,
                "lease": now + dt.timedelta(seconds=lease_seconds)}).mappings().first()
            if row is None:
                return None
            claimed = SummaryRow.from_row(row)
            self._event(conn, claimed.job_id, "summary_claimed", now, host=self.host, pid=pid,
                        attempt=claimed.attempts)
        return claimed

    def _fail_spent_leases(self, conn: Connection, now: dt.datetime) -> None:
        """Running summaries whose holder stopped renewing and whose attempts are spent end
        `failed` (the others are claimed again by the claim itself)."""
        query = select(summaries.c.job_id, summaries.c.attempts, summaries.c.host, summaries.c.pid).where(
            summaries.c.state == "running", summaries.c.lease_expires_at < now,
            summaries.c.attempts >= summaries.c.max_attempts)
        if self.is_postgres:
            query = query.with_for_update(skip_locked=True)
        for row in conn.execute(query).all():
            message = f"its worker stopped (pid {row.pid} on {row.host}); attempt {row.attempts} was the last"
            conn.execute(update(summaries).where(summaries.c.job_id == row.job_id).values(
                state="failed", finished_at=now, error_kind=LeaseExpiredError.kind, error_message=message,
                **_NO_HOLDER))
            self._event(conn, row.job_id, "summary_failed", now, kind=LeaseExpiredError.kind, message=message,
                        attempt=row.attempts)

    def _holds_summary(self, job_id: int, pid: int) -> Any:
        return and_(summaries.c.job_id == job_id, summaries.c.state == "running", summaries.c.pid == pid,
                    summaries.c.host == self.host)

    def holds_summary(self, job_id: int, *, pid: int) -> bool:
        """Whether worker `pid` of this host still holds the summary (asked just before its
        files are written, so that a job removed meanwhile gets none)."""
        with self._read() as conn:
            return self._summary_row(conn, job_id, where=self._holds_summary(job_id, pid)) is not None

    def summary_heartbeat(self, job_id: int, *, pid: int, lease_seconds: float) -> bool:
        """Renew the lease; False when the summary is no longer this worker's."""
        now = utcnow()
        with self._write() as conn:
            result = conn.execute(update(summaries).where(self._holds_summary(job_id, pid)).values(
                heartbeat_at=now, lease_expires_at=now + dt.timedelta(seconds=lease_seconds)))
        return result.rowcount == 1

    def complete_summary(self, job_id: int, *, pid: int, result: Mapping[str, Any], transcript_version: int,
                         model: str) -> bool:
        """The held summary is `done` with `result`, made from `transcript_version`;
        False when the lease was taken back (nothing recorded)."""
        now = utcnow()
        with self._write() as conn:
            done = conn.execute(update(summaries).where(self._holds_summary(job_id, pid)).values(
                state="done", finished_at=now, result=dict(result), transcript_version=transcript_version,
                model=model, error_kind=None, error_message=None, **_NO_HOLDER))
            if done.rowcount != 1:
                return False
            self._event(conn, job_id, "summary_done", now, transcript_version=transcript_version,
                        format=result.get("format"), parts=result.get("parts"))
        return True

    def fail_summary(self, job_id: int, *, pid: int, kind: str, message: str, permanent: bool,
                     retry_backoff_seconds: float) -> SummaryRow | None:
        """An attempt failed: `failed` when permanent or its attempts are spent, else
        `queued` again after `retry_backoff_seconds` doubled per attempt made. None when
        the lease was taken back (nothing recorded)."""
        now = utcnow()
        with self._write() as conn:
            row = self._summary_row(conn, job_id, where=self._holds_summary(job_id, pid))
            if row is None:
                return None
            if permanent or row.attempts >= row.max_attempts:
                values: dict[str, Any] = {"state": "failed", "finished_at": now}
                event = "summary_failed"
            else:
                backoff = retry_backoff_seconds * 2 ** max(0, row.attempts - 1)
                values = {"state": "queued", "next_attempt_at": now + dt.timedelta(seconds=backoff)}
                event = "summary_retry"
            conn.execute(update(summaries).where(summaries.c.job_id == job_id).values(
                error_kind=kind, error_message=message, **_NO_HOLDER, **values))
            self._event(conn, job_id, event, now, kind=kind, message=message, attempt=row.attempts,
                        permanent=permanent or None,
                        next_attempt_at=values["next_attempt_at"].isoformat() if "next_attempt_at" in values else None)
            return self._summary_row(conn, job_id)

    # --- reading -------------------------------------------------------------------------

    def _summary_row(self, conn: Connection, job_id: int, *, where: Any = None) -> SummaryRow | None:
        row = conn.execute(select(*summaries.c).where(summaries.c.job_id == job_id if where is None else where)
                           ).mappings().first()
        return SummaryRow.from_row(row) if row is not None else None

    def summary(self, job_id: int) -> SummaryRow | None:
        """Job `job_id`'s summary row (None: it never had one asked for)."""
        with self._read() as conn:
            return self._summary_row(conn, job_id)

    def summary_counts(self) -> dict[str, int]:
        """How many summaries are in each state (`spkd status`)."""
        with self._read() as conn:
            return {state: int(n) for state, n in conn.execute(
                select(summaries.c.state, func.count()).group_by(summaries.c.state)).all()}

    def summaries(self, *, limit: int = 50, state: str | None = None) -> list[SummaryRow]:
        """The most recently requested summaries first."""
        query = select(*summaries.c).order_by(summaries.c.requested_at.desc(), summaries.c.job_id.desc()).limit(limit)
        if state is not None:
            query = query.where(summaries.c.state == state)
        with self._read() as conn:
            return [SummaryRow.from_row(r) for r in conn.execute(query).mappings()]
