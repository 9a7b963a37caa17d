"""Retention and notifications: finished jobs deleted after their time
(daemon/service/retention.py) or when asked (`spkd remove`, daemon/jobs/cancel.py),
and the events a notifier reads as they come (daemon/service/notify.py)."""

from __future__ import annotations

import datetime as dt
from typing import Sequence

from sqlalchemy import Connection, and_, delete, exists, func, or_, select

from daemon.store.base import StoreBase
from daemon.store.corrections import delete_versions
from daemon.store.rows import NoticeRow
from daemon.store.schema import FINISHED_STATES, job_events, jobs, segments
from daemon.store.segments import delete_segments, within_segment_budget
from daemon.store.summaries import delete_summaries

__all__ = ["RetentionStore"]


def _delete_jobs(conn: Connection, ids: Sequence[int]) -> None:
    """Job rows with their segments, versions, summaries and events (a job's rows all go, or none)."""
    if not ids:
        return
    delete_segments(conn, ids)
    delete_versions(conn, ids)
    delete_summaries(conn, ids)
    conn.execute(delete(job_events).where(job_events.c.job_id.in_(ids)))
    conn.execute(delete(jobs).where(jobs.c.id.in_(ids)))


class RetentionStore(StoreBase):
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
            with self._write() as conn:
                ids = list(conn.execute(select(jobs.c.id).where(deletable).order_by(jobs.c.id).limit(batch))
                           .scalars())
                if not ids:
                    return total
                ids = within_segment_budget(conn, ids, batch_segments)
                _delete_jobs(conn, ids)
            total += len(ids)

    def remove_jobs(self, job_ids: Sequence[int]) -> list[int]:
        """`spkd remove`: delete finished jobs with their events and segments, in one
        transaction; returns the ids that went. A job not finished (any more), or whose
        result another job not among `job_ids` reused (`reused_from`), stays."""
        wanted = sorted(set(job_ids))
        if not wanted:
            return []
        other = jobs.alias("referrer")
        with self._write() as conn:
            ids = list(conn.execute(select(jobs.c.id).where(
                jobs.c.id.in_(wanted), jobs.c.state.in_(FINISHED_STATES),
                ~exists(select(other.c.id).where(other.c.reused_from == jobs.c.id, other.c.id.not_in(wanted)))
            ).order_by(jobs.c.id)).scalars())
            _delete_jobs(conn, ids)
        return ids

    def removal_counts(self, job_id: int) -> tuple[int, int]:
        """How many segment rows and event rows job `job_id` has (what `spkd remove` says will go)."""
        with self._read() as conn:
            segment_count = conn.execute(select(func.count()).select_from(segments)
                                         .where(segments.c.job_id == job_id)).scalar_one()
            event_count = conn.execute(select(func.count()).select_from(job_events)
                                       .where(job_events.c.job_id == job_id)).scalar_one()
        return int(segment_count), int(event_count)

    def last_event_id(self) -> int:
        """The newest job_events id (0 when there are none): where a notifier starts."""
        with self._read() as conn:
            return int(conn.execute(select(func.coalesce(func.max(job_events.c.id), 0))).scalar_one())

    def events_after(self, event_id: int, kinds: Sequence[str], limit: int = 100, *,
                     host: str | None = None) -> list[NoticeRow]:
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
            return [NoticeRow.from_row(r) for r in conn.execute(query).mappings()]
