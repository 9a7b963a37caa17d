"""Voice ids are never given twice (issue 26, C3): a job named by a removed voice is not
credited to the next voice enrolled; on SQLite by AUTOINCREMENT (migration 0011),
seeded past every id the database still names; PostgreSQL's sequences never go back."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest
from sqlalchemy import text

from daemon import store as st
from daemon.store import db
from tests.unit.test_migrations import alembic_to, sqlite_schema
from tests.unit.test_voices import a_sample


def test_a_removed_voices_id_is_never_given_to_another(store):
    first, _ = store.add_voice_sample("Wendy", a_sample())
    assert store.remove_voice("Wendy") == 1
    second, _ = store.add_voice_sample("Alice", a_sample())
    assert second != first and second > first
    sample_ids = [s.id for s in store.voice_samples_of()]
    store.remove_voice("Alice")
    _, third_sample = store.add_voice_sample("Bob", a_sample())
    assert third_sample > max(sample_ids)


@pytest.mark.backends("sqlite")
def test_0011_seeds_the_sequences_past_every_id_still_named(empty_url):
    alembic_to(empty_url, "0010")
    engine = db.make_engine(empty_url)
    now = dt.datetime(2026, 1, 1)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO jobs (id, source_name, spool_path, output_stem, state, attempts,"
                              " max_attempts, priority, created_at, task) VALUES (1, 'voices/W/a.wav', '/s/a', 'a',"
                              " 'done', 1, 3, 0, :now, 'enrol')"), {"now": now})
            # voice 7 with sample 9 was enrolled by job 1, then removed: only the event names them
            conn.execute(text("INSERT INTO job_events (job_id, at, kind, detail) VALUES (1, :now, 'done',"
                              " '{\"voice\": \"W\", \"voice_id\": 7, \"sample_id\": 9}')"), {"now": now})
            conn.execute(text("INSERT INTO voices (id, name, created_at) VALUES (2, 'X', :now)"), {"now": now})
            conn.execute(text("INSERT INTO voice_samples (id, voice_id, embedding, model_name, dimension,"
                              " speech_seconds, origin, created_at) VALUES (3, 2, '[1.0]', 'cam++', 1, 12.0, 'cli',"
                              " :now)"), {"now": now})
    finally:
        engine.dispose()
    alembic_to(empty_url, "0011")
    schema = sqlite_schema(empty_url)
    assert "AUTOINCREMENT" in schema["voices"] and "AUTOINCREMENT" in schema["voice_samples"]
    conn = sqlite3.connect(empty_url.removeprefix("sqlite:///"))
    try:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert dict(conn.execute("SELECT name, seq FROM sqlite_sequence WHERE name LIKE 'voice%'")) == {
            "voices": 7, "voice_samples": 9}
    finally:
        conn.close()
    store = st.Store(empty_url)
    try:
        assert store.add_voice_sample("Y", a_sample()) == (8, 10)
    finally:
        store.close()
    alembic_to(empty_url, "0010", down=True)
    schema = sqlite_schema(empty_url)
    assert "AUTOINCREMENT" not in schema["voices"] and "AUTOINCREMENT" not in schema["voice_samples"]
    db.migrate(empty_url)  # and up again
    assert "AUTOINCREMENT" in sqlite_schema(empty_url)["voices"]
