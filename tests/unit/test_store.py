"""The store's invariants, on a real SQLite database and a real PostgreSQL server
(the same tests, on each backend by the `store`/`url` fixtures of tests/conftest.py; the
PostgreSQL ones skip, saying why, where no server can be started: see tests/support/postgres.py)."""

import datetime as dt
import multiprocessing
import sqlite3

import pytest
from sqlalchemy import inspect

from daemon.store import db
from daemon import store as st
from daemon.errors import ReadOnlyError
from daemon.store.schema import metadata
from daemon.store.sqlconsole import query_readonly


def enqueue(store, name="a.wav", **kw):
    return store.enqueue(source_name=name, spool_path=f"/spool/{name}", output_stem=name.rsplit(".", 1)[0],
                         sha256="0" * 64, size_bytes=10, **kw)


def kinds(store, job_id):
    return [e.kind for e in store.events(job_id)]


def test_migration_creates_the_schema_of_daemon_schema(url, backend):
    engine = db.make_engine(url)
    try:
        inspector = inspect(engine)
        assert {"jobs", "job_events", "workers", "alembic_version"} <= set(inspector.get_table_names())
        for table in metadata.sorted_tables:
            columns = {c["name"] for c in inspector.get_columns(table.name)}
            assert columns == {c.name for c in table.columns}, table.name
        indexes = {i["name"] for i in inspector.get_indexes("jobs")}
        assert {"ix_jobs_claim", "ix_jobs_dedup_key", "ix_jobs_sha256", "ix_jobs_spool_path"} <= indexes
        if backend == "postgres":
            size = next(c for c in inspector.get_columns("jobs") if c["name"] == "size_bytes")
            assert str(size["type"]) == "BIGINT"
    finally:
        engine.dispose()
    if backend == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
        conn.close()
    db.migrate(url)  # idempotent
    assert db.current_revision(url) == db.head_revision()


def _migrator(url: str) -> None:  # runs in a child process
    db.migrate(url)


