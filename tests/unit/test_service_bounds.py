"""Every bound bounded, and trouble said in one line (issue 26): numeric keys with
upper limits that fit the machine, web.token of real characters, `spkd sql --timeout`
inside one slow SQLite step and at Ctrl-C, job ids and dates out of range, a database
whose WAL was deleted or that is read-only, and a full state disk that pauses claims
without killing the running job's worker."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from daemon import config as cfg, limits
from daemon.cli.main import main
from daemon.errors import ConfigError, ExitCode, ReadOnlyError, UnusableDatabaseError
from daemon.store import Store, db
from daemon.store.sqlconsole import query_readonly
from tests.support.daemon import REPO

# One step of SQLite's virtual machine that runs for many seconds (the progress handler never runs).
SLOW_STEP = "SELECT instr(printf('%.*c', 4000000, 'a'), printf('%.*c', 2000000, 'a') || 'b')"


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "spkd.json"
    base = {"paths": {k: str(tmp_path / k) for k in ("inbox", "outbox", "archive", "failed", "spool", "state",
                                                     "voices")}}
    for section, values in data.items():
        base.setdefault(section, {}).update(values)
    path.write_text(json.dumps(base))
    return path


def spkd(config: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPKD_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen([sys.executable, "-m", "daemon", "--config", str(config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


# --- S1: numbers that fit the machine -------------------------------------------------------

def test_threads_beyond_four_per_core_are_refused_in_the_file_and_the_environment(tmp_path, capsys):
    limit = limits.machine_cores() * limits.THREADS_PER_CORE
    assert cfg.load(write(tmp_path, {"workers": {"threads": limit}}), env={}).workers.threads == limit
    with pytest.raises(ConfigError, match=rf"^workers.threads: .*from 1 to {limit}.*\(got 2147483647\)"):
        cfg.load(write(tmp_path, {"workers": {"threads": 2147483647}}), env={})
    with pytest.raises(ConfigError, match=r"^workers.threads: .*\(got 2147483647\)"):
        cfg.load(write(tmp_path, {}), env={"SPKD_WORKERS_THREADS": "2147483647"})
    # `spkd run` stops at start with the config error's code.
    assert main(["--config", str(write(tmp_path, {"workers": {"threads": 2147483647}})), "run"]) == ExitCode.ERROR
    assert "workers.threads" in capsys.readouterr().err


@pytest.mark.parametrize("data, key", [
    ({"models": {"batch_size_s": 10**9}}, "models.batch_size_s"),
    ({"web": {"max_upload_mb": 2**31 - 1}}, "web.max_upload_mb"),
    ({"workers": {"poll_seconds": 86400}}, "workers.poll_seconds"),
    ({"workers": {"max_boot_failures": 10**6}}, "workers.max_boot_failures"),
    ({"jobs": {"max_attempts": 10**6}}, "jobs.max_attempts"),
    ({"jobs": {"heartbeat_seconds": 60, "lease_seconds": 30}}, "jobs.heartbeat_seconds"),
    ({"notify": {"timeout_seconds": 10**6}}, "notify.timeout_seconds"),
    ({"daemon": {"reap_seconds": 10**6}}, "daemon.reap_seconds"),
    ({"watch": {"rescan_seconds": 10**7}}, "watch.rescan_seconds"),
])
def test_numbers_past_what_makes_sense_are_refused(tmp_path, data, key):
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        cfg.load(write(tmp_path, data), env={})


# --- X3: a token of real characters ---------------------------------------------------------

@pytest.mark.parametrize("token", [" " * 20, "\t" * 16 + "abc", "a b c d e f g h i j", "x" * 15 + "\x00"])
def test_a_token_needs_sixteen_characters_other_than_spaces(tmp_path, token):
    with pytest.raises(ConfigError, match="^web.token: .*16 characters other than spaces.*a hidden value"):
        cfg.load(write(tmp_path, {"web": {"token": token, "listen": "0.0.0.0:8765"}}), env={})
    assert cfg.load(write(tmp_path, {"web": {"token": "0123456789abcdef"}}), env={}).web.token


# --- S3: spkd sql --timeout inside one slow step ---------------------------------------------

@pytest.fixture()
def database(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "spkd.db"
    path.parent.mkdir(parents=True)
    db.migrate(f"sqlite:///{path}")
    return path


def test_the_timeout_holds_inside_one_slow_step(database):
    started = time.monotonic()
    with pytest.raises(ReadOnlyError, match=r"stopped after 1 s \(--timeout\)"):
        query_readonly(f"sqlite:///{database}", SLOW_STEP, timeout_seconds=1)
    assert time.monotonic() - started < 4


def test_ctrl_c_stops_one_slow_step(database, tmp_path):
    config = write(tmp_path, {})
    proc = spkd(config, "sql", "--timeout", "0", SLOW_STEP)
    time.sleep(8)  # inside the step (imports take seconds on a loaded machine)
    assert proc.poll() is None
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == ExitCode.INTERRUPTED and time.monotonic() - sent < 5


# --- C5: out of range on the command line ---------------------------------------------------

def test_ids_and_dates_out_of_range_are_one_line_and_exit_2(database, tmp_path):
    config = write(tmp_path, {})
    for args in (["retry", str(2**63)], ["cancel", "99999999999999999999"], ["jobs", "--limit", str(2**64)],
                 ["search", "x", "--until", "9999-12-31"], ["search", "x", "--job", str(2**70)]):
        proc = spkd(config, *args)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == ExitCode.ERROR, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 4, (args, err)
        assert "range" in err.strip().splitlines()[-1] or "from 1 to" in err, (args, err)


# --- C8: the database in trouble ----------------------------------------------------------------

def test_a_deleted_wal_is_one_line_and_exit_1_for_jobs_status_and_sql(database, tmp_path):
    config = write(tmp_path, {})
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(database)!r}, isolation_level=None)\n"
        "c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA wal_autocheckpoint=0')\n"
        "c.execute('CREATE TABLE junk(x)')\n"
        "for i in range(200): c.execute('INSERT INTO junk VALUES (?)', ('x' * 1000,))\n"
        "print('ready', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        Path(f"{database}-wal").unlink()
        for args in (["jobs"], ["status"], ["status", "--json"], ["sql", "SELECT count(*) FROM jobs"]):
            proc = spkd(config, *args)
            _out, err = proc.communicate(timeout=60)
            assert proc.returncode == ExitCode.FAILED, (args, err)
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (args, err)
            assert "cannot be used right now" in err
    finally:
        holder.kill()
        holder.wait()


def test_a_read_only_database_is_a_permanent_error(database, monkeypatch):
    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda path, **kw: real_connect(
        f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, **kw))
    with pytest.raises(UnusableDatabaseError, match="is read-only"):
        db.check_writable(f"sqlite:///{database}")
    assert UnusableDatabaseError.permanent
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    db.check_writable(f"sqlite:///{database}")  # a writable one passes, unchanged


def test_spkd_run_on_a_read_only_database_exits_with_the_permanent_code(database, tmp_path, monkeypatch, capsys):
    from daemon.service import supervisor

    def read_only(url: str) -> None:
        raise db.unusable_database(url, sqlite3.OperationalError("attempt to write a readonly database")) \
            or UnusableDatabaseError(f"the job database {database} is read-only")

    monkeypatch.setattr(supervisor, "check_writable", read_only)
    monkeypatch.setenv("SPKD_ENGINE_FACTORY", "tests.fakes.engine:make")
    assert main(["--config", str(write(tmp_path, {})), "run"]) == ExitCode.ERROR
    err = capsys.readouterr().err
    assert "read-only" in err and "try again" not in err


# --- C9: a full state disk ---------------------------------------------------------------------

def test_status_says_paused_when_the_pause_file_could_not_be_written(database, tmp_path):
    config = write(tmp_path, {"daemon": {"min_free_mb": 2**24}})  # more than any disk here has free
    proc = spkd(config, "status", "--json")
    out, err = proc.communicate(timeout=60)
    assert "low disk space" in (json.loads(out)["paused"] or ""), err


def test_a_live_worker_whose_lease_ran_out_on_a_full_disk_is_not_killed_as_hung(database, tmp_path, monkeypatch):
    from daemon.jobs import diskguard
    from daemon.service.supervisor import Supervisor

    config = cfg.load(write(tmp_path, {}), env={})
    store = Store(config.database_url, host=config.host)
    store.enqueue(source_name="a.wav", spool_path="/spool/a.wav", output_stem="a", sha256=None, size_bytes=1)
    job = store.claim(slot=0, pid=os.getpid(), device="cpu", lease_seconds=0.01)
    assert job is not None
    time.sleep(0.05)
    supervisor = Supervisor(config)
    supervisor.store = store
    supervisor.slots = [SimpleNamespace(pid=os.getpid(), alive=lambda: True, kill_reason=None, term_sent_at=None,
                                        started_at=time.monotonic(), index=0)]
    stopped: list[str] = []
    monkeypatch.setattr(supervisor, "terminate", lambda slot, reason: stopped.append(reason))
    monkeypatch.setattr(diskguard, "claim_blocker", lambda config: "low disk space: 0 MB free")
    supervisor.check_health()
    assert stopped == []
    monkeypatch.setattr(diskguard, "claim_blocker", lambda config: None)
    supervisor.check_health()
    assert stopped and stopped[0].startswith("hung")
    store.close()
