"""Reading jobs and their events: one job, the newest jobs, a filtered page, counts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, or_, select

from daemon.store.base import StoreBase
from daemon.store.rows import EventRow, Job, JobFilter
from daemon.store.schema import job_events, jobs

__all__ = ["ReadStore"]


class ReadStore(StoreBase):
    def job(self, job_id: int) -> Job | None:
        with self._read() as conn:
            row = conn.execute(select(*jobs.c).where(jobs.c.id == job_id)).mappings().first()
            return Job.from_row(row) if row else None

    def jobs(self, *, limit: int = 20, state: str | None = None) -> list[Job]:
        """The newest `limit` jobs (of `state`), newest first."""
        with self._read() as conn:
            query = select(*jobs.c).order_by(jobs.c.id.desc()).limit(limit)
            if state:
                query = query.where(jobs.c.state == state)
            return [Job.from_row(r) for r in conn.execute(query).mappings()]

    def events(self, job_id: int | None = None) -> list[EventRow]:
        """The events of job `job_id` (of every job when None), oldest first."""
        with self._read() as conn:
            query = select(*job_events.c).order_by(job_events.c.id)
            if job_id is not None:
                query = query.where(job_events.c.job_id == job_id)
            return [EventRow.from_row(r) for r in conn.execute(query).mappings()]

    def job_page(self, where: JobFilter, *, offset: int = 0, limit: int = 50) -> tuple[list[Job], int]:
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
            return [Job.from_row(r) for r in rows], total

    def counts(self) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all()
        return {state: int(n) for state, n in rows}

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