def test_hosts_starting_together_migrate_once(empty_url):
    """Several daemons starting at once against one empty database: one migrates, the
    others wait for it (an advisory lock on PostgreSQL) and find nothing to do."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_migrator, args=(empty_url,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 4
    assert db.current_revision(empty_url) == db.head_revision()


def test_sizes_over_2_gib_fit(store):
    job_id = store.enqueue(source_name="long.wav", spool_path="/spool/long.wav", output_stem="long",
                           sha256="0" * 64, size_bytes=5 * 2**30)
    assert store.job(job_id).size_bytes == 5 * 2**30


def test_claim_takes_the_oldest_highest_priority_job_once(store):
    first = enqueue(store, "a.wav")
    urgent = enqueue(store, "b.wav", priority=5)
    job = store.claim(slot=0, pid=100, device="cpu", lease_seconds=60)
    assert job.id == urgent and job.attempts == 1 and job.state == "running"
    job2 = store.claim(slot=1, pid=101, device="cpu", lease_seconds=60)
    assert job2.id == first
    assert store.claim(slot=2, pid=102, device="cpu", lease_seconds=60) is None
    assert kinds(store, urgent) == ["queued", "claimed"]


def test_only_the_holder_may_heartbeat_complete_or_fail(store):
    job_id = enqueue(store)
    job = store.claim(slot=0, pid=100, device="cpu", lease_seconds=60)
    assert not store.heartbeat(job_id, pid=999, lease_seconds=60)
    assert store.heartbeat(job_id, pid=100, lease_seconds=60)
    assert store.fail(job_id, pid=999, kind="x", message="m", permanent=True, retry_backoff_seconds=0) is None
    assert not store.complete(job_id, pid=999, audio_seconds=1, processing_seconds=1, speakers=1, outputs=[],
                              device="cpu")
    assert store.complete(job.id, pid=100, audio_seconds=10, processing_seconds=2, speakers=2,
                          outputs=["a.json"], device="cpu")
    row = store.job(job_id)
    assert row.state == "done" and row.rtf == pytest.approx(0.2) and row.outputs == ["a.json"]
    assert kinds(store, job_id) == ["queued", "claimed", "done"]


def test_transient_failure_backs_off_then_fails_when_attempts_are_spent(store):
    job_id = enqueue(store, max_attempts=2)
    store.claim(slot=0, pid=1, device="cpu", lease_seconds=60)
    outcome = store.fail(job_id, pid=1, kind="error", message="flaky", permanent=False, retry_backoff_seconds=60)
    assert outcome.state == "queued"
    assert store.claim(slot=0, pid=1, device="cpu", lease_seconds=60) is None  # not_before in the future
    with store.engine.begin() as conn:
        conn.exec_driver_sql("update jobs set not_before = null")
    store.claim(slot=0, pid=1, device="cpu", lease_seconds=60)
    outcome = store.fail(job_id, pid=1, kind="error", message="flaky again", permanent=False,
                         retry_backoff_seconds=60)
    assert outcome.state == "failed"
    row = store.job(job_id)
    assert row.error_message == "flaky again" and row.attempts == 2
    assert kinds(store, job_id) == ["queued", "claimed", "retry", "claimed", "failed"]


def test_permanent_failure_fails_at_once(store):
    job_id = enqueue(store)
    store.claim(slot=0, pid=1, device="cpu", lease_seconds=60)
    outcome = store.fail(job_id, pid=1, kind="bad_audio", message="undecodable", permanent=True,
                         retry_backoff_seconds=0)
    assert outcome.state == "failed" and store.job(job_id).error_kind == "bad_audio"


def test_release_requeues_a_dead_workers_job_and_counts_the_attempt(store):
    job_id = enqueue(store, max_attempts=2)
    store.claim(slot=0, pid=7, device="cpu", lease_seconds=60)
    [outcome] = store.release(pid=7, reason="killed (SIGKILL), possibly out of memory")
    assert outcome.state == "queued"
    store.claim(slot=0, pid=8, device="cpu", lease_seconds=60)
    [outcome] = store.release(pid=8, reason="killed again")
    assert outcome.state == "failed"  # a file that kills every worker does not loop forever
    assert kinds(store, job_id) == ["queued", "claimed", "requeued", "claimed", "failed"]


def test_release_at_shutdown_does_not_count_an_attempt(store):
    job_id = enqueue(store, max_attempts=1)
    store.claim(slot=0, pid=7, device="cpu", lease_seconds=60)
    [outcome] = store.release(pid=7, reason="shutdown", counts_as_attempt=False)
    assert outcome.state == "queued" and store.job(job_id).attempts == 0


def test_recover_requeues_only_jobs_of_dead_processes_of_this_host(url, store):
    dead, alive, other_host = enqueue(store, "a.wav"), enqueue(store, "b.wav"), enqueue(store, "c.wav")
    store.claim(slot=0, pid=10, device="cpu", lease_seconds=60)
    store.claim(slot=1, pid=11, device="cpu", lease_seconds=60)
    other = st.Store(url, host="h2")
    other.claim(slot=0, pid=10, device="cpu", lease_seconds=60)
    outcomes = store.recover(is_alive=lambda pid: pid == 11, reason="restart")
    assert [o.job.id for o in outcomes] == [dead]
    assert store.job(alive).state == "running" and store.job(other_host).state == "running"
    other.close()


def test_expired_leases_and_reap(store):
    job_id = enqueue(store)
    store.claim(slot=0, pid=1, device="cpu", lease_seconds=0.01)
    later = st.utcnow() + dt.timedelta(seconds=5)
    assert [j.id for j in store.expired_leases(now=later)] == [job_id]
    import time
    time.sleep(0.05)
    outcome = store.reap(job_id, reason="lease expired")
    assert outcome.state == "queued"
    assert store.reap(job_id, reason="again") is None


def test_retry_requeues_failed_jobs(store):
    job_id = enqueue(store)
    store.claim(slot=0, pid=1, device="cpu", lease_seconds=60)
    store.fail(job_id, pid=1, kind="x", message="m", permanent=True, retry_backoff_seconds=0)
    again = dict(options={}, dedup_key=None, sha256=None, size_bytes=None, audio_seconds=None, max_attempts=1)
    assert store.requeue(job_id, from_state="failed", **again) is not None
    assert store.job(job_id).state == "queued" and store.job(job_id).attempts == 0
    # A file that failed before it was queued has max_attempts 0; a retry gives it the config's.
    early = store.add_failed(source_name="e.wav", spool_path="/spool/e.wav", output_stem="e", sha256=None,
                             size_bytes=0, kind="empty", message="empty")
    assert store.requeue(early, from_state="failed", **{**again, "max_attempts": 3}) is not None
    assert store.job(early).max_attempts == 3 and store.job(early).state == "queued"


def test_a_removed_jobs_id_and_its_events_ids_are_never_given_again(store):
    """The newest job removed (`spkd remove`) or swept (retention): the next job gets a new
    id, not the gone one's, so that failed/<name>.error.json, logs and `spkd retry ID` never
    mean another job; nor does the next event reuse an id a notifier's cursor has passed."""
    first, second, third = (enqueue(store, f"{n}.wav") for n in "abc")
    assert (first, second, third) == (1, 2, 3)
    store.cancel(third, message="not wanted")
    cursor = store.last_event_id()
    assert store.remove_jobs([third]) == [third]
    assert store.last_event_id() < cursor  # its events went with it
    assert enqueue(store, "d.wav") == 4
    assert [e.id for e in store.events(4)] == [cursor + 1]
    assert [n.job_id for n in store.events_after(cursor, ["queued"])] == [4]  # a notifier at the cursor sees it
    store.cancel(4, message="not wanted either")
    assert store.delete_finished_jobs_before(st.utcnow() + dt.timedelta(days=1)) == 1
    assert enqueue(store, "e.wav") == 5


