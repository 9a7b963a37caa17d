"""Segments and full-text search: what was said, as rows.

Written with the job's `done` (complete, add_reused), replaced when speakers are
renamed, deleted with the job by retention. On SQLite the FTS5 table `segments_fts`
follows `segments` through triggers (see migration 0005). The rules that are not SQL
(folding, what a query means) live in daemon/store/search.py.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Sequence

from sqlalchemy import Connection, delete, exists, func, insert, or_, select, text

from daemon.store.base import StoreBase
from daemon.store.rows import SegmentMatch, utcnow
from daemon.store.schema import SEGMENT_ID_STRIDE, jobs, segments
from daemon.store.search import LIKE_ESCAPE, SearchQuery, fold, fts5_string
from daemon.store.search import speaker_key as key_of_speaker

if TYPE_CHECKING:
    from daemon.transcript import Transcript

__all__ = ["SegmentStore", "segment_rows", "within_segment_budget", "write_segments"]


def segment_rows(job_id: int, transcript: Transcript | None) -> list[dict[str, Any]]:
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


def write_segments(conn: Connection, job_id: int, transcript: Transcript | None) -> int:
    """The job's rows become exactly `transcript`'s segments (replacing any it had)."""
    rows = segment_rows(job_id, transcript)
    conn.execute(delete(segments).where(segments.c.job_id == job_id))
    if rows:
        conn.execute(insert(segments), rows)
    return len(rows)


def within_segment_budget(conn: Connection, job_ids: Sequence[int], budget: int) -> list[int]:
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


class SegmentStore(StoreBase):
    def add_segments(self, job_id: int, transcript: Transcript) -> int:
        """Backfill: give a done job without rows its segments; 0 (nothing written) when
        it has rows already or is not done, so running it twice adds nothing."""
        with self._write() as conn:
            done = conn.execute(select(jobs.c.id).where(jobs.c.id == job_id, jobs.c.state == "done")).first()
            has_rows = conn.execute(select(segments.c.id).where(segments.c.job_id == job_id)
                                    .limit(1)).first()
            if done is None or has_rows is not None:
                return 0
            return write_segments(conn, job_id, transcript)

    def replace_segments(self, job_id: int, transcript: Transcript, *, event: str | None = None,
                         **detail: Any) -> int | None:
        """A done job's rows become its (changed) transcript's segments, in one
        transaction: renamed speakers are found under their new names at once; with
        `event` (renamed, rematched), a job_events row of that kind with `detail` in the
        same transaction. Returns the number of rows, or None when there is no done job
        `job_id`."""
        with self._write() as conn:
            if conn.execute(select(jobs.c.id).where(jobs.c.id == job_id, jobs.c.state == "done")).first() is None:
                return None
            count = write_segments(conn, job_id, transcript)
            if event is not None:
                self._event(conn, job_id, event, utcnow(), **detail)
            return count

    def done_jobs_without_segments(self) -> list[int]:
        """Done transcription jobs of this host (whose transcripts this host stored) that
        have no rows. Enrolments are not among them: they store a voice, never a transcript."""
        has_rows = exists(select(segments.c.id).where(segments.c.job_id == jobs.c.id))
        with self._read() as conn:
            return [int(i) for i in conn.execute(
                select(jobs.c.id).where(jobs.c.state == "done", jobs.c.task == "transcribe",
                                        or_(jobs.c.host == self.host, jobs.c.host.is_(None)),
                                        ~has_rows).order_by(jobs.c.id)).scalars()]

    def search_segments(self, query: SearchQuery, *, speaker_key: str | None = None, since: dt.datetime | None = None,
                        until: dt.datetime | None = None, job_id: int | None = None,
                        limit: int = 20) -> tuple[list[SegmentMatch], bool]:
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
                oldest = rows[-1].job_id
                newer = [r for r in rows if r.job_id != oldest]
                first_lo = max(lo, oldest * SEGMENT_ID_STRIDE)
                first_hi = min(hi, oldest * SEGMENT_ID_STRIDE + SEGMENT_ID_STRIDE - 1)
                rows = newer + self._hit_rows(conn, query, lo=first_lo, hi=first_hi, limit=limit - len(newer),
                                              newest_first=False, **filters)
        rows.sort(key=lambda r: (-r.job_id, r.idx))
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
                  until: dt.datetime | None) -> list[SegmentMatch]:
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
            return [SegmentMatch.from_row(r) for r in conn.execute(statement).mappings()]
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
        return [SegmentMatch.from_row(r) for r in conn.execute(statement, params).mappings()]

    def trigram_index_covers_cjk(self) -> bool:
        """False where pg_trgm cannot index Chinese characters (a database whose LC_CTYPE
        is C): searches then still find everything, but by reading every segment."""
        if not self.is_postgres:
            return True
        if self._trigram_cjk is None:
            with self._read() as conn:
                self._trigram_cjk = bool(conn.execute(text("SELECT cardinality(show_trgm('中文字')) > 0")).scalar())
        return self._trigram_cjk
