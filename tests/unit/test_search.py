"""Segments in the database and full-text search: the folding and marking rules, and
the store's rows and queries on a real SQLite database and a real PostgreSQL server
(the PostgreSQL cases skip, saying why, where no server can be started)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url

from daemon.jobs import outputs, results
from daemon.store import search
from daemon.store import db
from daemon.store import sqlconsole
from daemon import store as st
from daemon.store.schema import SEGMENT_ID_STRIDE, jobs, segments
from daemon.errors import DatabaseExtensionError, ReadOnlyError, SearchQueryError
from daemon.transcript import Segment, Transcript
from tests.support import postgres
from tests.support.config import make_config, write_config

REPO = Path(__file__).resolve().parents[2]


# --- rules without a database -------------------------------------------------------------

def test_fold_ignores_case_and_width_and_keeps_chinese():
    assert search.fold("ＫＰＩ Kpi kPI") == "kpi kpi kpi"
    assert search.fold("预算，下周？（草案）") == "预算,下周?(草案)"
    assert search.fold("会议。、") == "会议。、"  # not compatibility characters: unchanged
    assert search.fold("Cafe\u0301") == search.fold("CAFÉ") == "café"
    assert search.fold("Straße") == search.fold("STRASSE")


def test_match_spans_mark_the_original_text():
    text = "我们讨论ＫＰＩ，然后 kpi 再说"
    spans = search.match_spans(text, search.fold("kpi"))
    assert search.mark(text, spans, before="[", after="]") == "我们讨论[ＫＰＩ]，然后 [kpi] 再说"
    assert search.match_spans("ﬁle", search.fold("ile")) == ((0, 1 + 2),)  # the ligature is covered whole
    assert search.match_spans("cafe\u0301!", search.fold("CAFÉ")) == ((0, 5),)  # the accent goes with it
    assert search.mark("aaaa", search.match_spans("aaaa", "aa"), before="<", after=">") == "<aaaa>"
    assert search.match_spans("abc", "x") == ()


def test_queries_become_literal_search_terms():
    q = search.parse_query('  say "NEAR" * AND 100%_\\x  ')
    assert q.text == 'say "NEAR" * AND 100%_\\x' and q.folded == 'say "near" * and 100%_\\x'
    assert q.fts5_phrase == '"say ""near"" * and 100%_\\x"'
    assert q.like_pattern == '%say "near" * and 100\\%\\_\\\\x%'
    assert q.indexed and not search.parse_query("预算").indexed
    with pytest.raises(SearchQueryError):
        search.parse_query("   ")


def test_hms_and_date_bounds():
    assert search.hms(0) == "00:00:00" and search.hms(3725.9) == "01:02:05" and search.hms(-1) == "00:00:00"
    since = search.parse_date_bound("2026-11-26", end=False)
    until = search.parse_date_bound("2026-11-26", end=True)
    assert until - since == dt.timedelta(days=1)  # the whole day, in local time
    assert search.parse_date_bound("2026-11-26T08:00:00+08:00", end=True) == dt.datetime(2026, 11, 26, 0, 0)
    with pytest.raises(SearchQueryError, match="not a date"):
        search.parse_date_bound("yesterday", end=False)


# --- the store, on both backends (the `store` fixture of tests/conftest.py) ----------------

def segs(*texts: str, speakers: tuple[int, ...] = (1, 2)) -> tuple[Segment, ...]:
    return tuple(Segment(start=10.0 * i, end=10.0 * i + 4.5, speaker=speakers[i % len(speakers)], text=t)
                 for i, t in enumerate(texts))


def finish(store: st.Store, name: str, segments, *, received: dt.datetime | None = None,
           names: dict[int, str] | None = None) -> int:
    """A job through enqueue → claim → complete, as a worker runs it."""
    job_id = store.enqueue(source_name=name, spool_path=f"/spool/{name}", output_stem=name.rsplit(".", 1)[0],
                           sha256=None, size_bytes=1)
    job = store.claim(slot=0, pid=1, device="cpu", lease_seconds=60)
    assert job is not None and job.id == job_id
    assert store.complete(job_id, pid=1, audio_seconds=60, processing_seconds=1, speakers=2, outputs=[],
                          device="cpu", transcript=Transcript(segments=tuple(segments), audio_seconds=60,
                                                                speaker_names=dict(names or {})))
    if received is not None:
        with store.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(created_at=received))
    return job_id


def found(store: st.Store, query: str, **filters) -> list[tuple[int, int]]:
    return [(h.job_id, h.idx) for h in search.search(store, query, **filters).hits]


def segment_rows(store: st.Store, job_id: int | None = None) -> list[dict]:
    with store.engine.connect() as conn:
        query = "SELECT * FROM segments" + (" WHERE job_id = :j" if job_id is not None else "") + " ORDER BY id"
        return [dict(r) for r in conn.execute(text(query), {"j": job_id}).mappings()]


def fts_rows(store: st.Store) -> int | None:
    """On SQLite: rows in the FTS5 index (after checking it against its content)."""
    if store.is_postgres:
        return None
    with store.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO segments_fts(segments_fts) VALUES ('integrity-check')")
        return conn.exec_driver_sql("SELECT count(*) FROM segments_fts_docsize").scalar()


def test_a_done_jobs_text_is_found_at_its_job_and_times(store):
    other = finish(store, "other.wav", segs("与此无关的句子。", "Nothing here."))
    job_id = finish(store, "team/weekly.m4a", segs("大家好。", "我们讨论一下第三季度的预算，好吗？", "OK, the budget."))
    [hit] = search.search(store, "季度的预").hits
    assert (hit.job_id, hit.idx, hit.source_name) == (job_id, 1, "team/weekly.m4a")
    assert (hit.start_seconds, hit.end_seconds, hit.speaker) == (10.0, 14.5, "Speaker2")
    assert hit.text == "我们讨论一下第三季度的预算，好吗？" and hit.text[slice(*hit.matches[0])] == "季度的预"
    assert isinstance(hit.received_at, dt.datetime)
    assert found(store, "THE BUDGET") == [(job_id, 2)]
    assert found(store, "无关") == [(other, 0)]
    assert found(store, "not said anywhere") == []
    rows = segment_rows(store, job_id)
    assert [(r["idx"], r["speaker"], r["text"]) for r in rows] == [
        (0, "Speaker1", "大家好。"), (1, "Speaker2", "我们讨论一下第三季度的预算，好吗？"), (2, "Speaker1", "OK, the budget.")]
    assert all(r["id"] == job_id * SEGMENT_ID_STRIDE + r["idx"] for r in rows)
    assert fts_rows(store) in (None, 5)


def test_newest_recording_first_then_time_and_every_page_is_exact(store):
    """Against the order computed by hand, for every page size (the index is walked
    from the newest end and stops early; the oldest job on a page must still show its
    first hits)."""
    texts = ["预算表一", "无", "预算表二", "预算表三", "无", "预算表四"]
    jobs = [finish(store, f"r{i}.wav", segs(*texts[i % 3:])) for i in range(4)]
    expected = [(j, idx) for j in reversed(jobs) for idx, t in enumerate(texts[jobs.index(j) % 3:]) if "预算" in t]
    for query in ("预算", "预算表"):  # compared with every segment, and through the index
        for limit in range(1, len(expected) + 2):
            result = search.search(store, query, limit=limit)
            assert [(h.job_id, h.idx) for h in result.hits] == expected[:limit], limit
            assert result.more == (len(expected) > limit)
    long_texts = ["我们的预算表", "无", "我们的预算表格"]
    more_jobs = [finish(store, f"s{i}.wav", segs(*long_texts, "我们的预算表")) for i in range(3)]
    expected = [(j, idx) for j in reversed(more_jobs) for idx in (0, 2, 3)]
    for limit in range(1, len(expected) + 2):
        assert found(store, "们的预算表", limit=limit) == expected[:limit], limit


def test_queries_with_syntax_characters_are_literal(store):
    lines = ['He said "NEAR" twice.', "a*b is not ab", "it's 100% done", "snake_case here", "back\\slash",
             "x AND y", "title: notes", "braces {x} and (y)", "plain words near and far", "100 percent"]
    job_id = finish(store, "syntax.wav", segs(*lines, speakers=(1,)))
    expect = {'"NEAR"': [0], '"near" twice': [0], "a*b": [1], "*": [1], "it's": [2], "'": [2], "100%": [2],
              "%": [2], "snake_case": [3], "_": [3], "\\": [4], "back\\s": [4], "x AND y": [5], "AND": [5, 7, 8],
              "NEAR": [0, 8], "title:": [6], "{x}": [7], "(y)": [7], 'NEAR(" x': [], '"': [0],
              "'; DROP TABLE jobs; --": [], "%%": [], "__": [], "a_b": [], "e_c": [3], "0% d": [2]}
    for query, idxs in expect.items():
        result = search.search(store, query)
        assert [(h.job_id, h.idx) for h in result.hits] == [(job_id, i) for i in idxs], query
    assert store.job(job_id).state == "done" and len(segment_rows(store)) == len(lines)


def test_case_and_width_do_not_matter_on_either_backend(store):
    job_id = finish(store, "mixed.wav", segs("这个ＫＰＩ要重新定，下周 release。", "The Café opens", "Cafe\u0301 again"))
    for query in ("kpi要", "ＫＰＩ", "KPI", "ｋｐｉ要重新", "定,下周", "定，下周 RELEASE"):
        assert found(store, query) == [(job_id, 0)], query
    assert found(store, "CAFÉ") == [(job_id, 1), (job_id, 2)]


def test_grams_are_every_character_and_pair_once():
    assert search.grams("预算预算") == ["预", "算", "预算", "算预"]
    assert search.grams("ai") == ["a", "i", "ai"] and search.grams("x") == ["x"] and search.grams("") == []
    # SQLite's document: every trigram of it stands for one gram (or the speaker), and
    # every gram of the text is one of its trigrams.
    folded, key = "a, b预算", search.speaker_key("Alice")
    document = search.gram_document(folded, key)
    trigrams = {document[i:i + 3] for i in range(len(document) - 2)}
    assert {search.gram_token(g) for g in search.grams(folded)} <= trigrams
    assert search.speaker_token(key) in trigrams and search.speaker_token(key) != search.speaker_token("\x1fbob\x1f")
    assert search.gram_token("算预") not in trigrams and search.gram_token("x") not in trigrams


def test_short_queries_are_answered_from_the_index_without_a_note(store):
    job_id = finish(store, "short.wav", segs("预算", "我", "ＡＢ", "x%y", "讨论 AI 的钱。", 'say "hi", ok'))
    for query, expected in (("预", [0]), ("预算", [0]), ("我", [1]), ("ab", [2]), ("ＡＢ", [2]), ("%", [3]),
                            ("x%", [3]), ("ai", [4]), ("AI", [4]), ("钱", [4]), ("钱。", [4]), ("a,", []),
                            ('"', [5]), ('",', [5]), (",", [5]), ("算预", []), ("ba", []), ("_", []), ("%%", [])):
        result = search.search(store, query)
        assert [(h.job_id, h.idx) for h in result.hits] == [(job_id, i) for i in expected], query
        assert not result.notes, (query, result.notes)
    assert not search.search(store, "x%y").notes
    # Mixed scripts: the trigram path, as every longer query.
    mixed = finish(store, "mixed.wav", segs("下周的 KPI 预算表", "kpi预算"))
    assert found(store, "KPI 预算") == [(mixed, 0)] and found(store, "KPI") == [(mixed, 0), (mixed, 1), (job_id, 4)][:2]


def test_the_index_of_grams_answers_short_queries(store):
    """Taken out of the index, a segment is no longer found by a 1-2 character query:
    the index, not a comparison with every row, answered it."""
    job_id = finish(store, "a.wav", segs("预算要定", "钱不够"))
    assert found(store, "钱") == [(job_id, 1)] and found(store, "预算") == [(job_id, 0)]
    if store.is_postgres:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in conn.execute(text(
                "EXPLAIN SELECT id FROM segments WHERE spkd_grams(folded_text) @> ARRAY['钱'] ORDER BY id DESC")))
        assert "ix_segments_grams" in plan, plan
        return
    with store.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO segments_grams(segments_grams) VALUES ('integrity-check')")
        conn.exec_driver_sql("INSERT INTO segments_grams(segments_grams, rowid, grams) VALUES ('delete', ?, ?)",
                             (job_id * SEGMENT_ID_STRIDE + 1, search.gram_document("钱不够", search.speaker_key(
                                 "Speaker2"))))
    assert found(store, "钱") == [] and found(store, "预算") == [(job_id, 0)]
    assert found(store, "钱不够") == [(job_id, 1)]  # the trigram index still has it


def scan(store: st.Store, query: str, *, speaker: str | None = None, since: dt.datetime | None = None,
         until: dt.datetime | None = None, limit: int = 20) -> tuple[list[tuple[int, int]], bool]:
    """What the search must return, by reading every row in Python: the oracle."""
    folded = search.fold(query.strip())
    with store.engine.connect() as conn:
        rows = conn.execute(select(segments.c.job_id, segments.c.idx, segments.c.folded_text, segments.c.speaker_key,
                                   jobs.c.created_at).join(jobs, jobs.c.id == segments.c.job_id)).all()
    hits = sorted(((r.job_id, r.idx) for r in rows if folded in r.folded_text
                   and (speaker is None or r.speaker_key == search.speaker_key(speaker))
                   and (since is None or r.created_at >= since) and (until is None or r.created_at < until)),
                  key=lambda h: (-h[0], h[1]))
    return hits[:limit], len(hits) > limit


SAMPLE_TEXTS = ("我们讨论一下预算。", "预算不够，钱也不够。", "下周开会", "AI 和 KPI", "ai是什么？", "会议，会议。",
                "我", "钱", "a, b", "OK 好的", "一二三四五六七八九十", "Ａi 全角")


@pytest.mark.parametrize("steps", ["as configured", "small steps"])
def test_short_queries_return_what_a_scan_of_every_row_returns(store, steps, monkeypatch):
    """On PostgreSQL with "small steps", every part of the plan runs on these few rows: the
    near step's LIKE over the newest 4 rows, then the index of grams in windows of 1, 2, 4, …
    jobs (daemon.store.segments.PG_NEAR_ROWS and the windows after it)."""
    import random

    from daemon.store import segments as segment_store

    if steps == "small steps":
        monkeypatch.setattr(segment_store, "PG_NEAR_ROWS", 4)
        monkeypatch.setattr(segment_store, "PG_FIRST_WINDOW_JOBS", 1)
        monkeypatch.setattr(segment_store, "PG_WINDOW_GROWTH", 2)

    rng = random.Random(28)
    people = {1: "张伟", 2: "Bob"}
    for n in range(12):
        texts = [rng.choice(SAMPLE_TEXTS) for _ in range(rng.randint(1, 9))]
        finish(store, f"r{n}.wav", segs(*texts, speakers=(1, 2, 3)), names=people if n % 3 else None,
               received=dt.datetime(2026, 1 + n % 12, 3, 9))
    queries = {"预", "预算", "钱", "会", "会议", "ai", "AI", "a", "，", ",", "。", "k", "不", "够", "不够", "ｏｋ",
               "好", "九十", "x", "全角", "猫", "狗狗", "i "}
    filters = ({}, {"speaker": "张伟"}, {"speaker": "bob"}, {"speaker": "Speaker3"},
               {"since": dt.datetime(2026, 6, 1)}, {"until": dt.datetime(2026, 4, 1)},
               {"since": dt.datetime(2026, 3, 1), "until": dt.datetime(2026, 9, 1), "speaker": "Speaker3"})
    for query in sorted(queries):
        for options in filters:
            for limit in (3, 100):
                result = search.search(store, query, limit=limit, **options)
                assert ([(h.job_id, h.idx) for h in result.hits], result.more) == scan(
                    store, query, limit=limit, **options), (query, options, limit)
                assert not result.notes


def test_the_far_rows_windows_cover_the_range_once_in_whole_jobs():
    import random

    from daemon.store.segments import _windows

    rng = random.Random(7)
    for _ in range(200):
        first = rng.randrange(0, 50 * SEGMENT_ID_STRIDE)
        last = first + rng.randrange(0, 3000 * SEGMENT_ID_STRIDE)
        for newest_first in (True, False):
            windows = list(_windows((first, last), newest_first))
            ordered = windows[::-1] if newest_first else windows
            assert ordered[0][0] == first and ordered[-1][1] == last
            assert all(a[1] + 1 == b[0] and a[0] <= a[1] for a, b in zip(ordered, ordered[1:]))
            inner = [w[0] for w in ordered[1:]]  # every cut falls between two jobs
            assert all(start % SEGMENT_ID_STRIDE == 0 for start in inner)
            jobs_in = [w[1] // SEGMENT_ID_STRIDE - w[0] // SEGMENT_ID_STRIDE + 1 for w in windows[:-1]]
            assert all(b > a for a, b in zip(jobs_in, jobs_in[1:]))  # wider each time


def test_speaker_job_and_date_filters(store):
    old = finish(store, "old.wav", segs("预算表", "预算表"), received=dt.datetime(2025, 1, 10, 12))
    named = (Segment(0, 3, 1, "预算表"), Segment(5, 8, 2, "预算表"))
    new = finish(store, "new.wav", named, received=dt.datetime(2026, 6, 1, 12), names={1: "张伟", 2: "Alice Smith"})
    assert found(store, "预算表") == [(new, 0), (new, 1), (old, 0), (old, 1)]
    assert found(store, "预算表", speaker="张伟") == [(new, 0)]
    assert found(store, "预算表", speaker="alice smith") == [(new, 1)]  # any case, as the text
    assert found(store, "预算", speaker="Speaker2") == [(old, 1)]  # the short path filters alike
    assert found(store, "预算表", speaker="Alice") == []  # a whole speaker, not part of a name
    assert found(store, "预算表", job_id=old) == [(old, 0), (old, 1)]
    assert found(store, "预算表", since=dt.datetime(2026, 1, 1)) == [(new, 0), (new, 1)]
    assert found(store, "预算表", until=dt.datetime(2026, 1, 1)) == [(old, 0), (old, 1)]
    assert found(store, "预算表", since=dt.datetime(2027, 1, 1)) == []
    assert found(store, "预算表", job_id=old, since=dt.datetime(2026, 1, 1)) == []


def test_a_renamed_speaker_is_found_under_the_new_name(store):
    job_id = finish(store, "rename.wav", segs("先说预算。", "再说人员。", "最后说预算。"))
    assert found(store, "说预算", speaker="Speaker1") == [(job_id, 0), (job_id, 2)]
    renamed = Transcript(segments=segs("先说预算。", "再说人员。", "最后说预算。"), audio_seconds=30,
                         speaker_names={1: "王芳"})
    assert store.replace_segments(job_id, renamed) == 3
    assert found(store, "说预算", speaker="王芳") == [(job_id, 0), (job_id, 2)]
    assert found(store, "说预算", speaker="Speaker1") == []
    assert [r["speaker"] for r in segment_rows(store, job_id)] == ["王芳", "Speaker2", "王芳"]
    assert fts_rows(store) in (None, 3)
    assert store.replace_segments(999, renamed) is None  # no such done job


def test_a_duplicate_gets_rows_of_its_own(store):
    first = finish(store, "a.wav", segs("重复的录音内容"))
    twin = store.job(first)
    assert twin is not None
    dup = store.add_reused(source_name="copy of a.wav", spool_path="/spool/c.wav", output_stem="copy of a",
                           sha256=None, size_bytes=1, options={}, dedup_key=None, twin=twin, outputs=[],
                           audio_seconds=60, speakers=1,
                           transcript=Transcript(segments=segs("重复的录音内容"), audio_seconds=60))
    assert found(store, "录音内容") == [(dup, 0), (first, 0)]
    assert [h.source_name for h in search.search(store, "录音内容").hits] == ["copy of a.wav", "a.wav"]


def test_a_job_is_never_done_without_its_segments(store):
    """The rows go in the transaction that marks the job done: when writing them fails,
    the job is not done either."""
    job_id = store.enqueue(source_name="x.wav", spool_path="/spool/x.wav", output_stem="x", sha256=None,
                           size_bytes=1)
    store.claim(slot=0, pid=1, device="cpu", lease_seconds=60)
    broken = (Segment(0, 1, 1, "好的"), Segment(1, 2, 1, None))  # type: ignore[arg-type]
    with pytest.raises(Exception):
        store.complete(job_id, pid=1, audio_seconds=2, processing_seconds=1, speakers=1, outputs=[], device="cpu",
                       transcript=Transcript(segments=broken, audio_seconds=2))
    assert store.job(job_id).state == "running" and segment_rows(store) == []
    assert "done" not in [e.kind for e in store.events(job_id)]


def test_a_job_longer_than_one_insert_statement_keeps_every_row_in_both_indexes(store):
    """Segments go in as few statements as the database allows (SQLite: multi-row INSERTs
    of SQLITE_INSERT_ROWS rows; PostgreSQL: one INSERT from arrays): a job longer than
    one statement keeps every row, in order, with its speaker, found by either index."""
    from daemon.store.segments import SQLITE_INSERT_ROWS

    count = SQLITE_INSERT_ROWS + 7
    texts = [f"第{i}句话 line{i:05d}" for i in range(count - 1)] + ["最后一句鑫"]
    job_id = finish(store, "long.wav", segs(*texts), names={1: "Ann"})
    rows = segment_rows(store, job_id)
    assert [(r["idx"], r["text"], r["speaker"]) for r in rows] == [
        (i, t, "Ann" if i % 2 == 0 else "Speaker2") for i, t in enumerate(texts)]
    assert found(store, f"line{SQLITE_INSERT_ROWS + 2:05d}") == [(job_id, SQLITE_INSERT_ROWS + 2)]  # trigrams
    assert found(store, "鑫") == found(store, "句鑫") == [(job_id, count - 1)]  # grams
    assert found(store, "鑫", speaker="ann") == [(job_id, count - 1)] and found(store, "鑫", speaker="Speaker2") == []
    assert found(store, "line", speaker="Speaker2", limit=2) == [(job_id, 1), (job_id, 3)]
    assert fts_rows(store) in (None, count)


def test_retention_removes_the_rows_and_their_index_entries(store):
    gone = [finish(store, f"old{i}.wav", segs(*(f"旧的会议记录{i}-{k}" for k in range(5)))) for i in range(4)]
    kept = finish(store, "new.wav", segs("新的会议记录"))
    with store.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id.in_(gone))
                     .values(finished_at=st.utcnow() - dt.timedelta(days=400)))
    # A small segment budget: four batches of one job each.
    assert store.delete_finished_jobs_before(st.utcnow() - dt.timedelta(days=30), batch_segments=6) == 4
    assert {r["job_id"] for r in segment_rows(store)} == {kept}
    assert found(store, "会议记录") == [(kept, 0)] and found(store, "旧的") == []
    assert fts_rows(store) in (None, 1)


# --- backfill: a database made before the migration ------------------------------------

def _alembic_upgrade(url: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(db.migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, revision)


def pre_segments_database(tmp_path: Path, url: str) -> tuple[object, dict[int, int]]:
    """A database at revision 0003 with done jobs (one a duplicate) and their stored
    transcripts, one done job whose transcript is gone, one failed job; returns the
    config and {job id: segments in its stored json}."""
    _alembic_upgrade(url, "0003")
    config = make_config(tmp_path, url=url, host="h1")
    engine = db.make_engine(url)
    expected: dict[int, int] = {}
    try:
        with engine.begin() as conn:
            def job(name: str, state: str, reused_from: int | None = None) -> int:
                return conn.execute(text(
                    "INSERT INTO jobs (source_name, spool_path, output_stem, state, attempts, max_attempts, priority, "
                    "created_at, finished_at, host, reused_from) VALUES (:n, :n, :n, :s, 1, 3, 0, :t, :t, 'h1', :r) "
                    "RETURNING id"), {"n": name, "s": state, "t": st.utcnow(), "r": reused_from}).scalar_one()
            first = job("first.wav", "done")
            second = job("second.wav", "done")
            dup = job("copy.wav", "done", reused_from=first)
            lost = job("lost.wav", "done")
            job("bad.wav", "failed")
        for job_id, lines in ((first, ("以前的会议", "讨论预算")), (second, ("另一个录音",)), (dup, ("以前的会议", "讨论预算"))):
            results.save_transcript(config, job_id, Transcript(segments=segs(*lines), audio_seconds=30))
            expected[job_id] = len(json.loads(outputs.transcript_path(config, job_id).read_text())["segments"])
        expected[lost] = 0
    finally:
        engine.dispose()
    return config, expected


def test_the_backfill_fills_a_database_made_before_the_migration(tmp_path, empty_url):
    config, expected = pre_segments_database(tmp_path, empty_url)
    db.migrate(empty_url)
    store = st.Store(empty_url, host="h1")
    try:
        result = results.backfill_segments(config, store)
        assert (result.jobs, result.segments) == (3, 5) and len(result.missing) == 1
        counts = {job_id: len(segment_rows(store, job_id)) for job_id in expected}
        assert counts == expected  # job by job, the duplicate too
        assert [h.source_name for h in search.search(store, "讨论预算").hits] == ["copy.wav", "first.wav"]
        again = results.backfill_segments(config, store)  # idempotent
        assert (again.jobs, again.segments) == (0, 0)
        assert len(segment_rows(store)) == 5 and fts_rows(store) in (None, 5)
    finally:
        store.close()


def database_at_0009_with_segments(url: str, jobs_count: int, per_job: int) -> list[int]:
    """A database at revision 0009 (before the index of grams) with `jobs_count` done jobs
    of `per_job` segments each, written as spkd 0009 wrote them; returns the job ids."""
    from daemon.store.segments import segment_rows

    _alembic_upgrade(url, "0009")
    engine = db.make_engine(url)
    ids = []
    try:
        with engine.begin() as conn:
            for n in range(jobs_count):
                job_id = conn.execute(text(
                    "INSERT INTO jobs (source_name, spool_path, output_stem, state, attempts, max_attempts, priority, "
                    "created_at, finished_at, host, task) VALUES (:n, :n, :n, 'done', 1, 3, 0, :t, :t, 'h1', "
                    "'transcribe') RETURNING id"), {"n": f"old{n}.wav", "t": st.utcnow()}).scalar_one()
                texts = [SAMPLE_TEXTS[(n + i) % len(SAMPLE_TEXTS)] for i in range(per_job)]
                conn.execute(segments.insert(), segment_rows(job_id, Transcript(segments=segs(*texts),
                                                                                  audio_seconds=60)))
                ids.append(job_id)
    finally:
        engine.dispose()
    return ids


def test_migration_0010_backfills_a_large_database_in_batches_and_resumes(empty_url):
    per_job = 500
    ids = database_at_0009_with_segments(empty_url, 41, per_job)  # 20,500 rows: more than the migration does itself
    db.migrate(empty_url)
    s = st.Store(empty_url, host="h1")
    try:
        pending = s.search_backfill()
        assert pending is not None and (pending.done, pending.total) == (0, 41 * per_job)
        # Until it is whole: found all the same, by comparing every row, and said so.
        result = search.search(s, "钱", limit=5)
        assert [(h.job_id, h.idx) for h in result.hits] == scan(s, "钱", limit=5)[0]
        assert result.notes and "still being built" in result.notes[0]
        # Written while it runs: a new job, and a job of the part not yet indexed replaced.
        new = finish(s, "new.wav", segs("新的钱", "预算"))
        assert s.replace_segments(ids[-1], Transcript(segments=segs("改过的钱"), audio_seconds=5)) == 1
        seen = []

        class Stop(Exception):
            pass

        def interrupt(state) -> None:
            seen.append(state)
            if s.is_postgres or len(seen) == 3:
                raise Stop

        if s.is_postgres:
            # An interrupted CREATE INDEX CONCURRENTLY leaves an invalid index behind.
            with s.engine.begin() as conn:
                conn.exec_driver_sql("CREATE INDEX ix_segments_grams ON segments (id)")
                conn.exec_driver_sql("UPDATE pg_index SET indisvalid = false "
                                     "WHERE indexrelid = 'ix_segments_grams'::regclass")
            assert s.replace_segments(ids[0], Transcript(segments=segs("已经索引的钱"), audio_seconds=5)) == 1
        else:
            with pytest.raises(Stop):
                s.backfill_search_index(interrupt, batch_seconds=0.01)
            assert 0 < seen[-1].done < seen[-1].total and s.search_backfill() == seen[-1]
            assert s.replace_segments(ids[0], Transcript(segments=segs("已经索引的钱"), audio_seconds=5)) == 1
            assert "still being built" in search.search(s, "钱").notes[0]
        assert s.backfill_search_index(seen.append)  # goes on where it stopped
        assert s.search_backfill() is None and not s.backfill_search_index()
        for query in ("钱", "预算", "ai", "，", "改过", "已经", "新的"):
            for options in ({}, {"speaker": "Speaker2"}, {"limit": 100}):
                result = search.search(s, query, **options)
                assert ([(h.job_id, h.idx) for h in result.hits], result.more) == scan(s, query, **options), query
                assert not result.notes
        assert found(s, "新的") == [(new, 0)]
        assert found(s, "已经") == [(ids[0], 0)]  # in the oldest rows: PostgreSQL looks it up in the GIN index
        if not s.is_postgres:
            with s.engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO segments_grams(segments_grams) VALUES ('integrity-check')")
    finally:
        s.close()


def test_migration_0010_indexes_a_small_database_itself_and_goes_again_on_downgrade(empty_url, backend):
    from alembic import command

    ids = database_at_0009_with_segments(empty_url, 3, 4)
    db.migrate(empty_url)
    s = st.Store(empty_url, host="h1")
    try:
        assert s.search_backfill() is None
        result = search.search(s, "钱")
        assert [(h.job_id, h.idx) for h in result.hits] == scan(s, "钱")[0] and not result.notes
        assert {h.job_id for h in result.hits} <= set(ids) and result.hits
    finally:
        s.close()
    cfg = db._alembic_config(empty_url)
    command.downgrade(cfg, "0009")
    engine = db.make_engine(empty_url)
    try:
        with engine.connect() as conn:
            if backend == "sqlite":
                names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master")}
                assert "segments_grams" not in names and "search_backfill" not in names
            else:
                assert conn.exec_driver_sql("SELECT to_regclass('search_backfill'), to_regclass('ix_segments_grams'), "
                                            "to_regproc('spkd_grams')").one() == (None, None, None)
    finally:
        engine.dispose()
    db.migrate(empty_url)


def spkd(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "--config", str(config_path), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("SPKD_")},
                               "PYTHONPATH": str(REPO)})


def test_db_upgrade_backfills(tmp_path):
    url = f"sqlite:///{tmp_path / 'spkd.db'}"
    pre_segments_database(tmp_path, url)
    out = spkd(write_config(tmp_path, url=url, host="h1"), "db", "upgrade")
    assert out.returncode == 0, out.stderr
    assert f"at revision {db.head_revision()}" in out.stdout
    assert "filled 3 earlier job(s) with 5 row(s)" in out.stdout
    assert "1 done job(s) have no stored transcript" in out.stderr
    conn = sqlite3.connect(tmp_path / "spkd.db")
    assert conn.execute("SELECT count(*) FROM segments").fetchone() == (5,)
    conn.close()


def test_db_upgrade_says_how_long_the_index_of_grams_takes_and_builds_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'spkd.db'}"
    database_at_0009_with_segments(url, 41, 500)
    out = spkd(write_config(tmp_path, url=url, host="h1"), "db", "upgrade")
    assert out.returncode == 0, out.stderr
    assert re.search(r"search index for 1- and 2-character queries: 20,500 segments to index, about \d+ s", out.stdout)
    assert "search index: done in" in out.stdout and f"at revision {db.head_revision()}" in out.stdout
    s = st.Store(url, host="h1")
    try:
        assert s.search_backfill() is None and not search.search(s, "钱").notes
    finally:
        s.close()


# --- reading it: spkd search and spkd sql ----------------------------------------------------

def test_spkd_search_prints_marked_hits_and_json(tmp_path, url, store):
    job_id = finish(store, "周会/第一周.m4a", segs("大家好。", "我们讨论一下预算。", "预算要在周三之前定。"))
    config = write_config(tmp_path, url=url, host="h1")
    out = spkd(config, "search", "预算")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert re.fullmatch(rf"周会/第一周\.m4a  \(job {job_id}, received \d{{4}}-\d\d-\d\d \d\d:\d\d\)", lines[0])
    assert lines[1:] == [
        "  00:00:10-00:00:14  Speaker2  我们讨论一下[预算]。",
        "  00:00:20-00:00:24  Speaker1  [预算]要在周三之前定。"]
    assert out.stderr == ""  # found through the index of grams: nothing to warn about
    out = spkd(config, "search", "算", "--json")
    assert [(h["job_id"], h["idx"]) for h in json.loads(out.stdout)] == [(job_id, 1), (job_id, 2)]
    assert out.returncode == 0 and out.stderr == ""
    out = spkd(config, "search", "讨论一下预算", "--json", "--speaker", "speaker2")
    [hit] = json.loads(out.stdout)
    assert {k: hit[k] for k in ("job_id", "source_name", "start_seconds", "end_seconds", "speaker", "text")} == {
        "job_id": job_id, "source_name": "周会/第一周.m4a", "start_seconds": 10.0, "end_seconds": 14.5,
        "speaker": "Speaker2", "text": "我们讨论一下预算。"}
    assert "shorter than" not in out.stderr
    out = spkd(config, "search", "没有说过的话")
    assert out.returncode == 1 and out.stdout == "" and "no segment contains" in out.stderr
    out = spkd(config, "search", "预算", "-n", "1")
    assert out.stdout.count("[预算]") == 1 and "there are more" in out.stderr
    out = spkd(config, "search", "预算", "--since", "not-a-date")
    assert out.returncode == 2 and "not a date" in out.stderr


def test_spkd_search_does_not_import_torch_or_funasr(tmp_path, url, store):
    finish(store, "a.wav", segs("测试一下"))
    code = ("import sys; from daemon.cli.main import main; rc = main(['--config', sys.argv[1], 'search', '测试一下', "
            "'--json']); heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'funasr')]; "
            "assert not heavy, heavy; raise SystemExit(rc)")
    out = subprocess.run([sys.executable, "-c", code, str(write_config(tmp_path, url=url, host="h1"))], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["text"] == "测试一下"


def readme_examples() -> list[tuple[str, str]]:
    """(which database, statement) of the README's `spkd sql` examples on segments."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### What was said: `segments`", 1)[1].split("\n## ", 1)[0]
    examples = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        scope = "any"
        for line in block.splitlines():
            if line.startswith("#"):
                scope = "sqlite" if "(SQLite)" in line else "any"
            elif line.startswith("spkd sql "):
                _, _, statement = shlex.split(line)
                examples.append((scope, statement))
    return examples


