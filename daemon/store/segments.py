"""Segments and full-text search: what was said, as rows.

Written with the job's `done` (complete, add_reused), replaced when speakers are
renamed, deleted with the job by retention. On SQLite the FTS5 table `segments_fts`
follows `segments` through triggers (see migration 0005); the index of unigrams and
bigrams, `segments_grams` (migration 0010), is written here beside the rows
(`write_segments`, `delete_segments`), since SQL cannot cut a text into grams. The
rules that are not SQL (folding, grams, what a query means) live in
daemon/store/search.py.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from sqlalchemy import Connection, delete, exists, func, inspect, or_, select, text, update

from daemon.store.base import StoreBase
from daemon.store.db import translate_errors
from daemon.store.rows import SearchBackfill, SegmentMatch, utcnow
from daemon.store.schema import SEGMENT_ID_STRIDE, jobs, search_backfill, segments
from daemon.store.search import LIKE_ESCAPE, SearchQuery, fold, fts5_string, gram_document, gram_token, speaker_token
from daemon.store.search import speaker_key as key_of_speaker

if TYPE_CHECKING:
    from daemon.transcript import Transcript

__all__ = ["GRAMS_BACKFILL", "PG_GRAMS_INDEX", "SegmentStore", "backfill_batch", "delete_segments", "index_grams",
           "insert_segments", "segment_rows", "within_segment_budget", "write_segments"]

# The one row of `search_backfill` (migration 0010), and PostgreSQL's index of grams.
GRAMS_BACKFILL = "grams"
PG_GRAMS_INDEX = "ix_segments_grams"
# pg_try_advisory_lock key of the one builder of that index ("spkg").
GRAMS_LOCK_KEY = 0x73706B67
# PostgreSQL, 1-2 character queries: how many of the newest rows are compared by LIKE
# before the rest is looked up in the GIN index of grams.
PG_NEAR_ROWS = 10_000
# ... and the rest of the range in windows of jobs, newest first, each this many times the
# last: a string too rare to fill the page from the newest rows may still match thousands of
# rows further back, and one bitmap over the whole range fetches every one of them from the
# heap before LIMIT (0.5 s at 10,000 hours); a window fetches only its own.
PG_FIRST_WINDOW_JOBS = 64
PG_WINDOW_GROWTH = 8
# Planner settings off for that look-up: a bitmap scan of the index, no row-by-row walk, no
# parallel workers or JIT (starting them costs more than the scan; spkd_grams' COST invites them).
PG_BITMAP_ONLY = {"enable_indexscan": "off", "enable_seqscan": "off", "jit": "off",
                  "max_parallel_workers_per_gather": "0"}
# How long one batch of the backfill may hold SQLite's write lock (the daemon's writers wait that long).
BACKFILL_BATCH_SECONDS = 0.2
# Segments the backfill indexes per second, as `python -m bench search --quick` measured it on a
# busy 2-core VM (BENCHMARKS.md): `spkd db upgrade`'s estimate before it starts (it then says
# what it measures itself).
BACKFILL_ROWS_PER_SECOND = {"sqlite": 10_000, "postgresql": 3_500}
# Rows per INSERT statement on SQLite (insert_segments): 9 columns each, within SQLite's
# 32,766 variables of a statement.
SQLITE_INSERT_ROWS = 1000


def segment_rows(job_id: int, transcript: Transcript | None) -> list[dict[str, Any]]:
    """One row per segment; the speaker as every format shows it (its name, else its label)."""
    if transcript is None:
        return []
    if len(transcript.segments) > SEGMENT_ID_STRIDE:
        raise ValueError(f"job {job_id}: {len(transcript.segments)} segments, more than one job can hold "
                         f"({SEGMENT_ID_STRIDE})")
    rows = []
    keys: dict[str, str] = {}  # a recording has a few speakers and hundreds of segments
    for idx, seg in enumerate(transcript.segments):
        speaker = transcript.speaker_display(seg.speaker)
        key = keys.get(speaker)
        if key is None:
            key = keys[speaker] = key_of_speaker(speaker)
        rows.append({"id": job_id * SEGMENT_ID_STRIDE + idx, "job_id": job_id, "idx": idx,
                     "start_seconds": float(seg.start), "end_seconds": float(seg.end), "speaker": speaker,
                     "text": seg.text, "folded_text": fold(seg.text), "speaker_key": key})
    return rows


def write_segments(conn: Connection, job_id: int, transcript: Transcript | None) -> int:
    """The job's rows become exactly `transcript`'s segments (replacing any it had)."""
    rows = segment_rows(job_id, transcript)
    delete_segments(conn, [job_id])
    if rows:
        insert_segments(conn, rows)
        index_grams(conn, rows)
    return len(rows)


def insert_segments(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """`rows` into `segments`, in as few statements as the database allows, since each
    costs more than its rows (BENCHMARKS.md, issue 28). SQLite: multi-row INSERTs of
    SQLITE_INSERT_ROWS rows, not one statement per row, which made segments_fts's trigger
    flush FTS5's pending terms to disk after every row (a new index segment each, then
    merges: a 1-hour job's Store.complete took 550 ms of CPU more than without segments at
    1,000 hours, now 55). PostgreSQL: one INSERT … SELECT from one array per column (about
    half the server's time of a statement per row, GIN indexes aside)."""
    names = [c.name for c in segments.columns]
    if conn.dialect.name != "sqlite":
        compile_type = conn.dialect.type_compiler_instance.process
        arrays = ", ".join(f"CAST(:{c.name} AS {compile_type(c.type)}[])" for c in segments.columns)
        conn.execute(text(f"INSERT INTO segments ({', '.join(names)}) SELECT * FROM unnest({arrays})"),
                     {n: [r[n] for r in rows] for n in names})
        return
    one = "(" + ", ".join("?" * len(names)) + ")"
    head = f"INSERT INTO segments ({', '.join(names)}) VALUES "
    for at in range(0, len(rows), SQLITE_INSERT_ROWS):
        part = rows[at:at + SQLITE_INSERT_ROWS]
        conn.exec_driver_sql(head + ", ".join([one] * len(part)), tuple(r[n] for r in part for n in names))


def _pending(conn: Connection) -> tuple[int, int] | None:
    """SQLite: the ids (done_id, last_id] the backfill has yet to index, or None."""
    row = conn.execute(select(search_backfill.c.done_id, search_backfill.c.last_id)
                       .where(search_backfill.c.name == GRAMS_BACKFILL)).first()
    return (int(row[0]), int(row[1])) if row is not None else None


def _grams_rows(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]]:
    pending = _pending(conn)
    return [(int(r["id"]), gram_document(r["folded_text"], r["speaker_key"])) for r in rows
            if pending is None or not pending[0] < r["id"] <= pending[1]]


