"""Retention (old archived / failed sources and job rows) and the disk guard, on a
temporary tree; free space is faked by monkeypatching shutil.disk_usage."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from collections import namedtuple
from pathlib import Path

import pytest
from loguru import logger
from sqlalchemy import update

from daemon.jobs import diskguard
from daemon.service import retention
from daemon import store as st
from daemon.store.schema import jobs
from tests.support.config import make_config

DAY = 86400.0


def touch(path: Path, *, age_days: float | None = None, now: float, size: int = 10) -> Path:
    """A file whose age, seen from `now`, is `age_days`. A file just created has the real
    clock as its ctime, so tests look from a `now` 100 days ahead (`later`): a file left
    alone is 100 days old; a younger one gets its mtime moved forward."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    if age_days is not None:
        stamp = now - age_days * DAY
        os.utime(path, (stamp, stamp))
    return path


@pytest.fixture()
def later():
    """(now as a naive UTC datetime 100 days ahead, the same as a timestamp)."""
    ts = time.time() + 100 * DAY
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).replace(tzinfo=None), ts


def test_sweep_removes_old_sources_with_their_companions_and_empty_folders(tmp_path, later):
    now, ts = later
    config = make_config(tmp_path, retention={"archive_days": 30, "failed_days": 90})
    archive, failed = config.paths.archive, config.paths.failed
    old_a = touch(archive / "a.wav", now=ts, size=1000)  # real ctime: 100 days before `now`
    old_b = touch(archive / "team" / "deep" / "b.m4a", now=ts, size=500)
    old_b_sidecar = touch(archive / "team" / "deep" / "b.m4a.spkd.json", now=ts)
    young = touch(archive / "team" / "young.wav", age_days=5, now=ts)
    failed_old = touch(failed / "x.wav", now=ts)
    failed_old_err = touch(failed / "x.wav.error.json", now=ts)
    failed_young = touch(failed / "sub" / "y.wav", age_days=60, now=ts)  # 60 < 90 days
    failed_young_err = touch(failed / "sub" / "y.wav.error.json", age_days=60, now=ts)
    orphan_err = touch(failed / "gone" / "z.wav.error.json", now=ts)  # its source never arrived

    result = retention.sweep(config, None, now=now)

    for gone in (old_a, old_b, old_b_sidecar, failed_old, failed_old_err, orphan_err):
        assert not gone.exists(), gone
    for kept in (young, failed_young, failed_young_err):
        assert kept.exists(), kept
    assert not (archive / "team" / "deep").exists() and (archive / "team").is_dir()
    assert not (failed / "gone").exists()
    assert archive.is_dir() and failed.is_dir()
    assert result == retention.SweepResult(archive_files=3, failed_files=3, bytes_freed=1000 + 500 + 10 + 3 * 10,
                                           folders_removed=2, job_rows=0, errors=0)


def test_a_source_is_judged_with_its_companions(tmp_path, later):
    now, ts = later
    config = make_config(tmp_path, retention={"failed_days": 30})
    source = touch(config.paths.failed / "a.wav", now=ts)  # old
    error = touch(config.paths.failed / "a.wav.error.json", age_days=1, now=ts)  # failed again yesterday
    retention.sweep(config, None, now=now)
    assert source.exists() and error.exists()


def test_arrival_counts_not_recording_date(tmp_path):
    """A recording made long ago but archived today is kept: moving keeps the mtime,
    the rename's ctime says when it arrived."""
    config = make_config(tmp_path, retention={"archive_days": 30})
    old_recording = config.paths.archive / "1999.wav"
    old_recording.parent.mkdir(parents=True)
    old_recording.write_bytes(b"x")
    os.utime(old_recording, (time.time() - 9000 * DAY,) * 2)
    retention.sweep(config, None)
    assert old_recording.exists()


