"""Migrations on data: the jobs.state CHECK constraint (0004) refuses a state the store
does not know, on SQLite (where adding it rebuilds the table: rows, indexes and
foreign keys must survive) and on PostgreSQL; a running job's progress columns (0007)
arrive empty and go again on downgrade; job and event ids are never given twice (0009: SQLite
AUTOINCREMENT, a rebuild that keeps rows, constraints, indexes and search). Each test gets a
fresh database without schema, on each backend (`empty_url`, tests/conftest.py)."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from daemon import store as st
from daemon.store import db, search
from daemon.store.schema import JOB_STATES, SEGMENT_ID_STRIDE

BEFORE_CHECK = "0003"
WITH_CHECK = "0004"
# Added by 0007: a running job's stage, fraction, estimate, when; where its source was archived.
PROGRESS_PARENT = "0005"  # the revision 0007 follows
PROGRESS_COLUMNS = ("stage", "progress", "eta_seconds", "progress_at", "archive_name")


def alembic_to(url: str, revision: str, *, down: bool = False) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(db.migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", db.normalize_url(url).replace("%", "%%"))
    (command.downgrade if down else command.upgrade)(cfg, revision)


def fill(url: str) -> None:
    """Two jobs (the second a reuse of the first), an event and a worker row, as 0003 knew them."""
    now = dt.datetime(2026, 1, 2, 3, 4, 5)
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            for job_id, state, reused in ((1, "done", None), (2, "done", 1)):
                conn.execute(text(
                    "INSERT INTO jobs (id, source_name, spool_path, output_stem, sha256, size_bytes, state, attempts,"
                    " max_attempts, priority, options, created_at, reused_from, dedup_key)"
                    " VALUES (:id, :name, :spool, :stem, :sha, 3000000000, :state, 1, 3, 0, '{\"speakers\": 2}', :now,"
                    " :reused, 'k')"),
                    {"id": job_id, "name": f"{job_id}.wav", "spool": f"/spool/{job_id}.wav", "stem": str(job_id),
                     "sha": "a" * 64, "state": state, "now": now, "reused": reused})
            conn.execute(text("INSERT INTO job_events (job_id, at, kind, detail) VALUES (1, :now, 'done', '{}')"),
                         {"now": now})
            conn.execute(text("INSERT INTO workers (host, slot, state, jobs_done) VALUES ('h1', 0, 'ready', 7)"))
        if engine.dialect.name == "postgresql":  # explicit ids: move the sequence past them
            with engine.begin() as conn:
                conn.execute(text("SELECT setval('jobs_id_seq', 2)"))
    finally:
        engine.dispose()


def describe(url: str) -> dict[str, object]:
    engine = db.make_engine(url)
    try:
        inspector = inspect(engine)
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(text(
                "SELECT id, source_name, state, size_bytes, reused_from, dedup_key, created_at FROM jobs ORDER BY id"))]
            events = [tuple(r) for r in conn.execute(text("SELECT job_id, kind FROM job_events"))]
            worker_rows = [tuple(r) for r in conn.execute(text("SELECT host, slot, state, jobs_done FROM workers"))]
        return {
            "rows": rows, "events": events, "workers": worker_rows,
            "indexes": sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes("jobs")),
            "foreign_keys": sorted((tuple(fk["constrained_columns"]), fk["referred_table"],
                                    tuple(fk["referred_columns"])) for fk in inspector.get_foreign_keys("jobs")),
            "event_foreign_keys": [fk["referred_table"] for fk in inspector.get_foreign_keys("job_events")],
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns("jobs")],
            "checks": [c["name"] for c in inspector.get_check_constraints("jobs")],
        }
    finally:
        engine.dispose()


def set_state(url: str, state: str) -> None:
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET state = :state WHERE id = 1"), {"state": state})
    finally:
        engine.dispose()


def test_the_check_constraint_keeps_the_data_and_refuses_unknown_states(empty_url):
    alembic_to(empty_url, BEFORE_CHECK)
    fill(empty_url)
    before = describe(empty_url)
    assert before["checks"] == []

    alembic_to(empty_url, WITH_CHECK)  # later revisions add columns and indexes of their own
    after = describe(empty_url)
    assert db.current_revision(empty_url) == WITH_CHECK
    assert after["checks"] == ["ck_jobs_state"]
    for key in ("rows", "events", "workers", "indexes", "foreign_keys", "event_foreign_keys", "columns"):
        assert after[key] == before[key], key
    assert ((("reused_from",), "jobs", ("id",))) in after["foreign_keys"]

    for state in JOB_STATES:
        set_state(empty_url, state)  # every known state is fine
    for bogus in ("bogus", "DONE", ""):
        with pytest.raises(IntegrityError):
            set_state(empty_url, bogus)
    engine = db.make_engine(empty_url)
    try:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("INSERT INTO jobs (source_name, spool_path, output_stem, state, attempts, max_attempts,"
                              " priority, created_at) VALUES ('x', '/x', 'x', 'lost', 0, 3, 0, :now)"),
                         {"now": dt.datetime(2026, 1, 1)})
        with pytest.raises(IntegrityError), engine.begin() as conn:  # foreign keys still enforced
            conn.execute(text("INSERT INTO job_events (job_id, at, kind) VALUES (999, :now, 'x')"),
                         {"now": dt.datetime(2026, 1, 1)})
    finally:
        engine.dispose()


def test_the_check_constraint_goes_again_on_downgrade(empty_url):
    db.migrate(empty_url)
    fill(empty_url)
    alembic_to(empty_url, BEFORE_CHECK, down=True)
    assert describe(empty_url)["checks"] == []
    set_state(empty_url, "bogus")  # nothing refuses it any more
    assert describe(empty_url)["rows"][0][2] == "bogus"


def test_the_progress_columns_arrive_empty_and_go_again_on_downgrade(empty_url):
    alembic_to(empty_url, PROGRESS_PARENT)
    fill(empty_url)
    before = describe(empty_url)
    alembic_to(empty_url, "0007")
    after = describe(empty_url)
    added = [c for c in after["columns"] if c[0] in PROGRESS_COLUMNS]
    assert [c[0] for c in added] == list(PROGRESS_COLUMNS) and all(nullable for _, _, nullable in added)
    assert after["rows"] == before["rows"] and after["checks"] == ["ck_jobs_state"]
    engine = db.make_engine(empty_url)
    try:
        with engine.connect() as conn:
            values = conn.execute(text("SELECT " + ", ".join(PROGRESS_COLUMNS) + " FROM jobs")).all()
        assert values and all(all(v is None for v in row) for row in values)
    finally:
        engine.dispose()
    alembic_to(empty_url, PROGRESS_PARENT, down=True)
    assert describe(empty_url)["columns"] == before["columns"]


def test_the_voice_library_arrives_every_earlier_job_is_a_transcription_and_it_goes_again(empty_url):
    alembic_to(empty_url, "0007")
    fill(empty_url)
    before = describe(empty_url)
    db.migrate(empty_url)
    after = describe(empty_url)
    assert after["rows"] == before["rows"]
    assert sorted(after["checks"]) == ["ck_jobs_state", "ck_jobs_task"]
    engine = db.make_engine(empty_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT task FROM jobs ORDER BY id")).scalars().all() == ["transcribe"] * 2
        assert {"voices", "voice_samples"} <= set(inspect(engine).get_table_names())
        now = dt.datetime(2026, 12, 2)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO voices (id, name, created_at) VALUES (1, '王总', :now)"), {"now": now})
        for bad in ("UPDATE jobs SET task = 'bogus' WHERE id = 1",
                    "INSERT INTO voices (name, created_at) VALUES ('王总', :now)",  # names are unique
                    "INSERT INTO voice_samples (voice_id, embedding, model_name, dimension, speech_seconds, origin,"
                    " created_at) VALUES (1, '[1.0]', 'cam++', 1, 12.0, 'elsewhere', :now)",
                    "INSERT INTO voice_samples (voice_id, embedding, model_name, dimension, speech_seconds, origin,"
                    " created_at) VALUES (99, '[1.0]', 'cam++', 1, 12.0, 'cli', :now)"):  # no such voice
            with pytest.raises(IntegrityError), engine.begin() as conn:
                conn.execute(text(bad), {"now": now})
    finally:
        engine.dispose()
    alembic_to(empty_url, "0007", down=True)
    assert describe(empty_url)["columns"] == before["columns"]
    engine = db.make_engine(empty_url)
    try:
        assert not {"voices", "voice_samples"} & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


# --- 0009: job and event ids are never given twice (SQLite AUTOINCREMENT) ------------------

AUTOINCREMENT_PARENT = "0008"
AUTOINCREMENT = "0009"
# The tables 0009 rebuilds with AUTOINCREMENT.
REBUILT = ("jobs", "job_events")


def sqlite_schema(url: str) -> dict[str, str]:
    """sqlite_master's SQL of every table, index and trigger spkd made, by name."""
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"
                                 " AND name NOT IN ('alembic_version', 'sqlite_sequence')").fetchall())
    finally:
        conn.close()