def index_grams(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """SQLite: `rows` (id, folded_text, speaker_key) into `segments_grams`, but for those
    the backfill has yet to reach (it indexes them when it does). PostgreSQL's index is
    over an expression of the row and follows it by itself."""
    if conn.dialect.name != "sqlite" or not rows:
        return
    docs = _grams_rows(conn, rows)
    if docs:
        conn.exec_driver_sql("INSERT INTO segments_grams(rowid, grams) VALUES (?, ?)", docs)


def delete_segments(conn: Connection, job_ids: Sequence[int]) -> None:
    """The jobs' rows, and on SQLite their entries of `segments_grams` (a contentless
    table: an entry goes by being given its document again)."""
    if not job_ids:
        return
    if conn.dialect.name == "sqlite":
        old = conn.execute(select(segments.c.id, segments.c.folded_text, segments.c.speaker_key)
                           .where(segments.c.job_id.in_(job_ids))).mappings().all()
        docs = _grams_rows(conn, old)
        if docs:
            conn.exec_driver_sql("INSERT INTO segments_grams(segments_grams, rowid, grams) VALUES ('delete', ?, ?)",
                                 docs)
    conn.execute(delete(segments).where(segments.c.job_id.in_(job_ids)))


def backfill_batch(conn: Connection, limit: int) -> SearchBackfill | None:
    """SQLite: index the next `limit` rows the backfill has not reached, in `conn`'s
    transaction; what is left (None: the index is whole, the state row gone)."""
    state = conn.execute(select(search_backfill).where(search_backfill.c.name == GRAMS_BACKFILL)).mappings().first()
    if state is None:
        return None
    rows = conn.execute(select(segments.c.id, segments.c.folded_text, segments.c.speaker_key)
                        .where(segments.c.id > state["done_id"], segments.c.id <= state["last_id"])
                        .order_by(segments.c.id).limit(limit)).mappings().all()
    if rows:
        conn.exec_driver_sql("INSERT INTO segments_grams(rowid, grams) VALUES (?, ?)",
                             [(int(r["id"]), gram_document(r["folded_text"], r["speaker_key"])) for r in rows])
    done_id = int(rows[-1]["id"]) if len(rows) == limit else int(state["last_id"])
    done_rows = int(state["done_rows"]) + len(rows)
    where = search_backfill.c.name == GRAMS_BACKFILL
    if done_id >= state["last_id"]:
        conn.execute(delete(search_backfill).where(where))
        return None
    conn.execute(update(search_backfill).where(where).values(done_id=done_id, done_rows=done_rows))
    return SearchBackfill(done=done_rows, total=max(done_rows, int(state["total_rows"])))


def _windows(span: tuple[int, int], newest_first: bool) -> Iterator[tuple[int, int]]:
    """`span` (segment ids, both ends included) cut into ranges of whole jobs, from its
    newest end when `newest_first` (else its oldest), PG_FIRST_WINDOW_JOBS jobs wide and
    PG_WINDOW_GROWTH times wider each time after."""
    first, last = span
    width = PG_FIRST_WINDOW_JOBS * SEGMENT_ID_STRIDE
    while first <= last:
        if newest_first:
            start = max(first, (last // SEGMENT_ID_STRIDE) * SEGMENT_ID_STRIDE - width + SEGMENT_ID_STRIDE)
            yield start, last
            last = start - 1
        else:
            end = min(last, (first // SEGMENT_ID_STRIDE) * SEGMENT_ID_STRIDE + width - 1)
            yield first, end
            first = end + 1
        width *= PG_WINDOW_GROWTH


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
            filters = dict(speaker_key=speaker_key, since=since, until=until,
                           grams=query.short and self._grams_ready(conn))
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
                  speaker_key: str | None, since: dt.datetime | None, until: dt.datetime | None,
                  grams: bool) -> list[SegmentMatch]:
        s = segments
        columns = (s.c.id, s.c.job_id, s.c.idx, s.c.start_seconds, s.c.end_seconds, s.c.speaker, s.c.text,
                   jobs.c.source_name, jobs.c.created_at.label("received_at"))
        if self.is_postgres or not (query.indexed or grams):
            # pg_trgm serves LIKE itself; on SQLite a 1-2 character query is compared with
            # every segment only while the index of grams is being filled in.
            def walk(matching: Any, first: int, last: int, count: int) -> list[SegmentMatch]:
                statement = (select(*columns).select_from(s.join(jobs, jobs.c.id == s.c.job_id))
                             .where(matching, s.c.id.between(first, last))
                             .order_by(s.c.id.desc() if newest_first else s.c.id.asc()).limit(count))
                if speaker_key is not None:
                    statement = statement.where(s.c.speaker_key == speaker_key)
                if since is not None:
                    statement = statement.where(jobs.c.created_at >= since)
                if until is not None:
                    statement = statement.where(jobs.c.created_at < until)
                return [SegmentMatch.from_row(r) for r in conn.execute(statement).mappings()]

            like = s.c.folded_text.like(query.like_pattern, escape=LIKE_ESCAPE)
            if not grams:
                return walk(like, lo, hi, limit)
            # PostgreSQL, 1-2 characters: the newest PG_NEAR_ROWS rows of the range are
            # compared by LIKE (a common string fills the page there, cheaply); only the
            # rest of the range is looked up in the GIN index of grams, as bitmaps, window
            # by window (_windows), never by evaluating spkd_grams row by row, which the
            # planner would otherwise do for a string it thinks common.
            edge = conn.execute(select(s.c.id).where(s.c.id.between(lo, hi))
                                .order_by(s.c.id.desc() if newest_first else s.c.id.asc())
                                .offset(PG_NEAR_ROWS - 1).limit(1)).scalar()
            if edge is None:
                return walk(like, lo, hi, limit)
            rows = walk(like, edge, hi, limit) if newest_first else walk(like, lo, edge, limit)
            if len(rows) < limit:
                gram = text("spkd_grams(segments.folded_text) @> ARRAY[CAST(:gram AS text)]").bindparams(
                    gram=query.folded)
                for setting, value in PG_BITMAP_ONLY.items():  # for this statement only
                    conn.exec_driver_sql(f"SET LOCAL {setting} = {value}")
                try:
                    for window in _windows((lo, edge - 1) if newest_first else (edge + 1, hi), newest_first):
                        rows += walk(gram, *window, limit - len(rows))
                        if len(rows) >= limit:
                            break
                finally:
                    for setting in PG_BITMAP_ONLY:
                        conn.exec_driver_sql(f"SET LOCAL {setting} TO DEFAULT")
            return rows
        # FTS5 first (CROSS JOIN keeps SQLite from reordering the join), walking its
        # matches in rowid order, which it does without sorting; a speaker is a second
        # phrase of the same MATCH, so the index intersects the two itself. The grams'
        # table holds a segment's grams and its speaker key in one column, as trigrams
        # (daemon.store.search.gram_document), and each hit's text and key are checked.
        params: dict[str, Any] = {"lo": lo, "hi": hi, "limit": limit}
        if grams:
            table = "segments_grams"
            match = fts5_string(gram_token(query.folded))
            if speaker_key is not None:
                match += " AND " + fts5_string(speaker_token(speaker_key))
            checks = f" AND s.folded_text LIKE :pattern ESCAPE '{LIKE_ESCAPE}'"
            params["pattern"] = query.like_pattern
            if speaker_key is not None:
                checks += " AND s.speaker_key = :speaker_key"
                params["speaker_key"] = speaker_key
        else:
            table, checks = "segments_fts", ""
            match = "{folded_text} : " + query.fts5_phrase
            if speaker_key is not None:
                match += " AND {speaker_key} : " + fts5_string(speaker_key)
        params["match"] = match
        sql = ("SELECT s.id, s.job_id, s.idx, s.start_seconds, s.end_seconds, s.speaker, s.text, j.source_name, "
               f"j.created_at AS received_at FROM {table} CROSS JOIN segments AS s ON s.id = {table}.rowid "
               "CROSS JOIN jobs AS j ON j.id = s.job_id "
               f"WHERE {table} MATCH :match AND {table}.rowid BETWEEN :lo AND :hi{checks}")
        if since is not None:
            sql += " AND j.created_at >= :since"
            params["since"] = since
        if until is not None:
            sql += " AND j.created_at < :until"
            params["until"] = until
        sql += f" ORDER BY {table}.rowid {'DESC' if newest_first else 'ASC'} LIMIT :limit"
        statement = text(sql).columns(*columns)
        return [SegmentMatch.from_row(r) for r in conn.execute(statement, params).mappings()]

    # --- the index of grams (short queries) and its backfill --------------------------

    def _grams_ready(self, conn: Connection) -> bool:
        """Whether the index of grams is whole (once it is, it stays so for this store)."""
        if not self._grams_whole:
            if not inspect(conn).has_table(search_backfill.name):
                return False  # a schema before migration 0010 (a test's): every row is compared
            self._grams_whole = conn.execute(select(search_backfill.c.name).where(
                search_backfill.c.name == GRAMS_BACKFILL)).first() is None
        return self._grams_whole

    def search_backfill(self) -> SearchBackfill | None:
        """Where migration 0010's backfill stands; None when the index of grams is whole."""
        if self._grams_whole:
            return None
        with self._read() as conn:
            state = conn.execute(select(search_backfill).where(
                search_backfill.c.name == GRAMS_BACKFILL)).mappings().first()
        if state is None:
            self._grams_whole = True
            return None
        return SearchBackfill(done=int(state["done_rows"]), total=int(state["total_rows"]))

    def search_backfill_seconds(self, pending: SearchBackfill) -> float:
        """About how long the rest of the backfill will take (BACKFILL_ROWS_PER_SECOND)."""
        rate = BACKFILL_ROWS_PER_SECOND["postgresql" if self.is_postgres else "sqlite"]
        return max(0, pending.total - pending.done) / rate

    def backfill_search_index(self, progress: Callable[[SearchBackfill], None] | None = None, *,
                              batch_seconds: float = BACKFILL_BATCH_SECONDS) -> bool:
        """Finish migration 0010's backfill (False: there was none, or another spkd is
        building PostgreSQL's index), calling `progress`
        as it goes. SQLite: batches of rows in their own short write transactions,
        each holding the lock about `batch_seconds`, with a pause between, so that the
        daemon's writers wait no longer than that; interrupted, the next call goes on
        from the last batch. PostgreSQL: CREATE INDEX CONCURRENTLY, which never blocks
        writes; interrupted, the next call builds it again."""
        if self.search_backfill() is None:
            return False
        if self.is_postgres:
            if not self._build_pg_grams_index(progress):
                return False  # another spkd builds it
        else:
            batch = 1000
            while True:
                started = time.monotonic()
                with self._write() as conn:
                    state = backfill_batch(conn, batch)
                took = time.monotonic() - started
                if state is None:
                    break
                if progress is not None:
                    progress(state)
                batch = max(100, min(100_000, 2 * batch, int(batch * batch_seconds / max(took, 0.001))))
                time.sleep(max(0.02, took / 4))  # the waiting writers' turn
        self._grams_whole = True
        return True

    def _build_pg_grams_index(self, progress: Callable[[SearchBackfill], None] | None) -> bool:
        total = self.search_backfill()
        assert total is not None
        stop = threading.Event()

        def watch() -> None:
            # The build's own count of the table's blocks read (pg_stat_progress_create_index).
            sql = text("SELECT blocks_done, blocks_total FROM pg_stat_progress_create_index "
                       "WHERE relid = to_regclass('segments')")
            while not stop.wait(2.0):
                try:
                    with self._read() as conn:
                        row = conn.execute(sql).first()
                except Exception:  # noqa: BLE001 - progress is a courtesy
                    continue
                if row is not None and row[1] and progress is not None:
                    progress(SearchBackfill(done=int(total.total * min(1.0, row[0] / row[1])), total=total.total))

        watcher = threading.Thread(target=watch, name="grams-index-progress", daemon=True)
        with translate_errors(), self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # One builder at a time (hosts sharing the database all start one): the others leave it to it.
            if not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": GRAMS_LOCK_KEY}).scalar():
                return False
            try:
                valid = conn.execute(text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
                                     {"name": PG_GRAMS_INDEX}).scalar()
                if valid is False:  # an interrupted build leaves an invalid index behind
                    conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {PG_GRAMS_INDEX}")
                if valid is not True:
                    watcher.start()
                    try:
                        conn.exec_driver_sql("SET maintenance_work_mem = '256MB'")
                        conn.exec_driver_sql(f"CREATE INDEX CONCURRENTLY {PG_GRAMS_INDEX} ON segments "
                                             "USING gin (spkd_grams(folded_text))")
                    finally:
                        conn.exec_driver_sql("RESET maintenance_work_mem")
                        stop.set()
                        watcher.join()
                conn.exec_driver_sql("ANALYZE segments")
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": GRAMS_LOCK_KEY})
        with self._write() as conn:
            conn.execute(delete(search_backfill).where(search_backfill.c.name == GRAMS_BACKFILL))
        return True

    def trigram_index_covers_cjk(self) -> bool:
        """False where pg_trgm cannot index Chinese characters (a database whose LC_CTYPE
        is C): searches then still find everything, but by reading every segment."""
        if not self.is_postgres:
            return True
        if self._trigram_cjk is None:
            with self._read() as conn:
                self._trigram_cjk = bool(conn.execute(text("SELECT cardinality(show_trgm('中文字')) > 0")).scalar())
        return self._trigram_cjk