def test_readonly_sql_refuses_writes_and_changes_nothing(url, store):
    enqueue(store)
    columns, rows = query_readonly(url, "select id, state from jobs")
    assert columns == ["id", "state"] and rows == [(1, "queued")]
    for statement in ("DELETE FROM jobs", "UPDATE jobs SET state='done'", "DROP TABLE jobs",
                      "INSERT INTO job_events(job_id, at, kind) VALUES (1, '2020-01-01', 'x')",
                      "COMMIT; DELETE FROM jobs", "SELECT 1; DELETE FROM jobs", "ROLLBACK; DROP TABLE jobs"):
        with pytest.raises(ReadOnlyError):
            query_readonly(url, statement)
    assert store.counts() == {"queued": 1}
    assert len(store.events()) == 1


def test_workers_rows(store):
    store.worker_update(0, pid=5, device="cpu", state="booting")
    store.worker_update(0, state="ready")
    store.worker_job_done(0, rss_mb=123.0)
    [row] = store.worker_rows()
    assert row.state == "ready" and row.jobs_done == 1 and row.host == "h1"


def test_reaper_takes_back_a_silent_hosts_job_never_a_live_ones(url, store):
    """Host h2 stopped heartbeating (its lease expired); h3 keeps renewing its lease.
    Any host's reaper takes back h2's job and leaves h3's alone."""
    silent, live = enqueue(store, "a.wav"), enqueue(store, "b.wav")
    h2, h3 = st.Store(url, host="h2"), st.Store(url, host="h3")
    try:
        assert h2.claim(slot=0, pid=10, device="cpu", lease_seconds=0.2).id == silent
        assert h3.claim(slot=0, pid=10, device="cpu", lease_seconds=0.2).id == live
        import time
        for _ in range(4):
            time.sleep(0.1)
            assert h3.heartbeat(live, pid=10, lease_seconds=0.2)
        assert [j.id for j in store.expired_leases()] == [silent]
        outcome = store.reap(silent, reason="lease expired (holder h2/10)")
        assert outcome.state == "queued"
        assert store.job(live).state == "running" and store.job(live).host == "h3"
        # h2 comes back to life too late: its job is no longer its own.
        assert not h2.heartbeat(silent, pid=10, lease_seconds=60)
        assert not h2.complete(silent, pid=10, audio_seconds=1, processing_seconds=1, speakers=1, outputs=[],
                               device="cpu")
        again = store.claim(slot=0, pid=20, device="cpu", lease_seconds=60)
        assert again.id == silent and again.host == "h1" and again.attempts == 2
    finally:
        h2.close()
        h3.close()


