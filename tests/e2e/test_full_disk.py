"""A full state folder, for real: a 3 MB tmpfs holding the database, the logs and the
pause file, filled up between two disk checks. Claiming pauses, no worker crashes or
spends a boot attempt, files dropped meanwhile wait, and everything resumes by itself
once space comes back. Needs root (or CAP_SYS_ADMIN) to mount the tmpfs; skips, saying
so, where that is not possible."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, write_wav

pytestmark = pytest.mark.e2e


@pytest.fixture()
def small_fs(tmp_path: Path):
    mount_point = tmp_path / "statefs"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a 3 MB tmpfs here (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Write until the file system says ENOSPC."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with open(folder / "filler-tail", "wb", buffering=0) as handle:  # the last few bytes too
        try:
            while True:
                handle.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def test_a_full_state_folder_pauses_and_resumes_without_losing_a_worker(tmp_path, small_fs):
    config = {"paths": {"state": str(small_fs / "state")},
              "daemon": {"min_free_mb": 1, "disk_check_seconds": 1},
              "output": {"formats": ["json"]}}
    with Daemon(tmp_path, config=config) as d:
        d.db_path = small_fs / "state" / "spkd.db"
        d.start()
        write_wav(d.inbox / "before.wav", seed=1)
        d.wait_finished(1)
        workers_before = d.worker_pids()
        fill(small_fs)
        for i in range(3):
            write_wav(d.inbox / f"during{i}.wav", seed=10 + i)
        time.sleep(6)  # several disk checks, claims and rescans on a full disk
        assert d.proc.poll() is None, d.log()[-3000:]
        assert d.worker_pids() == workers_before  # no worker crashed or was restarted
        log = d.log()
        assert "failed to boot" not in log and "worker crashed" not in log
        for name in ("filler", "filler-tail"):
            (small_fs / name).unlink()
        jobs = d.wait_finished(4, timeout=60)
        assert [j["state"] for j in jobs] == ["done"] * 4
        assert sorted(j["source_name"] for j in jobs) == ["before.wav", "during0.wav", "during1.wav", "during2.wav"]
        assert d.worker_pids() == workers_before
        rows = d.workers()
        assert all(r["state"] in ("ready", "busy") for r in rows), rows
        assert d.stop() == 0
