"""Migrations on data: the jobs.state CHECK constraint (0004) refuses a state the store
does not know, on SQLite (where adding it rebuilds the table: rows, indexes and
foreign keys must survive) and on PostgreSQL; a running job's progress columns (0007)
arrive empty and go again on downgrade. Each test gets a fresh database without schema,
on each backend (`empty_url`, tests/conftest.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from daemon.store import db
from daemon.store.schema import JOB_STATES

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
