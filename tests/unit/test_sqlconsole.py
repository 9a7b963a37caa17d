"""`spkd sql` writes nothing anywhere and stops: the authorizer, the attach limit, the
time limit and Ctrl-C, on a real SQLite file (FTS5 tables included) and on a real
PostgreSQL server (skips, saying why, where none can be started)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.store import db
from daemon.errors import ReadOnlyError
from daemon.store.sqlconsole import query_readonly

REPO = Path(__file__).resolve().parents[2]
FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


@pytest.fixture()
def sqlite_db(tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "state" / "spkd.db"
    url = f"sqlite:///{path}"
    db.migrate(url)
    conn = sqlite3.connect(path)
    # An FTS5 table like the one for searching transcripts (trigram: substrings, Chinese too).
    conn.execute("CREATE VIRTUAL TABLE segments_search USING fts5(text, speaker UNINDEXED, tokenize='trigram')")
    conn.executemany("INSERT INTO segments_search(text, speaker) VALUES (?, ?)",
                     [("我们今天开会讨论项目进度", "Speaker1"), ("the release is next week", "Speaker2")])
    conn.commit()
    conn.close()
    return url, path


def test_fts5_tables_their_functions_and_shadow_tables_can_be_read(sqlite_db):
    url, _ = sqlite_db
    columns, rows = query_readonly(url, "SELECT speaker, highlight(segments_search, 0, '[', ']'), "
                                        "snippet(segments_search, 0, '<', '>', '…', 4), bm25(segments_search) "
                                        "FROM segments_search WHERE segments_search MATCH '开会讨论' ORDER BY rank")
    assert columns[0] == "speaker" and rows[0][:2] == ("Speaker1", "我们今天[开会讨论]项目进度")
    assert "<开会讨论>" in rows[0][2]
    _, rows = query_readonly(url, "SELECT text FROM segments_search WHERE text LIKE '%release%'")
    assert rows == [("the release is next week",)]
    _, rows = query_readonly(url, "SELECT count(*) FROM segments_search_data")  # a shadow table
    assert rows[0][0] > 0
    _, rows = query_readonly(url, "PRAGMA table_info(jobs)")
    assert "source_name" in {r[1] for r in rows}


@pytest.mark.parametrize("statement", [
    "ATTACH DATABASE '{dir}/attached.db' AS other",
    "VACUUM INTO '{dir}/copy.db'",
    "PRAGMA query_only = OFF",
    "PRAGMA journal_mode = DELETE",
    "DELETE FROM jobs",
    "INSERT INTO segments_search(text) VALUES ('x')",
    "CREATE TABLE x(a)",
    "CREATE TEMP TABLE x(a)",
    "SELECT load_extension('/tmp/evil')",
])
def test_statements_that_would_write_anywhere_are_refused_and_create_nothing(sqlite_db, tmp_path, statement):
    url, path = sqlite_db
    before = path.read_bytes()
    with pytest.raises(ReadOnlyError):
        query_readonly(url, statement.format(dir=tmp_path))
    assert not (tmp_path / "attached.db").exists() and not (tmp_path / "copy.db").exists()
    assert path.read_bytes() == before
    assert query_readonly(url, "SELECT count(*) FROM segments_search")[1] == [(2,)]


def test_a_query_without_end_stops_at_its_time_limit(sqlite_db):
    url, _ = sqlite_db
    started = time.monotonic()
    with pytest.raises(ReadOnlyError, match=r"stopped after 0.5 s \(--timeout\)"):
        query_readonly(url, FOREVER, timeout_seconds=0.5)
    assert time.monotonic() - started < 5


def test_an_endless_stream_of_rows_is_cut_at_max_rows(sqlite_db):
    url, _ = sqlite_db
    columns, rows = query_readonly(url, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                                        "SELECT x FROM c", max_rows=100)
    assert columns == ["x"] and len(rows) == 101  # one more: the caller says there were more


def spkd_sql(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    config = tmp_path / "spkd.json"
    config.write_text(json.dumps({"paths": {"state": "state"}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPKD_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen([sys.executable, "-m", "daemon", "--config", str(config), "sql", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_the_command_stops_at_timeout_and_at_ctrl_c(sqlite_db, tmp_path):
    timed = spkd_sql(tmp_path, "--timeout", "1", FOREVER)
    out, err = timed.communicate(timeout=60)
    assert timed.returncode == 2 and "stopped after 1 s (--timeout)" in err
    interrupted = spkd_sql(tmp_path, "--timeout", "0", FOREVER)
    time.sleep(8)  # well inside the statement (the CLI took over 3 s to start on a loaded machine)
    assert interrupted.poll() is None
    sent = time.monotonic()
    interrupted.send_signal(signal.SIGINT)
    interrupted.communicate(timeout=30)
    assert interrupted.returncode == 130 and time.monotonic() - sent < 10
    many = spkd_sql(tmp_path, "--max-rows", "3", "SELECT value FROM json_each('[1,2,3,4,5]')")
    out, err = many.communicate(timeout=60)
    assert many.returncode == 0 and out.split() == ["value", "1", "2", "3"] and "first 3 rows" in err


def test_postgres_statements_stop_at_the_time_limit(postgres_url):
    db.migrate(postgres_url)
    started = time.monotonic()
    with pytest.raises(ReadOnlyError, match=r"stopped after 0.5 s"):
        query_readonly(postgres_url, "SELECT pg_sleep(30)", timeout_seconds=0.5)
    assert time.monotonic() - started < 10
    with pytest.raises(ReadOnlyError, match="read-only"):
        query_readonly(postgres_url, "DELETE FROM jobs")
    assert query_readonly(postgres_url, "SELECT count(*) FROM jobs")[1] == [(0,)]