def table_shape(sql: str) -> tuple[str, list[str], list[str]]:
    """A CREATE TABLE with AUTOINCREMENT set aside: its name (unquoted), its column
    definitions in order, and its table constraints in any order (batch mode copies
    them from a set), the primary key as a table constraint either way."""
    head, _, body = sql.partition("(")
    lines = [line.strip().rstrip(",").strip() for line in body.rsplit(")", 1)[0].splitlines() if line.strip()]
    table_level = ("CONSTRAINT ", "FOREIGN KEY", "PRIMARY KEY", "UNIQUE")
    columns = [line for line in lines if not line.startswith(table_level)]
    constraints = [line for line in lines if line.startswith(table_level)]
    for i, column in enumerate(columns):
        if column.endswith(" PRIMARY KEY AUTOINCREMENT"):
            columns[i] = column.removesuffix(" PRIMARY KEY AUTOINCREMENT")
            constraints.append(f"PRIMARY KEY ({column.split()[0]})")
    return head.replace('"', "").strip(), columns, sorted(constraints)


def fill_search(url: str) -> None:
    """A third, done job with two searchable segments; a voice sample of job 5, an
    enrolment that was removed (voice_samples.job_id has no foreign key); a second event."""
    now = dt.datetime(2026, 1, 3)
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO jobs (id, source_name, spool_path, output_stem, state, attempts, max_attempts, priority,"
                " created_at, task) VALUES (3, '3.wav', '/spool/3.wav', '3', 'done', 1, 3, 0, :now, 'transcribe')"),
                {"now": now})
            for idx, words in enumerate(("讨论下周的预算草案", "Budget review NEXT week")):
                conn.execute(text(
                    "INSERT INTO segments (id, job_id, idx, start_seconds, end_seconds, speaker, text, folded_text,"
                    " speaker_key) VALUES (:id, 3, :idx, :start, :end, '王总', :text, :folded, :key)"),
                    {"id": 3 * SEGMENT_ID_STRIDE + idx, "idx": idx, "start": idx * 2.0, "end": idx * 2.0 + 1.5,
                     "text": words, "folded": search.fold(words), "key": search.speaker_key("王总")})
            conn.execute(text("INSERT INTO job_events (job_id, at, kind, detail) VALUES (3, :now, 'done', '{}')"),
                         {"now": now})
            conn.execute(text("INSERT INTO voices (id, name, created_at) VALUES (1, '王总', :now)"), {"now": now})
            conn.execute(text(
                "INSERT INTO voice_samples (voice_id, embedding, model_name, dimension, speech_seconds, origin, job_id,"
                " created_at) VALUES (1, '[1.0]', 'cam++', 1, 12.0, 'folder', 5, :now)"), {"now": now})
    finally:
        engine.dispose()


