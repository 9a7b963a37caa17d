"""The job database in trouble, against the real daemon: another process holding the
write lock past the busy timeout, and databases that are corrupt or not a file."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.support.daemon import Daemon, write_wav

pytestmark = pytest.mark.e2e

LOCK_SECONDS = 40  # longer than SQLite's 30-s busy timeout (daemon.store.db.SQLITE_BUSY_TIMEOUT_SECONDS)


def test_an_external_write_lock_for_40_seconds_crashes_no_idle_worker(tmp_path):
    with Daemon(tmp_path, config={"jobs": {"heartbeat_seconds": 1}}) as d:
        d.start()
        workers = d.worker_pids()
        holder = subprocess.Popen([sys.executable, "-c", (
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(d.db_path)!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(float(sys.argv[1]))\n"
            "c.execute('ROLLBACK')\n"), str(LOCK_SECONDS)], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "locked"
            holder.wait(timeout=LOCK_SECONDS + 30)
        finally:
            holder.kill()
        assert d.proc.poll() is None and d.worker_pids() == workers, d.log()[-3000:]
        assert "cannot claim a job now (database is locked)" in d.log()
        assert "worker crashed" not in d.log()
        write_wav(d.inbox / "after.wav")
        [job] = d.wait_finished(1)
        assert job["state"] == "done" and d.worker_pids() == workers
        assert d.stop() == 0


def make_database(d: Daemon) -> None:
    """A real job database with enough rows to span many pages."""
    from daemon.store import db
    from daemon import store as st

    url = f"sqlite:///{d.db_path}"
    db.migrate(url)
    store = st.Store(url, host="h")
    for i in range(300):
        store.add_failed(source_name=f"old/{i:04}-{'x' * 200}.wav", spool_path=f"/spool/{i}", output_stem=f"old/{i}",
                         sha256=None, size_bytes=1, kind="not_audio", message="m" * 300)
    store.close()


def truncate(path):  # type: ignore[no-untyped-def]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def garbage_in_the_middle(path):  # type: ignore[no-untyped-def]
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle: middle + 16384] = os.urandom(16384)
    path.write_bytes(bytes(data))


def folder_instead(path):  # type: ignore[no-untyped-def]
    path.unlink()
    path.mkdir()
    (path / "note").write_text("someone put a folder here")


def snapshot(path) -> bytes | list[str]:  # type: ignore[no-untyped-def]
    return sorted(os.listdir(path)) if path.is_dir() else path.read_bytes()


@pytest.mark.parametrize("damage", [truncate, garbage_in_the_middle, folder_instead])
def test_a_corrupt_database_stops_everything_with_one_clear_message_and_exit_2(tmp_path, damage):
    d = Daemon(tmp_path)
    make_database(d)
    damage(d.db_path)
    before = snapshot(d.db_path)
    with d:
        d.start(wait_ready=False)
        assert d.proc.wait(timeout=60) == 2
        log = d.log()
    assert "Traceback" not in log and "spawned worker" not in log, log[-3000:]
    assert f"the job database {d.db_path} cannot be used" in log and "move it aside" in log
    for command in (["status"], ["jobs"], ["sql", "SELECT count(*) FROM jobs"], ["db", "upgrade"], ["search", "x"]):
        result = subprocess.run([sys.executable, "-m", "daemon", "--config", str(d.config_path), *command],
                                capture_output=True, text=True, env=d.env, timeout=60)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert f"the job database {d.db_path} cannot be used" in result.stderr
        assert "restore it from a backup, or move it aside" in result.stderr
    assert snapshot(d.db_path) == before  # never deleted, never rewritten


def test_doctor_names_a_corrupt_database(tmp_path):
    d = Daemon(tmp_path)
    make_database(d)
    garbage_in_the_middle(d.db_path)
    result = subprocess.run([sys.executable, "-m", "daemon", "--config", str(d.config_path), "doctor"],
                            capture_output=True, text=True, env=d.env, timeout=120)
    line = next(line for line in result.stdout.splitlines() if "database" in line and line.startswith("BAD"))
    assert "cannot be used: it is corrupt" in line and result.returncode == 1