def _claimer(url: str, n_jobs: int, out, host: str = "h1") -> None:  # runs in a child process
    s = st.Store(url, host=host)
    mine = []
    import os
    while True:
        job = s.claim(slot=0, pid=os.getpid(), device="cpu", lease_seconds=60)
        if job is None:
            break
        s.complete(job.id, pid=os.getpid(), audio_seconds=1, processing_seconds=0.01, speakers=1, outputs=[],
                   device="cpu")
        mine.append(job.id)
    out.put(mine)


def test_concurrent_claims_never_hand_out_a_job_twice(url, store):
    n = 120
    for i in range(n):
        enqueue(store, f"f{i}.wav")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    # Two "hosts" with two workers each: the claim is the same on one host or several.
    procs = [ctx.Process(target=_claimer, args=(url, n, out, f"h{i % 2 + 1}")) for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    claimed = [j for r in results for j in r]
    assert sorted(claimed) == list(range(1, n + 1))
    assert store.counts() == {"done": n}


def finish(store, name, *, seconds, audio=60.0, device="cpu"):
    job_id = enqueue(store, name)
    store.claim(slot=0, pid=1, device=device, lease_seconds=30)
    store.complete(job_id, pid=1, audio_seconds=audio, processing_seconds=seconds, speakers=1, outputs=[],
                   device=device)
    return job_id


def test_a_page_of_jobs_filtered_by_state_time_and_name(store):
    done = finish(store, "team/Standup 100%.wav", seconds=3)
    queued = enqueue(store, "team/retro_1.wav")
    other = enqueue(store, "notes.m4a")
    rows, total = store.job_page(st.JobFilter(), limit=2)
    assert [r.id for r in rows] == [other, queued] and total == 3
    rows, total = store.job_page(st.JobFilter(), offset=2, limit=2)
    assert [r.id for r in rows] == [done] and total == 3
    assert [r.id for r in store.job_page(st.JobFilter(state="queued"))[0]] == [other, queued]
    assert [r.id for r in store.job_page(st.JobFilter(name_contains="STANDUP"))[0]] == [done]
    assert [r.id for r in store.job_page(st.JobFilter(name_contains="100%"))[0]] == [done]
    assert store.job_page(st.JobFilter(name_contains="o_1"))[1] == 1, "_ is a character, not a wildcard"
    future = st.utcnow() + dt.timedelta(days=1)
    assert store.job_page(st.JobFilter(since=future))[1] == 0
    assert store.job_page(st.JobFilter(until=future))[1] == 3


def test_metric_figures_add_up_the_done_jobs_by_device(store):
    finish(store, "a.wav", seconds=3)  # rtf 0.05
    finish(store, "b.wav", seconds=30)  # rtf 0.5
    finish(store, "c.wav", seconds=6, device="cuda:0")  # rtf 0.1
    enqueue(store, "d.wav")
    store.worker_update(0, pid=1, device="cpu", state="busy")
    figures = store.metric_figures(processing_buckets=(5.0, 60.0), rtf_buckets=(0.1, 1.0))
    assert figures.jobs_by_state == {"queued": 1, "running": 0, "done": 3, "failed": 0, "cancelled": 0}
    by_device = {d.device: d for d in figures.devices}
    assert sorted(by_device) == ["cpu", "cuda:0"]
    cpu = by_device["cpu"]
    assert cpu.jobs == 2 and cpu.audio_seconds == 120 and cpu.processing_seconds == 33
    assert cpu.processing_buckets == {5.0: 1, 60.0: 2} and cpu.rtf_buckets == {0.1: 1, 1.0: 2}
    assert cpu.rtf_sum == pytest.approx(0.55)
    assert by_device["cuda:0"].rtf_buckets == {0.1: 1, 1.0: 1}
    assert figures.oldest_queued_at is not None and figures.last_done_at is not None
    assert [(w.slot, w.state) for w in figures.workers] == [(0, "busy")]
