"""A worker (run in this process, with the fake engine of tests/fakes) outlives a
database it cannot write to for a while: locked by another process past the busy
timeout, or on a full disk. And a recording that decodes far shorter than its
container claimed is done with a warning on the job."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from loguru import logger
from sqlalchemy.exc import OperationalError

from daemon.store import db
from daemon.jobs import spool
from daemon import store as st
from daemon.jobs.worker import Worker, WorkerSpec
from tests.support.config import make_config
from tests.support.daemon import FAKE_ENGINE, write_wav


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def setup(tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SPKD_FAKE_STATE_DIR", str(tmp_path / "fake-state"))
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_SECONDS", 0.3)  # the real 30 s, shortened for the test
    url = f"sqlite:///{tmp_path / 'state' / 'spkd.db'}"
    db.migrate(url)
    config = make_config(tmp_path, url=url, host="h1", daemon={"min_free_mb": 0}, workers={"poll_seconds": 0.05},
                         jobs={"heartbeat_seconds": 0.2})
    worker = Worker(config, WorkerSpec(slot=0, device="cpu", env={}, threads=1, engine_factory=FAKE_ENGINE),
                    store=st.Store(url, host="h1"))
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", worker.run()), daemon=True)
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING")
    thread.start()
    reader = st.Store(url, host="h1")
    wait_for(lambda: any(r.state == "ready" for r in reader.worker_rows()), what="a ready worker")
    yield config, worker, thread, reader, result, lines, tmp_path
    worker.stop_requested.set()
    thread.join(timeout=10)
    logger.remove(sink)
    reader.close()
    worker.store.close()


def enqueue(config, reader, name: str, *, seconds: float = 1.0, claimed: float | None = None) -> int:  # type: ignore[no-untyped-def]
    path = write_wav(spool.new_slot(config.paths.spool, "h1") / name, seconds=seconds)
    return reader.enqueue(source_name=name, spool_path=str(path), output_stem=name[:-4], sha256=None,
                          size_bytes=path.stat().st_size, audio_seconds=claimed if claimed is not None else seconds)


def test_a_write_lock_held_past_the_busy_timeout_does_not_stop_an_idle_worker(setup):
    config, worker, thread, reader, result, lines, tmp_path = setup
    holder = sqlite3.connect(tmp_path / "state" / "spkd.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's long write transaction
    try:
        wait_for(lambda: any("cannot claim a job now" in line for line in lines), what="the worker meeting the lock")
        time.sleep(1.5)  # several busy timeouts in a row
        assert thread.is_alive() and "code" not in result
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert sum("cannot claim a job now" in line for line in lines) == 1  # said once, not at every try
    job_id = enqueue(config, reader, "after.wav")
    wait_for(lambda: reader.job(job_id).state == "done", what="the job after the lock")


def test_a_full_disk_under_the_database_is_waited_out(setup, monkeypatch):
    config, worker, thread, reader, result, lines, tmp_path = setup
    real_claim = worker.store.claim
    failures = {"left": 5}

    def claim(**kwargs):  # type: ignore[no-untyped-def]
        if failures["left"]:
            failures["left"] -= 1
            with db.translate_errors():  # as the store meets it: the driver's error, translated
                raise OperationalError("UPDATE jobs …", {}, sqlite3.OperationalError("database or disk is full"))
        return real_claim(**kwargs)

    monkeypatch.setattr(worker.store, "claim", claim)
    wait_for(lambda: failures["left"] == 0, what="the full disk")
    job_id = enqueue(config, reader, "later.wav")
    wait_for(lambda: reader.job(job_id).state == "done", what="the job once space is back")
    assert thread.is_alive() and "code" not in result


def test_a_recording_far_shorter_than_its_container_claimed_is_done_with_a_warning(setup):
    config, worker, thread, reader, result, lines, tmp_path = setup
    job_id = enqueue(config, reader, "cut.wav", seconds=2.0, claimed=64.0)
    fine_id = enqueue(config, reader, "fine.wav", seconds=2.0)
    wait_for(lambda: reader.job(job_id).state == "done" and reader.job(fine_id).state == "done",
             what="both jobs")
    [warning] = [e for e in reader.events(job_id) if e.kind == "warning"]
    assert warning.detail["claimed_seconds"] == 64.0 and warning.detail["decoded_seconds"] < 3
    assert "decoded 2.0 s of audio, but the file said 64.0 s" in warning.detail["message"]
    assert not [e for e in reader.events(fine_id) if e.kind == "warning"]


def test_a_command_meeting_a_locked_database_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    import json as json_module

    from daemon.cli.main import main
    from daemon.errors import ExitCode

    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_SECONDS", 0.3)
    config = tmp_path / "spkd.json"
    config.write_text(json_module.dumps({"paths": {"state": "state"}}))
    (tmp_path / "state").mkdir()
    holder = sqlite3.connect(tmp_path / "state" / "spkd.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        assert main(["--config", str(config), "db", "upgrade"]) == ExitCode.FAILED
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capsys.readouterr().err
    assert err.strip() == "spkd: the job database cannot be used right now (database is locked); try again"
