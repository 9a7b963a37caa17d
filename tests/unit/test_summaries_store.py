"""Summary tasks in the database and in a job's files (#30), on SQLite and PostgreSQL:
queued with the job's done (or not), claimed by one worker only, under a lease whose
loss is recovered by the claim itself, retried with backoff, failed with the reason;
the table's CHECKs; migration 0013 up and down; the summary's files written through
daemon.jobs.results and carried through re-renders and the doctor's check; stale after
a correction; and the supervisor never loading the HTTP client."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from daemon.errors import JobRefusedError, NoSuchJobError, SummaryRefusedError, SummaryServerError
from daemon.jobs import corrections, remove, results, summarize
from daemon.store import Store, db
from daemon.store.rows import utcnow
from daemon.transcript import Segment, Transcript
from tests.support.config import make_config
from tests.support.jobs import done_job, queued_job
from tests.unit.test_migrations import alembic_to

LOCAL = {"endpoint": "http://127.0.0.1:9/v1", "model": "stand-in", "retry_backoff_seconds": 30, "max_attempts": 3}
ANSWER = json.dumps({"overview": [{"text": "We said hello.", "segments": [1]}], "decisions": [],
                     "action_items": [{"who": "Speaker1", "what": "Say it again", "segments": [1]}],
                     "open_questions": []})


@pytest.fixture()
def config(tmp_path: Path, url: str):
    return make_config(tmp_path, url=url, host="h1", summary=LOCAL)


def events(store: Store, job_id: int) -> list[str]:
    return [e.kind for e in store.events(job_id) if e.kind.startswith("summary_")]


# --- queued with the done -----------------------------------------------------------------

def test_a_done_transcription_queues_its_summary_in_the_same_transaction(config, store: Store) -> None:
    job_id = done_job(config, store, "meeting.wav")
    row = store.summary(job_id)
    assert row is not None and row.state == "queued" and row.attempts == 0 and row.max_attempts == 3
    assert row.result is None and row.transcript_version is None
    assert events(store, job_id) == ["summary_queued"]
    assert store.job(job_id).state == "done"


def test_no_summary_when_off_or_the_sidecar_says_false(tmp_path: Path, url: str, store: Store) -> None:
    off = make_config(tmp_path, url=url, host="h1")
    assert store.summary(done_job(off, store, "a.wav")) is None
    assert summarize.run_one(off, store, pid=5) is None
    on = make_config(tmp_path, url=url, host="h1", summary=LOCAL)
    job_id = queued_job(on, store, "b.wav")
    job = store.claim(slot=0, pid=1, device="cpu", lease_seconds=60)
    assert job.id == job_id
    with_sidecar = dataclasses.replace(job, options={"summary": False})
    transcript = Transcript(segments=(Segment(0.0, 1.0, 1, "hi"),), audio_seconds=1.0)
    written = results.write_outputs(on, job_id, transcript, output_stem=job.output_stem, formats=("json",))
    assert results.record_transcribed(on, store, with_sidecar, transcript, written=written, pid=1,
                                      processing_seconds=0.1, device="cpu")
    assert store.summary(job_id) is None


# --- claim, lease, retry -------------------------------------------------------------------

def test_two_workers_never_take_the_same_summary(config, make_store) -> None:
    a, b = make_store("h1"), make_store("h2")
    job_id = done_job(config, a, "meeting.wav")
    first = a.claim_summary(pid=11, lease_seconds=60)
    assert first is not None and first.job_id == job_id and first.state == "running" and first.attempts == 1
    assert (first.host, first.pid) == ("h1", 11)
    assert b.claim_summary(pid=22, lease_seconds=60) is None
    assert a.summary_heartbeat(job_id, pid=11, lease_seconds=60)
    assert not b.summary_heartbeat(job_id, pid=11, lease_seconds=60)  # another host's pid 11 is not the holder
    assert not b.complete_summary(job_id, pid=22, result={"format": "text"}, transcript_version=1, model="m")
    assert a.complete_summary(job_id, pid=11, result={"format": "text", "text": "hi"}, transcript_version=1, model="m")
    done = a.summary(job_id)
    assert done.state == "done" and done.result == {"format": "text", "text": "hi"} and done.pid is None
    assert events(a, job_id) == ["summary_queued", "summary_claimed", "summary_done"]


def test_a_failure_is_retried_after_a_growing_backoff_then_failed_with_the_reason(config, store: Store) -> None:
    job_id = done_job(config, store, "meeting.wav")
    backoffs = []
    for attempt in (1, 2):
        row = store.claim_summary(pid=7, lease_seconds=60)
        assert row.attempts == attempt
        before = utcnow()
        retry = store.fail_summary(job_id, pid=7, kind=SummaryServerError.kind, message="connection refused",
                                   permanent=False, retry_backoff_seconds=30)
        assert retry.state == "queued" and retry.error_kind == "summary_server"
        backoffs.append((retry.next_attempt_at - before).total_seconds())
        assert store.claim_summary(pid=7, lease_seconds=60) is None  # not before its time
        with store.engine.begin() as conn:  # its time has come
            conn.execute(text("UPDATE summaries SET next_attempt_at = :t"), {"t": utcnow() - dt.timedelta(seconds=1)})
    assert 29 < backoffs[0] <= 31 and 59 < backoffs[1] <= 61
    store.claim_summary(pid=7, lease_seconds=60)
    failed = store.fail_summary(job_id, pid=7, kind=SummaryServerError.kind, message="timed out", permanent=False,
                                retry_backoff_seconds=30)
    assert failed.state == "failed" and failed.error_message == "timed out" and failed.finished_at is not None
    assert store.claim_summary(pid=7, lease_seconds=60) is None
    assert events(store, job_id)[-2:] == ["summary_claimed", "summary_failed"]
    assert store.job(job_id).state == "done" and store.job(job_id).error_kind is None


def test_a_permanent_failure_is_not_tried_again(config, store: Store) -> None:
    job_id = done_job(config, store, "meeting.wav")
    store.claim_summary(pid=7, lease_seconds=60)
    row = store.fail_summary(job_id, pid=7, kind=SummaryRefusedError.kind, message="HTTP 401", permanent=True,
                             retry_backoff_seconds=30)
    assert row.state == "failed" and row.attempts == 1


def test_a_lease_that_ran_out_is_claimed_again_and_its_old_holder_records_nothing(config, store: Store) -> None:
    job_id = done_job(config, store, "meeting.wav")
    store.claim_summary(pid=7, lease_seconds=0.05)
    time.sleep(0.1)
    again = store.claim_summary(pid=8, lease_seconds=60)
    assert again.job_id == job_id and again.pid == 8 and again.attempts == 2
    assert not store.complete_summary(job_id, pid=7, result={"format": "text"}, transcript_version=1, model="m")
    assert store.fail_summary(job_id, pid=7, kind="summary_server", message="x", permanent=False,
                              retry_backoff_seconds=1) is None


def test_a_lost_lease_with_its_attempts_spent_ends_failed(config, store: Store) -> None:
    job_id = done_job(config, store, "meeting.wav")
    for pid in (1, 2, 3):
        store.claim_summary(pid=pid, lease_seconds=0.05)
        time.sleep(0.1)
    assert store.claim_summary(pid=4, lease_seconds=60) is None
    row = store.summary(job_id)
    assert row.state == "failed" and row.error_kind == "lease_expired" and "attempt 3 was the last" in row.error_message


# --- asking again --------------------------------------------------------------------------

def test_summarize_requeues_keeps_the_last_result_and_refuses_what_has_none(config, store: Store) -> None:
    job_id = done_job(config, store, "meeting.wav")
    row, before = summarize.request(config, store, job_id)
    assert (row.state, before) == ("queued", "queued")  # already queued: left as it is
    store.claim_summary(pid=7, lease_seconds=60)
    assert summarize.request(config, store, job_id)[1] == "running"
    store.complete_summary(job_id, pid=7, result={"format": "text", "text": "v1"}, transcript_version=1, model="m")
    row, before = summarize.request(config, store, job_id)
    assert before == "done" and row.state == "queued" and row.attempts == 0 and row.result["text"] == "v1"
    with pytest.raises(NoSuchJobError):
        summarize.request(config, store, 999)
    with pytest.raises(JobRefusedError, match="only a done transcription"):
        summarize.request(config, store, queued_job(config, store, "later.wav"))
    off = make_config(config.paths.state.parent, url=config.database.url, host="h1")
    with pytest.raises(JobRefusedError, match="summaries are off"):
        summarize.request(off, store, job_id)


def test_a_removed_or_withdrawn_job_takes_its_summary_with_it(config, store: Store) -> None:
    kept, removed = done_job(config, store, "kept.wav"), done_job(config, store, "removed.wav")
    summarize.run_one(config, store, pid=3, chat=lambda messages: ANSWER)
    assert (config.paths.outbox / "kept.summary.md").is_file()
    gone = results.withdraw(config, store, store.job(kept))
    assert config.paths.outbox / "kept.summary.md" in gone and not (config.paths.outbox / "kept.summary.md").exists()
    assert store.summary(kept) is None
    assert store.remove_jobs([removed]) == [removed] and store.summary(removed) is None


# --- the table's invariants ----------------------------------------------------------------

@pytest.mark.parametrize("values", [
    "'bogus', 0, 3, NULL, NULL, NULL",  # no such state
    "'running', 1, 3, NULL, NULL, NULL",  # running without a holder
    "'queued', 1, 3, 'h1', 5, :now",  # a holder while not running
    "'done', 1, 3, NULL, NULL, NULL",  # done without a result
    "'failed', 1, 3, NULL, NULL, NULL",  # failed without a reason
    "'queued', 4, 3, NULL, NULL, NULL",  # more attempts than allowed
])
def test_the_checks_refuse_rows_the_store_never_writes(config, store: Store, values: str) -> None:
    job_id = done_job(config, store, "meeting.wav")
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM summaries"))
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(text("INSERT INTO summaries (job_id, state, attempts, max_attempts, host, pid, lease_expires_at,"
                          f" requested_at) VALUES (:job, {values}, :now)"), {"job": job_id, "now": utcnow()})


def test_migration_0013_adds_the_table_and_takes_it_away(empty_url: str) -> None:
    db.migrate(empty_url)
    engine = db.make_engine(empty_url)
    try:
        assert "summaries" in inspect(engine).get_table_names()
        checks = {c["name"] for c in inspect(engine).get_check_constraints("summaries")}
        assert {"ck_summaries_state", "ck_summaries_lease", "ck_summaries_done", "ck_summaries_failed"} <= checks
    finally:
        engine.dispose()
    alembic_to(empty_url, "0012", down=True)
    engine = db.make_engine(empty_url)
    try:
        assert "summaries" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    db.migrate(empty_url)


# --- the files, re-renders, staleness --------------------------------------------------------

def test_a_summary_run_writes_the_file_and_the_json_object_and_stays_through_re_renders(config, store: Store) -> None:
    job_id = done_job(config, store, "meeting.wav")
    asked = []
    outcome = summarize.run_one(config, store, pid=3, chat=lambda m: asked.append(m) or ANSWER)
    assert outcome == "done"
    assert "[1] 00:00:00 Speaker1: hello there" in asked[0][-1]["content"]
    md = (config.paths.outbox / "meeting.summary.md").read_text(encoding="utf-8")
    assert "- We said hello. [00:00:00](meeting.html#t=0.000)" in md
    assert "- **Speaker1**: Say it again [00:00:00](meeting.html#t=0.000)" in md
    doc = json.loads((config.paths.outbox / "meeting.json").read_text(encoding="utf-8"))
    assert doc["summary"]["overview"][0]["segments"] == [1] and doc["summary"]["model"] == "stand-in"
    assert doc["summary"]["transcript_version"] == 1 and doc["segments"][0]["text"] == "hello there"
    row = store.summary(job_id)
    assert row.state == "done" and row.result == doc["summary"] and row.transcript_version == 1
    assert results.disagreements(config, store, job_id) == []
    # a correction re-renders the json: the summary stays, and is stale
    assert corrections.edit_segment(config, store, job_id, 1, text="hello again", origin="cli") == 2
    doc = json.loads((config.paths.outbox / "meeting.json").read_text(encoding="utf-8"))
    assert doc["summary"]["overview"][0]["text"] == "We said hello." and doc["segments"][0]["text"] == "hello again"
    assert summarize.status(store, job_id).stale and summarize.status(store, job_id).current_version == 2
    assert results.disagreements(config, store, job_id) == []
    # a summary file changed by hand is found and repaired by the doctor's check
    (config.paths.outbox / "meeting.summary.md").write_text("mine", encoding="utf-8")
    assert results.disagreements(config, store, job_id) == ["summary"]
    results.repair_results(config, store)
    assert "We said hello." in (config.paths.outbox / "meeting.summary.md").read_text(encoding="utf-8")
    # asked again, it is made from version 2 and no longer stale
    summarize.request(config, store, job_id)
    assert summarize.run_one(config, store, pid=3, chat=lambda m: asked.append(m) or ANSWER) == "done"
    assert "[1] 00:00:00 Speaker1: hello again" in asked[-1][-1]["content"]
    assert not summarize.status(store, job_id).stale and store.summary(job_id).transcript_version == 2


def test_a_server_error_leaves_the_transcript_untouched_and_retries(config, store: Store) -> None:
    job_id = done_job(config, store, "meeting.wav")
    before = {p.name: p.read_bytes() for p in config.paths.outbox.iterdir()}

    def down(messages):
        raise SummaryServerError("cannot get an answer from http://127.0.0.1:9/v1/chat/completions: refused")

    assert summarize.run_one(config, store, pid=3, chat=down) == "retry"
    assert {p.name: p.read_bytes() for p in config.paths.outbox.iterdir()} == before
    row = store.summary(job_id)
    assert row.state == "queued" and row.error_kind == "summary_server" and row.next_attempt_at > utcnow()
    assert store.job(job_id).state == "done"


def test_a_garbage_answer_is_kept_as_text(config, store: Store) -> None:
    job_id = done_job(config, store, "meeting.wav")
    assert summarize.run_one(config, store, pid=3, chat=lambda m: "I cannot do JSON, but: hello.") == "done"
    assert store.summary(job_id).result["format"] == "text"
    assert (config.paths.outbox / "meeting.summary.md").read_text(encoding="utf-8").endswith(
        "## Summary\n\nI cannot do JSON, but: hello.\n")


def test_the_supervisor_never_loads_the_http_client() -> None:
    code = ("import sys, daemon.service.supervisor, daemon.cli.main, daemon.jobs.worker; "
            "print(sorted(m for m in sys.modules if m.startswith('daemon.summaries')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert "daemon.summaries.client" not in out and "daemon.summaries.mapreduce" in out


def test_a_job_removed_while_its_summary_is_made_gets_no_files(config, store: Store) -> None:
    job_id = done_job(config, store, "meeting.wav")

    def remove_meanwhile(messages):  # `spkd remove` while the model writes
        removals, refused = remove.plan(config, store, [job_id])
        assert not refused and remove.remove(config, store, removals) == [job_id]
        return ANSWER

    assert summarize.run_one(config, store, pid=3, chat=remove_meanwhile) == "lost"
    assert list(config.paths.outbox.iterdir()) == []