def test_null_days_keep_everything_and_missing_roots_are_fine(tmp_path, later):
    now, ts = later
    config = make_config(tmp_path, retention={"archive_days": None, "failed_days": None})
    kept = touch(config.paths.archive / "a.wav", now=ts)
    assert retention.sweep(config, None, now=now) == retention.SweepResult()
    assert kept.exists()
    shutil.rmtree(config.paths.archive)
    assert retention.sweep(make_config(tmp_path), None, now=now) == retention.SweepResult()


def test_symlinked_folders_are_not_followed(tmp_path, later):
    now, ts = later
    config = make_config(tmp_path, retention={"archive_days": 1})
    outside = touch(tmp_path / "elsewhere" / "precious.wav", now=ts)
    config.paths.archive.mkdir(parents=True)
    (config.paths.archive / "link").symlink_to(tmp_path / "elsewhere")
    retention.sweep(config, None, now=now)
    assert outside.exists()


# --- job rows ----------------------------------------------------------------------------

def add_job(store: st.Store, name: str, *, state: str, finished_days_ago: float | None) -> int:
    job_id = store.enqueue(source_name=name, spool_path=f"/spool/{name}", output_stem=name, sha256=None,
                           size_bytes=1)
    values: dict = {"state": state}
    if finished_days_ago is not None:
        values["finished_at"] = st.utcnow() - dt.timedelta(days=finished_days_ago)
    with store.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
    store.add_event(job_id, state)
    return job_id


def test_old_finished_job_rows_go_with_their_events(tmp_path, store):
    config = make_config(tmp_path, retention={"archive_days": None, "failed_days": None, "job_rows_days": 30})
    old_done = add_job(store, "a", state="done", finished_days_ago=40)
    old_failed = add_job(store, "b", state="failed", finished_days_ago=400)
    old_cancelled = add_job(store, "c", state="cancelled", finished_days_ago=31)
    new_done = add_job(store, "d", state="done", finished_days_ago=1)
    running = add_job(store, "e", state="running", finished_days_ago=None)
    queued = add_job(store, "f", state="queued", finished_days_ago=None)

    result = retention.sweep(config, store)

    assert result.job_rows == 3
    left = {j.id for j in store.jobs(limit=100)}
    assert left == {new_done, running, queued}
    assert {e.job_id for e in store.events()} == {new_done, running, queued}
    assert not {old_done, old_failed, old_cancelled} & left


def test_a_row_another_job_reuses_stays_until_that_job_goes(store):
    twin = add_job(store, "a", state="done", finished_days_ago=50)
    reuser = add_job(store, "b", state="done", finished_days_ago=1)
    with store.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == reuser).values(reused_from=twin))
    assert store.delete_finished_jobs_before(st.utcnow() - dt.timedelta(days=30)) == 0
    assert store.delete_finished_jobs_before(st.utcnow()) == 2  # both old now: referrer first, then twin
    assert store.jobs(limit=10) == []


def test_delete_works_in_batches(store):
    ids = [add_job(store, f"j{i}", state="done", finished_days_ago=10) for i in range(7)]
    assert store.delete_finished_jobs_before(st.utcnow(), batch=3) == len(ids)
    assert store.counts() == {}


# --- disk guard --------------------------------------------------------------------------

Usage = namedtuple("Usage", "total used free")
MB = 2**20


def fake_free(monkeypatch, by_folder: dict[Path, float]) -> None:
    def disk_usage(path):
        for folder, free_mb in by_folder.items():
            if Path(path) == folder:
                return Usage(10**12, 0, int(free_mb * MB))
        return Usage(10**12, 0, 10**12)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)


@pytest.fixture()
def log_lines():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    yield lines
    logger.remove(sink)


def test_check_names_the_folder_that_runs_low(tmp_path, monkeypatch):
    config = make_config(tmp_path, daemon={"min_free_mb": 1024})
    config.paths.outbox.mkdir(parents=True)
    config.paths.state.mkdir(parents=True)
    fake_free(monkeypatch, {config.paths.outbox: 5000, config.paths.state: 5000})
    assert diskguard.check(config) is None
    fake_free(monkeypatch, {config.paths.outbox: 100, config.paths.state: 5000})
    reason = diskguard.check(config)
    assert reason is not None and "paths.outbox" in reason and "100 MB" in reason
    fake_free(monkeypatch, {config.paths.outbox: 5000, config.paths.state: 1023})
    assert "paths.state" in diskguard.check(config)


