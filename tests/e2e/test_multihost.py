"""Several hosts, one queue: real daemon processes sharing one PostgreSQL
database and one set of folders (inbox, spool, outbox, archive, failed), each with its
own state folder and host name (`daemon.host`), as two machines would with the
folders on a network share. Skips where no PostgreSQL server can be started."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_sd_notify import NotifySocket
from tests.support import postgres
from tests.support.daemon import Daemon, write_wav

pytestmark = pytest.mark.e2e

SHARED = ("inbox", "outbox", "archive", "failed", "spool")


class HostDaemon(Daemon):
    """A daemon of one host: shared folders under `shared`, its own state folder, the
    database on PostgreSQL; `workers()` shows this host's slots only."""

    def __init__(self, root: Path, shared: Path, url: str, host: str, *, config: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None) -> None:
        base: dict[str, Any] = {
            "paths": {**{name: str(shared / name) for name in SHARED}, "state": "state"},
            "database": {"url": url},
            "daemon": {"host": host},
        }
        for section, values in (config or {}).items():
            base.setdefault(section, {}).update(values)
        super().__init__(root, config=base, env={"SPKD_FAKE_DEVICES": "{}", **(env or {})})
        self.url, self.host = url, host
        self.inbox, self.outbox = shared / "inbox", shared / "outbox"

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        try:
            rows = postgres.query(self.url, sql, *params)
        except Exception:  # noqa: BLE001 - not migrated yet
            return []
        for row in rows:  # as SQLite hands them to the shared helpers: JSON as text
            for key in ("detail", "options", "outputs"):
                if key in row and row[key] is not None and not isinstance(row[key], str):
                    row[key] = json.dumps(row[key])
        return rows

    def workers(self) -> list[dict[str, Any]]:
        return self.query("select * from workers where host = ? order by slot", self.host)


def done_jobs(d: HostDaemon, n: int, timeout: float = 120) -> list[dict[str, Any]]:
    return d.wait(lambda: (lambda js: js if len(js) >= n and all(j["state"] == "done" for j in js) else None)(
        d.jobs()), timeout=timeout, what=f"{n} done jobs")


def assert_each_file_once(shared: Path, names: list[str], jobs: list[dict[str, Any]]) -> None:
    assert sorted(j["source_name"] for j in jobs) == sorted(names)  # one job per file
    assert [j["state"] for j in jobs] == ["done"] * len(names)
    stems = sorted(Path(n).with_suffix("").as_posix() for n in names)
    assert sorted(j["output_stem"] for j in jobs) == stems
    outputs = sorted(p.relative_to(shared / "outbox").with_suffix("").as_posix()
                     for p in (shared / "outbox").rglob("*.json"))
    assert outputs == stems  # one set of outputs each, none renamed " (2)"
    assert sorted(p.name for p in (shared / "archive").rglob("*.wav")) == sorted(Path(n).name for n in names)
    assert not [p for p in (shared / "spool").rglob("*") if p.is_file()]
    assert not list((shared / "inbox").rglob("*.wav"))


def test_two_hosts_share_one_queue_and_one_inbox_and_survive_one_being_killed(tmp_path, postgres_url):
    shared = tmp_path / "shared"
    # host-a's jobs are slow, so that the one it is running when it dies is still running
    # when the kill lands, however loaded the machine that runs this test is.
    a = HostDaemon(tmp_path / "a", shared, postgres_url, "host-a", env={"SPKD_FAKE_SLOW_SECONDS": "6"})
    b = HostDaemon(tmp_path / "b", shared, postgres_url, "host-b", env={"SPKD_FAKE_SLOW_SECONDS": "1.5"})
    with a, b:
        a.start(wait_ready=False)
        b.start(wait_ready=False)  # both at once: the migration runs once (advisory lock)
        a.wait(lambda: len([w for w in a.workers() if w["state"] == "ready"]) >= 2, what="host-a ready")
        b.wait(lambda: len([w for w in b.workers() if w["state"] == "ready"]) >= 2, what="host-b ready")
        names = [f"batch/slow-{i:02d}.wav" for i in range(16)]
        for i, name in enumerate(names):
            write_wav(shared / "inbox" / name, seed=i)
        # Both watchers see every file; each becomes one row.
        a.wait(lambda: len(a.jobs()) >= len(names), what="16 queued jobs")

        def a_running_after_one_archived() -> bool:
            # One snapshot of the rows. Killed mid-job, not in the instant between a job's
            # row turning done and its source reaching archive/ (that file would stay in
            # host-a's spool until it returns).
            mine = [j for j in a.jobs() if j["host"] == "host-a"]
            done = [j for j in mine if j["state"] == "done"]
            return (any(j["state"] == "running" for j in mine) and bool(done)
                    and all((shared / "archive" / j["source_name"]).exists() for j in done))

        a.wait(a_running_after_one_archived, what="host-a done with one job (archived) and running another")
        a.kill_group()  # host-a dies with its workers (power loss): its leases run out
        held_at_death = {j["id"] for j in a.jobs() if j["host"] == "host-a" and j["state"] == "running"}
        assert held_at_death, "host-a finished its jobs before the kill landed"
        jobs = done_jobs(b, len(names))
        assert_each_file_once(shared, names, jobs)
        hosts = {j["host"] for j in jobs}
        assert hosts == {"host-a", "host-b"}, hosts
        reaped = {j["id"] for j in jobs for e in b.events(j["id"])
                  if e["kind"] == "requeued" and "lease expired (holder host-a/" in json.loads(e["detail"])["reason"]}
        assert reaped == held_at_death  # each job host-a held was taken back, by lease expiry
        assert all(j["host"] == "host-b" for j in jobs if j["id"] in reaped)
        assert len(jobs) == len(names) and len(a.jobs()) == len(names)
        # host-a comes back: it finds nothing of its own to recover and joins in again.
        a.start(wait_ready=False)
        a.wait(lambda: len([w for w in a.workers() if w["state"] == "ready" and w["pid"] in a.worker_pids()]) >= 2,
               what="host-a ready again")
        more = [f"more-{i}.wav" for i in range(6)]
        for i, name in enumerate(more):
            write_wav(shared / "inbox" / name, seed=100 + i)
        jobs = done_jobs(b, len(names) + len(more))
        assert_each_file_once(shared, names + more, jobs)
        assert a.stop() == 0 and b.stop() == 0
        for d in (a, b):
            assert "Traceback" not in d.log(), d.log()[-3000:]
        # `spkd status` on either host shows both hosts' slots.
        import subprocess
        import sys

        out = subprocess.run([sys.executable, "-m", "daemon", "--config", str(b.config_path), "status", "--json"],
                             env=b.env, cwd=b.root, capture_output=True, text=True, timeout=60)
        status = json.loads(out.stdout)
        assert {(w["host"], w["slot"]) for w in status["workers"]} == {
            ("host-a", 0), ("host-a", 1), ("host-b", 0), ("host-b", 1)}


