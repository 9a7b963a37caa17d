"""Several hosts sharing one inbox and spool: the rename of an inbox file into
the spool is the arbiter, so one file becomes one job however many watchers see it;
start-up recovery never enqueues another host's file in flight. Run on SQLite and on
PostgreSQL (the latter skips where no server can be started)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from loguru import logger

from daemon import files
from daemon.jobs import spool
from daemon.intake.watcher import Watcher
from tests.support.config import make_config
from tests.support.daemon import write_wav


@pytest.fixture()
def sqlite_path(tmp_path):
    # The shared database lies in no host's own state folder (each host has state-<host>).
    return tmp_path / "state" / "spkd.db"


def config_for(root: Path, url: str, host: str):
    return make_config(root, url=url, host=host, paths={"state": f"state-{host}"}, watch={"settle_seconds": 0})


@pytest.fixture()
def hosts(tmp_path, url, make_store):
    def make(host: str) -> Watcher:
        config = config_for(tmp_path, url, host)
        return Watcher(config, make_store(config.host))

    return make


@pytest.fixture()
def problems():
    """Warnings and errors logged meanwhile (a lost race must not make any)."""
    seen: list[str] = []
    sink = logger.add(lambda m: seen.append(m), level="WARNING")
    yield seen
    logger.remove(sink)


def test_two_watchers_racing_for_one_inbox_make_one_job_per_file(tmp_path, hosts, problems, monkeypatch):
    a, b = hosts("host-a"), hosts("host-b")
    inbox = tmp_path / "inbox"
    # Slow the move down so that both watchers pass every check and race for the rename itself.
    real_move, lost = files.move, []

    def slow_move(src: Path, dst: Path) -> Path:
        if inbox in src.parents:
            time.sleep(0.02)
        try:
            return real_move(src, dst)
        except FileNotFoundError:
            lost.append(src)
            raise

    monkeypatch.setattr(files, "move", slow_move)
    n = 30
    for i in range(n):
        write_wav(inbox / f"sub{i % 3}" / f"f{i}.wav", seconds=1.0, seed=i)
        if i % 2:
            (inbox / f"sub{i % 3}" / f"f{i}.wav.spkd.json").write_text(json.dumps({"speakers": 2 + i % 3}))
    taken: dict[str, list[int]] = {"host-a": [], "host-b": []}
    start = threading.Barrier(2)

    def run(watcher: Watcher) -> None:
        start.wait()
        deadline = time.monotonic() + 60
        while any(p.suffix == ".wav" for p in inbox.rglob("*")) and time.monotonic() < deadline:
            watcher.scan()
            taken[watcher.store.host] += watcher.process_due()

    threads = [threading.Thread(target=run, args=(w,)) for w in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    jobs = a.store.jobs(limit=1000)
    assert len(jobs) == n
    assert sorted(j.source_name for j in jobs) == sorted(f"sub{i % 3}/f{i}.wav" for i in range(n))
    assert sorted(taken["host-a"] + taken["host-b"]) == sorted(j.id for j in jobs)
    for job in jobs:
        i = int(Path(job.source_name).stem[1:])
        assert job.options == ({"speakers": 2 + i % 3} if i % 2 else {}), job
        assert Path(job.spool_path).exists()
        assert spool.sidecar_of(Path(job.spool_path)).exists() == bool(i % 2)
    # Every spool folder holds one job's file: no empty folder or stray sidecar left by a lost race.
    folders = [p for p in (tmp_path / "spool").iterdir()]
    assert len(folders) == n
    assert not list(inbox.rglob("*.*"))
    assert problems == []
    assert lost, "the watchers never raced for the same file; the test proves nothing"
    assert taken["host-a"] and taken["host-b"]


def _orphan(spool_root: Path, token: str, name: str, seed: int) -> Path:
    return write_wav(spool_root / token / name, seconds=1.0, seed=seed)


def test_recover_spool_takes_only_its_own_or_long_dead_hosts_orphans(tmp_path, hosts):
    spool_root = tmp_path / "spool"
    now = time.gmtime()
    stamp = time.strftime(spool.TOKEN_TIME_FORMAT, now)
    old = time.strftime(spool.TOKEN_TIME_FORMAT, time.gmtime(time.time() - 2 * 3600))
    _orphan(spool_root, f"{stamp}-host-a-00000001", "mine.wav", 1)
    _orphan(spool_root, "20260101T000000-deadbeef", "legacy.wav", 2)  # before host names were recorded
    in_flight = _orphan(spool_root, f"{stamp}-host-b-00000003", "theirs.wav", 3)  # host-b inserts its row now
    _orphan(spool_root, f"{old}-host-gone-00000004", "abandoned.wav", 4)
    a = hosts("host-a")
    recovered = a.recover_spool()
    names = sorted(j.source_name for j in a.store.jobs(limit=100))
    assert len(recovered) == 3 and names == ["abandoned.wav", "legacy.wav", "mine.wav"]
    for job in a.store.jobs(limit=100):
        assert spool.token_info(Path(job.spool_path).relative_to(spool_root).parts[0]).host == "host-a"
    assert in_flight.exists()
    b = hosts("host-b")
    [theirs] = b.recover_spool()  # host-b restarting takes its own
    assert b.store.job(theirs).source_name == "theirs.wav"
    assert hosts("host-c").recover_spool() == []


def test_two_hosts_recovering_together_enqueue_an_orphan_once(tmp_path, hosts):
    old = time.strftime(spool.TOKEN_TIME_FORMAT, time.gmtime(time.time() - 2 * 3600))
    for i in range(10):
        _orphan(tmp_path / "spool", f"{old}-host-gone-{i:08x}", f"lost-{i}.wav", i)
    watchers = [hosts(f"host-{c}") for c in "abc"]
    start = threading.Barrier(len(watchers))
    results: list[list[int]] = []

    def run(w: Watcher) -> None:
        start.wait()
        results.append(w.recover_spool())

    threads = [threading.Thread(target=run, args=(w,)) for w in watchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(j for r in results for j in r) == sorted(j.id for j in watchers[0].store.jobs(limit=100))
    assert sorted(j.source_name for j in watchers[0].store.jobs(limit=100)) == sorted(
        f"lost-{i}.wav" for i in range(10))