def test_a_folder_not_created_yet_is_measured_on_its_parent(tmp_path, monkeypatch):
    config = make_config(tmp_path, daemon={"min_free_mb": 1024})
    fake_free(monkeypatch, {tmp_path: 10})
    assert "paths.outbox" in diskguard.check(config)


def test_zero_turns_the_guard_off(tmp_path, monkeypatch):
    config = make_config(tmp_path, daemon={"min_free_mb": 0})
    fake_free(monkeypatch, {tmp_path: 0})
    assert diskguard.check(config) is None


def test_pause_file_is_written_and_removed_logging_only_on_change(tmp_path, monkeypatch, log_lines):
    config = make_config(tmp_path, daemon={"min_free_mb": 1024})
    config.paths.state.mkdir(parents=True)
    config.paths.outbox.mkdir(parents=True)
    assert diskguard.paused_reason(config) is None

    fake_free(monkeypatch, {config.paths.outbox: 100})
    assert "paths.outbox" in diskguard.update(config)
    assert diskguard.pause_path(config) == config.paths.state / "claims.paused"
    assert "100 MB" in diskguard.paused_reason(config)
    fake_free(monkeypatch, {config.paths.outbox: 90})
    diskguard.update(config)
    assert "90 MB" in diskguard.paused_reason(config)  # the reason stays current ...
    assert len([line for line in log_lines if "claiming paused" in line]) == 1  # ... but is logged once

    fake_free(monkeypatch, {})
    assert diskguard.update(config) is None
    assert diskguard.paused_reason(config) is None and not diskguard.pause_path(config).exists()
    diskguard.update(config)
    assert len([line for line in log_lines if "claiming resumed" in line]) == 1


def test_set_paused_reports_changes(tmp_path):
    config = make_config(tmp_path)
    assert diskguard.set_paused(config, "maintenance") is True
    assert diskguard.set_paused(config, "maintenance") is False
    assert diskguard.paused_reason(config) == "maintenance"
    assert diskguard.set_paused(config, None) is True
    assert diskguard.set_paused(config, None) is False


def test_a_failing_check_keeps_the_current_state(tmp_path, monkeypatch):
    config = make_config(tmp_path)
    diskguard.set_paused(config, "low disk space: earlier")

    def broken(_path):
        raise OSError("stale NFS handle")

    monkeypatch.setattr(shutil, "disk_usage", broken)
    assert diskguard.update(config) == "low disk space: earlier"
    assert diskguard.paused_reason(config) == "low disk space: earlier"


def test_a_pause_file_that_cannot_be_written_still_pauses_and_resumes(tmp_path, monkeypatch, log_lines):
    """The disk filled up between two checks: the pause file itself cannot be written
    (ENOSPC). The guard must not fail, the pause is logged once and so is its end, and
    the workers' own measurement (claim_blocker) keeps them from claiming meanwhile."""
    import errno

    config = make_config(tmp_path, daemon={"min_free_mb": 1})
    config.paths.state.mkdir(parents=True)
    config.paths.outbox.mkdir(parents=True)

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(diskguard, "atomic_write", full)
    fake_free(monkeypatch, {config.paths.state: 0})
    for _ in range(3):
        assert "paths.state" in diskguard.update(config)
    assert not diskguard.pause_path(config).exists()
    assert "paths.state" in diskguard.claim_blocker(config)
    assert len([line for line in log_lines if "claiming paused" in line]) == 1
    fake_free(monkeypatch, {})
    assert diskguard.update(config) is None and diskguard.claim_blocker(config) is None
    assert len([line for line in log_lines if "claiming resumed" in line]) == 1