def test_a_watcher_host_and_a_workers_host(tmp_path, postgres_url):
    """daemon.roles: the watcher-only host spawns no workers yet is up and READY; the
    workers-only host never touches the inbox; together they do the work."""
    shared = tmp_path / "shared"
    notify = NotifySocket()
    try:
        watcher = HostDaemon(tmp_path / "w", shared, postgres_url, "watch-host",
                             config={"daemon": {"roles": ["watcher"]}}, env={"NOTIFY_SOCKET": notify.address})
        worker = HostDaemon(tmp_path / "k", shared, postgres_url, "work-host",
                            config={"daemon": {"roles": ["workers"]}})
        with watcher, worker:
            watcher.start(wait_ready=False)
            notify.wait_for("READY=1", timeout=60)
            worker.start(wait_ready=False)
            worker.wait(lambda: len([w for w in worker.workers() if w["state"] == "ready"]) >= 2,
                        what="work-host ready")
            # Before the watcher host takes them, files are only in the inbox; stop it a
            # moment to see that the workers host leaves the inbox alone.
            watcher.proc.send_signal(signal.SIGSTOP)
            try:
                names = [f"r-{i}.wav" for i in range(5)]
                for i, name in enumerate(names):
                    write_wav(shared / "inbox" / name, seed=i)
                time.sleep(3)
                assert sorted(p.name for p in (shared / "inbox").iterdir()) == names
                assert worker.jobs() == []
            finally:
                watcher.proc.send_signal(signal.SIGCONT)
            jobs = done_jobs(worker, len(names))
            assert_each_file_once(shared, names, jobs)
            assert {j["host"] for j in jobs} == {"work-host"}
            queued_by = {json.loads(e["detail"])["host"] for e in worker.events() if e["kind"] == "queued"}
            assert queued_by == {"watch-host"}
            assert watcher.workers() == [] and watcher.worker_pids() == set()
            assert watcher.proc.poll() is None  # up, with nothing to supervise
            assert "not watching the inbox" in worker.log() and "watching" not in worker.log().replace(
                "not watching", "")
            assert "no worker slots on this host" in watcher.log()
            assert watcher.stop() == 0 and worker.stop() == 0
            for d in (watcher, worker):
                assert "Traceback" not in d.log(), d.log()[-3000:]
    finally:
        notify.close()


def test_a_database_outage_loses_nothing_and_stops_nothing(tmp_path):
    """The PostgreSQL server goes away for a while (a restart, the network): the
    supervisor stays up, a file taken meanwhile waits in the spool, and once the server
    is back its job is recorded and done; nothing needs a restart."""
    from tests.support.postgres import PostgresServer, Unavailable

    server = PostgresServer()  # a server of its own, to stop without disturbing other tests
    try:
        server.start()
    except Unavailable as exc:
        server.stop()
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        shared = tmp_path / "shared"
        url = server.new_database()
        d = HostDaemon(tmp_path / "a", shared, url, "host-a", config={"watch": {"rescan_seconds": 1}})
        with d:
            d.start(wait_ready=False)
            d.wait(lambda: len([w for w in d.workers() if w["state"] == "ready"]) >= 2, what="ready")
            write_wav(shared / "inbox" / "before.wav")
            d.wait(lambda: [j for j in d.jobs() if j["state"] == "done"], what="the first job done")
            server.pause()
            write_wav(shared / "inbox" / "during.wav", seed=1)
            time.sleep(4)
            assert d.proc.poll() is None, d.log()[-3000:]
            assert not (shared / "inbox" / "during.wav").exists()  # taken into the spool
            server.resume()
            jobs = done_jobs(d, 2, timeout=120)
            assert_each_file_once(shared, ["before.wav", "during.wav"], jobs)
            assert "database unreachable" in d.log()
            assert d.stop() == 0
    finally:
        server.stop()