def add_job(url: str, name: str) -> int:
    """A new queued job (the id the database picks) with a `queued` event; returns the job's id."""
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            job_id = conn.execute(text(
                "INSERT INTO jobs (source_name, spool_path, output_stem, state, attempts, max_attempts, priority,"
                " created_at) VALUES (:name, :spool, :name, 'queued', 0, 3, 0, :now) RETURNING id"),
                {"name": name, "spool": f"/spool/{name}", "now": dt.datetime(2026, 1, 4)}).scalar_one()
            conn.execute(text("INSERT INTO job_events (job_id, at, kind) VALUES (:id, :now, 'queued')"),
                         {"id": job_id, "now": dt.datetime(2026, 1, 4)})
        return int(job_id)
    finally:
        engine.dispose()


def drop_job(url: str, job_id: int) -> None:
    """The job with its segments and events, as `spkd remove` and retention delete them."""
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            for statement in ("DELETE FROM segments WHERE job_id = :id", "DELETE FROM job_events WHERE job_id = :id",
                              "DELETE FROM jobs WHERE id = :id"):
                conn.execute(text(statement), {"id": job_id})
    finally:
        engine.dispose()


def max_event_id(url: str) -> int:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT coalesce(max(id), 0) FROM job_events")).scalar_one())
    finally:
        engine.dispose()


def found(url: str, query: str) -> list[tuple[int, int]]:
    """(job, idx) of the segments the store's search finds for `query`."""
    store = st.Store(url)
    try:
        return [(m.job_id, m.idx) for m in store.search_segments(search.parse_query(query))[0]]
    finally:
        store.close()