def test_spkd_sql_reads_segments_with_the_readme_examples(store, url, backend):
    finish(store, "budget talk.wav", segs("我们讨论一下预算会议的安排。", "好的。", "预算会议定在周三。", speakers=(1, 1, 2)))
    finish(store, "other.wav", segs("与预算会议无关。"))
    examples = readme_examples()
    assert len(examples) >= 4
    for scope, statement in examples:
        if scope == "sqlite" and backend != "sqlite":
            continue
        columns, rows = sqlconsole.query_readonly(url, statement)
        assert columns and rows, statement
    columns, rows = sqlconsole.query_readonly(url, "SELECT count(*) FROM segments WHERE folded_text LIKE '%预算会议%'")
    assert rows == [(3,)]
    with pytest.raises(ReadOnlyError):
        sqlconsole.query_readonly(url, "DELETE FROM segments")


# --- PostgreSQL specifics ----------------------------------------------------------------

def test_postgres_role_without_the_extension_privilege_gets_the_fix(postgres_server):
    import psycopg

    db_url = postgres_server.new_database()
    database = make_url(db_url).database
    role = f"spkd_{database[-6:]}"
    admin = postgres.PostgresServer.libpq_url(db_url)
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN")
            conn.execute(f"GRANT CONNECT ON DATABASE \"{database}\" TO {role}")
            conn.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {role}")
        role_url = make_url(db_url).set(username=role).render_as_string(hide_password=False)
        with pytest.raises(DatabaseExtensionError) as caught:
            db.migrate(role_url)
        message = str(caught.value)
        assert "pg_trgm" in message and role in message and database in message
        assert "CREATE EXTENSION pg_trgm" in message and "spkd db upgrade" in message
        assert db.current_revision(role_url) is None  # nothing half done
        with psycopg.connect(admin, autocommit=True) as conn:  # the fix the message names
            conn.execute("CREATE EXTENSION pg_trgm")
        db.migrate(role_url)
        s = st.Store(role_url, host="h1")
        try:
            job_id = finish(s, "a.wav", segs("扩展装好了"))
            assert found(s, "装好了") == [(job_id, 0)]
        finally:
            s.close()
    finally:
        postgres_server.drop_database(db_url)
        with psycopg.connect(postgres.PostgresServer.libpq_url(postgres_server.url), autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_postgres_trigram_index_serves_chinese_where_the_locale_classifies_it(postgres_server):
    c_url = postgres_server.new_database()
    try:
        db.migrate(c_url)
        s = st.Store(c_url, host="h1")
        try:
            job_id = finish(s, "a.wav", segs("我们讨论一下预算"))
            assert not s.trigram_index_covers_cjk()  # LC_CTYPE C: pg_trgm skips Chinese characters
            result = search.search(s, "讨论一下")
            assert [(h.job_id, h.idx) for h in result.hits] == [(job_id, 0)]  # still found
            assert "LC_CTYPE" in result.notes[0] and "C.UTF-8" in result.notes[0]
        finally:
            s.close()
    finally:
        postgres_server.drop_database(c_url)
    try:
        utf8_url = postgres_server.new_database(locale="C.UTF-8")
    except Exception as exc:  # noqa: BLE001 - a server without that locale
        pytest.skip(f"no C.UTF-8 locale on this PostgreSQL server: {exc}")
    try:
        db.migrate(utf8_url)
        s = st.Store(utf8_url, host="h1")
        try:
            job_id = finish(s, "a.wav", segs("我们讨论一下预算"))
            assert s.trigram_index_covers_cjk() and not search.search(s, "讨论一下").notes
            with s.engine.begin() as conn:
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
                plan = "\n".join(r[0] for r in conn.execute(text(
                    "EXPLAIN SELECT id FROM segments WHERE folded_text LIKE '%讨论一下%'")))
            assert "ix_segments_folded_text_trgm" in plan, plan
        finally:
            s.close()
    finally:
        postgres_server.drop_database(utf8_url)
