"""Re-renders of done jobs, as the store keeps them: the intent, recorded before a
re-render starts, and what a check of a job's rows against its stored transcript reads.

A re-render (daemon.jobs.results.rerender_jobs: a rename, a rematch, a repair) is recorded
as intended first: one `rerender` event per job, all of them in one transaction,
`{"event": <the kind that will say it is done>, "detail": {...}}`. It is done when a
later event of one of RERENDER_EVENTS is recorded for the job (with its segments, in
one transaction: daemon.store.segments.replace_segments), naming the intent's id as
`intent`. An intent without one is pending: its re-render was interrupted, and
daemon.jobs.results finishes it (at start, before the next re-render of the job, and
by `spkd doctor`). No column is added for this: the history says it all.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from sqlalchemy import and_, exists, func, or_, select

from daemon.store.base import StoreBase
from daemon.store.corrections import NewVersion, add_version
from daemon.store.rows import EventRow, utcnow
from daemon.store.schema import job_events, jobs, segments

__all__ = ["RERENDER_EVENTS", "RERENDER_INTENT", "RerenderStore"]

# The event that records a re-render as intended, and the kinds that say one is done.
RERENDER_INTENT = "rerender"
# (corrected, reverted: daemon.jobs.corrections, whose versions are added with the intents.)
RERENDER_EVENTS = ("renamed", "rematched", "repaired", "corrected", "reverted")


class RerenderStore(StoreBase):
    def begin_rerenders(self, intents: Sequence[tuple[int, str, dict[str, Any]]],
                        versions: Mapping[int, NewVersion] | None = None) -> dict[int, int]:
        """Record re-renders as intended, in one transaction: for each (job id, event
        kind, detail) of a done job a `rerender` event, and the job's new transcript
        version where `versions` has one (daemon.store.corrections.add_version; a
        VersionConflictError records nothing). Returns job id -> the intent's event id
        (jobs that are not done are left out)."""
        now = utcnow()
        made: dict[int, int] = {}
        versions = versions or {}
        with self._write() as conn:
            query = select(jobs.c.id).where(jobs.c.id.in_([i for i, _e, _d in intents]), jobs.c.state == "done")
            if versions and self.is_postgres:  # the rows held, so that versions are added one after the other
                query = query.order_by(jobs.c.id).with_for_update()
            done = {int(i) for i in conn.execute(query).scalars()}
            for job_id, event, detail in intents:
                if job_id not in done or job_id in made:
                    continue
                if event not in RERENDER_EVENTS:
                    raise ValueError(f"a re-render ends with one of {RERENDER_EVENTS}, not {event!r}")
                if job_id in versions:
                    add_version(conn, job_id, versions[job_id], now)
                self._event(conn, job_id, RERENDER_INTENT, now, event=event, detail=dict(detail))
                made[job_id] = int(conn.execute(select(func.max(job_events.c.id)).where(
                    job_events.c.job_id == job_id, job_events.c.kind.in_((RERENDER_INTENT,)))).scalar_one())
        return made

    def pending_rerenders(self, job_ids: Sequence[int] | None = None, *, this_host: bool = False) -> list[EventRow]:
        """The intents of done jobs (of `job_ids`; of this host's jobs with `this_host`)
        whose re-render has not been recorded as done: each job's latest intent with no
        later event of RERENDER_EVENTS. Oldest job first."""
        later = job_events.alias("later")
        finished = exists(select(later.c.id).where(later.c.job_id == job_events.c.job_id, later.c.id > job_events.c.id,
                                                   later.c.kind.in_(RERENDER_EVENTS)))
        newer_intent = exists(select(later.c.id).where(later.c.job_id == job_events.c.job_id,
                                                       later.c.id > job_events.c.id,
                                                       later.c.kind.in_((RERENDER_INTENT,))))
        query = (select(job_events).join(jobs, jobs.c.id == job_events.c.job_id)
                 .where(job_events.c.kind.in_((RERENDER_INTENT,)), jobs.c.state == "done", ~finished, ~newer_intent)
                 .order_by(job_events.c.job_id))
        if job_ids is not None:
            if not job_ids:
                return []
            query = query.where(job_events.c.job_id.in_(list(job_ids)))
        if this_host:
            query = query.where(or_(jobs.c.host == self.host, jobs.c.host.is_(None)))
        with self._read() as conn:
            return [EventRow.from_row(r) for r in conn.execute(query).mappings()]

    def segment_texts(self, job_id: int) -> list[tuple[int, float, float, str, str]]:
        """A job's segment rows as (idx, start, end, speaker, text), in order: what a
        check compares with its stored transcript."""
        with self._read() as conn:
            return [(int(r.idx), float(r.start_seconds), float(r.end_seconds), r.speaker, r.text)
                    for r in conn.execute(select(segments.c.idx, segments.c.start_seconds, segments.c.end_seconds,
                                                 segments.c.speaker, segments.c.text)
                                          .where(segments.c.job_id == job_id).order_by(segments.c.idx))]

    def done_transcriptions_here(self) -> list[int]:
        """Done transcription jobs of this host (whose stored transcripts this host
        keeps), oldest first: what `spkd doctor` checks."""
        with self._read() as conn:
            return [int(i) for i in conn.execute(
                select(jobs.c.id).where(and_(jobs.c.state == "done", jobs.c.task == "transcribe"),
                                        or_(jobs.c.host == self.host, jobs.c.host.is_(None)))
                .order_by(jobs.c.id)).scalars()]