@pytest.mark.backends("sqlite")
def test_autoincrement_rebuild_keeps_rows_constraints_indexes_and_search(empty_url):
    alembic_to(empty_url, AUTOINCREMENT_PARENT)
    fill(empty_url)
    fill_search(empty_url)
    before, schema_before = describe(empty_url), sqlite_schema(empty_url)
    events_before = max_event_id(empty_url)
    assert found(empty_url, "预算") == [(3, 0)] and found(empty_url, "next week") == [(3, 1)]

    alembic_to(empty_url, AUTOINCREMENT)
    after, schema_after = describe(empty_url), sqlite_schema(empty_url)
    for key in ("rows", "events", "workers", "indexes", "foreign_keys", "event_foreign_keys", "columns"):
        assert after[key] == before[key], key
    assert sorted(after["checks"]) == sorted(before["checks"]) == ["ck_jobs_state", "ck_jobs_task"]
    # sqlite_master: the two tables differ by AUTOINCREMENT alone; every index, trigger
    # (the full-text ones on segments) and other table is the very same SQL.
    assert set(schema_after) == set(schema_before)
    for name in REBUILT:
        assert "AUTOINCREMENT" not in schema_before[name] and "AUTOINCREMENT" in schema_after[name]
        assert table_shape(schema_after[name]) == table_shape(schema_before[name]), name
    assert {n: s for n, s in schema_after.items() if n not in REBUILT} == \
        {n: s for n, s in schema_before.items() if n not in REBUILT}
    conn = sqlite3.connect(empty_url.removeprefix("sqlite:///"))
    try:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.execute("INSERT INTO segments_fts(segments_fts) VALUES ('integrity-check')")
        # seeded past job 5, which only a voice sample still names
        assert dict(conn.execute("SELECT name, seq FROM sqlite_sequence")) == {"jobs": 5, "job_events": events_before}
    finally:
        conn.close()

    db.migrate(empty_url)  # whatever later revisions add; the store reads the head
    assert found(empty_url, "预算") == [(3, 0)] and found(empty_url, "next week") == [(3, 1)]

    # The newest job goes with its rows: neither its id nor its events' ids are given again.
    drop_job(empty_url, 3)
    assert found(empty_url, "预算") == []
    new_id = add_job(empty_url, "new.wav")
    assert new_id == 6
    assert max_event_id(empty_url) == events_before + 1
    engine = db.make_engine(empty_url)
    try:
        for bad in ("UPDATE jobs SET state = 'lost' WHERE id = 6",  # CHECK constraints kept
                    "UPDATE jobs SET task = 'bogus' WHERE id = 6",
                    "INSERT INTO job_events (job_id, at, kind) VALUES (999, :now, 'x')",  # foreign keys kept
                    "INSERT INTO segments (id, job_id, idx, start_seconds, end_seconds, speaker, text, folded_text,"
                    " speaker_key) VALUES (1, 999, 0, 0, 1, 's', 't', 't', 's')",
                    "UPDATE jobs SET reused_from = 999 WHERE id = 6"):
            with pytest.raises(IntegrityError), engine.begin() as conn:
                conn.execute(text(bad), {"now": dt.datetime(2026, 1, 1)})
    finally:
        engine.dispose()


def test_job_and_event_ids_are_never_given_twice(empty_url):
    """On each backend: after the newest job went with its events, the next job and event
    get ids above every id given before (PostgreSQL's sequences always did)."""
    db.migrate(empty_url)
    fill(empty_url)
    if empty_url.startswith("sqlite"):
        for table in REBUILT:
            assert "AUTOINCREMENT" in sqlite_schema(empty_url)[table], table  # later rebuilds must keep it
    first = add_job(empty_url, "a.wav")
    events = max_event_id(empty_url)
    drop_job(empty_url, first)
    assert add_job(empty_url, "b.wav") == first + 1
    assert max_event_id(empty_url) == events + 1


def test_autoincrement_goes_again_on_downgrade_and_comes_back(empty_url, backend):
    alembic_to(empty_url, AUTOINCREMENT_PARENT)
    fill(empty_url)
    plain = sqlite_schema(empty_url) if backend == "sqlite" else {}
    before = describe(empty_url)
    alembic_to(empty_url, AUTOINCREMENT)
    alembic_to(empty_url, AUTOINCREMENT_PARENT, down=True)
    assert db.current_revision(empty_url) == AUTOINCREMENT_PARENT
    after = describe(empty_url)
    for key in ("rows", "events", "workers", "indexes", "foreign_keys", "event_foreign_keys", "columns"):
        assert after[key] == before[key], key
    if backend == "sqlite":
        schema = sqlite_schema(empty_url)
        assert set(schema) == set(plain) and not any("AUTOINCREMENT" in sql for sql in schema.values())
        for name in REBUILT:
            assert table_shape(schema[name]) == table_shape(plain[name]), name
        conn = sqlite3.connect(empty_url.removeprefix("sqlite:///"))
        try:
            assert conn.execute("SELECT count(*) FROM sqlite_sequence").fetchone() == (0,)  # the rows went too
        finally:
            conn.close()
    db.migrate(empty_url)  # and up again
    assert describe(empty_url)["rows"] == before["rows"]
    assert add_job(empty_url, "c.wav") == 3
