"""What was said, checked from outside: recordings dropped into a running daemon (fake
engine) are looked up with `spkd search --json` and `spkd sql` on `segments`, on SQLite
and on PostgreSQL; a renamed speaker is found under the new name; the rows of each job
equal the segments of its json, duplicates included; a database made before the
segments existed is filled at daemon start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.jobs import outputs, results
from daemon.store import db
from daemon import store as st
from daemon.config import load
from daemon.transcript import Segment, Transcript
from tests.e2e.test_multihost import HostDaemon
from tests.support.daemon import REPO, Daemon, write_wav

pytestmark = pytest.mark.e2e


def spkd(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "--config", str(d.config_path), *args],
                          capture_output=True, text=True, env=d.env, cwd=REPO, timeout=120)


def search_json(d: Daemon, *args: str) -> list[dict]:
    out = spkd(d, "search", *args, "--json")
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)


def rows_per_job(d: Daemon) -> dict[int, int]:
    rows = d.query("SELECT j.id, count(s.id) AS n FROM jobs j LEFT JOIN segments s ON s.job_id = j.id "
                   "WHERE j.state = 'done' GROUP BY j.id")
    return {r["id"]: r["n"] for r in rows}


@pytest.fixture(params=["sqlite", "postgres"])
def make_daemon(request, tmp_path):
    def make(root: Path) -> Daemon:
        if request.param == "sqlite":
            return Daemon(root)
        url = request.getfixturevalue("postgres_url")
        return HostDaemon(root, tmp_path / "shared", url, "host-a")
    return make


def test_dropped_recordings_are_found_by_what_was_said(tmp_path, make_daemon):
    with make_daemon(tmp_path / "d") as d:
        d.start()
        weekly_audio = write_wav(tmp_path / "src" / "weekly-zh.wav", seconds=2.0, seed=1).read_bytes()
        (d.inbox / "team").mkdir(parents=True, exist_ok=True)
        (d.inbox / "team" / "weekly-zh.wav").write_bytes(weekly_audio)
        write_wav(d.inbox / "call.wav", seconds=1.5, seed=2)
        d.wait_finished(2)
        # The same audio again under another name: a duplicate, reusing the transcript.
        (d.inbox / "copy-zh.wav").write_bytes(weekly_audio)
        jobs = d.wait_finished(3)
        assert [j["state"] for j in jobs] == ["done"] * 3
        by_name = {j["source_name"]: j for j in jobs}
        assert by_name["copy-zh.wav"]["reused_from"] == by_name["team/weekly-zh.wav"]["id"]
        # Rows of each job = segments of its json, job by job (the duplicate has its own).
        json_segments = {}
        for job in jobs:
            payload = json.loads((d.outbox / f"{job['output_stem']}.json").read_text())
            json_segments[job["id"]] = payload["segments"]
        assert rows_per_job(d) == {job_id: len(s) for job_id, s in json_segments.items()}
        # A substring of a segment is found at its job and times.
        weekly = by_name["team/weekly-zh.wav"]
        target = json_segments[weekly["id"]][-1]
        hits = search_json(d, target["text"][:8], "--job", str(weekly["id"]))
        assert [(h["job_id"], h["start_seconds"], h["end_seconds"], h["speaker"], h["text"]) for h in hits] == [
            (weekly["id"], target["start"], target["end"], target["speaker_label"], target["text"])]
        # One and two characters: found at that job through the index of grams, with no warning.
        for piece in (target["text"].strip()[:1], target["text"].strip()[1:3]):
            out = spkd(d, "search", piece, "--json", "-n", "100000")
            assert out.returncode == 0 and out.stderr == "", (piece, out.stderr)
            assert (weekly["id"], target["start"], target["text"]) in {
                (h["job_id"], h["start_seconds"], h["text"]) for h in json.loads(out.stdout)}, piece
        # Mixed Chinese and full-width English, any case and width; newest recording first.
        hits = search_json(d, "kpi要重新定", "-n", "100")
        assert [h["job_id"] for h in hits][:1] == [by_name["copy-zh.wav"]["id"]]
        assert {h["job_id"] for h in hits} == {by_name["copy-zh.wav"]["id"], weekly["id"]}
        assert len(hits) == len(json_segments[weekly["id"]]) * 2
        assert search_json(d, 'of call.wav speakers="NEAR"*') == []
        assert len(search_json(d, "sentence 1 of call.wav")) == 1
        # spkd sql reads the table.
        out = spkd(d, "sql", "SELECT job_id, count(*) AS n FROM segments GROUP BY job_id ORDER BY job_id", "--json")
        assert out.returncode == 0, out.stderr
        assert {r["job_id"]: r["n"] for r in json.loads(out.stdout)} == rows_per_job(d)
        # A speaker renamed after the fact: the job's rows are replaced in one transaction.
        config = load(d.config_path, env={})
        transcript = outputs.load_transcript(config, weekly["id"])
        assert transcript is not None
        renamed = transcript.replace(speaker_names={1: "李娜"})
        store = st.Store(config.database_url, host=config.host)
        try:
            assert store.replace_segments(weekly["id"], renamed) == len(transcript.segments)
        finally:
            store.close()
        hits = search_json(d, "我们讨论一下", "--speaker", "李娜")
        assert hits and {h["job_id"] for h in hits} == {weekly["id"]}
        assert all(h["speaker"] == "李娜" for h in hits)
        assert {h["job_id"] for h in search_json(d, "我们讨论一下", "--speaker", "Speaker1")} == {
            by_name["copy-zh.wav"]["id"]}
        assert rows_per_job(d)[weekly["id"]] == len(json_segments[weekly["id"]])
        assert d.stop() == 0
        assert "Traceback" not in d.log()


def test_a_database_made_before_segments_is_filled_at_daemon_start(tmp_path):
    """Jobs finished by an spkd without segments (schema 0003) get their rows from the
    stored transcripts when a daemon with segments starts on that database."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    d = Daemon(tmp_path)
    config = load(d.config_path, env={})
    url = config.database_url
    config.paths.state.mkdir(parents=True)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(db.migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0003")
    engine = db.make_engine(url)
    with engine.begin() as conn:
        job_id = conn.exec_driver_sql(
            "INSERT INTO jobs (source_name, spool_path, output_stem, state, attempts, max_attempts, priority, "
            "created_at, finished_at, host) VALUES ('old.wav', 'x', 'old', 'done', 1, 3, 0, '2026-01-05 10:00:00', "
            "'2026-01-05 10:01:00', ?) RETURNING id", (config.host,)).scalar_one()
    engine.dispose()
    old = Transcript(segments=(Segment(0, 2, 1, "去年的会议记录"), Segment(3, 5, 2, "第二句话")), audio_seconds=6)
    results.save_transcript(config, job_id, old)
    with d:
        d.start()
        rows = d.wait(lambda: d.query("SELECT idx, speaker, text FROM segments WHERE job_id = ? ORDER BY idx",
                                      job_id), what="backfilled segments")
        assert [(r["idx"], r["speaker"], r["text"]) for r in rows] == [(0, "Speaker1", "去年的会议记录"),
                                                                      (1, "Speaker2", "第二句话")]
        [hit] = search_json(d, "会议记录")
        assert (hit["job_id"], hit["source_name"]) == (job_id, "old.wav")
        assert d.stop() == 0
