"""Run the real daemon as a process against a temporary tree, for e2e tests."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
FAKE_ENGINE = "tests.fakes.engine:make"


def write_wav(path: Path, seconds: float = 0.5, *, freq: float = 440.0, rate: int = 16000, seed: int = 0) -> Path:
    """A small valid WAV; `seed` changes the content (and so the sha256)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * (freq + seed) * i / rate)))
                               for i in range(n)))
    return path


def kill_process_group(proc: subprocess.Popen[bytes] | None, *, wait_seconds: float = 10) -> None:
    """SIGKILL to the process group that `proc` leads (it was started with
    start_new_session=True), so its children die with it; then reap `proc`, waiting at
    most `wait_seconds`. Nothing to do for None, or a group already gone."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=wait_seconds)
    except subprocess.TimeoutExpired:
        pass


class Daemon:
    def __init__(self, root: Path, *, config: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                 fake_engine: bool = True) -> None:
        self.root = root
        base: dict[str, Any] = {
            "paths": {"inbox": "inbox", "outbox": "outbox", "archive": "archive", "failed": "failed",
                      "spool": "spool", "state": "state", "voices": "voices"},
            "watch": {"settle_seconds": 0.3, "rescan_seconds": 2},
            "workers": {"count": 2, "poll_seconds": 0.1, "restart_backoff_max_seconds": 4},
            "jobs": {"lease_seconds": 6, "heartbeat_seconds": 1, "retry_backoff_seconds": 0.2},
            "daemon": {"shutdown_grace_seconds": 20, "kill_grace_seconds": 2, "reap_seconds": 1},
        }
        for section, values in (config or {}).items():
            base.setdefault(section, {}).update(values)
        self.config_path = root / "spkd.json"
        root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(base, indent=2))
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
                    "SPKD_FAKE_STATE_DIR": str(root / "fake-state")}
        for key in list(self.env):
            if key.startswith("SPKD_") and key not in ("SPKD_FAKE_STATE_DIR",):
                self.env.pop(key)
        self.env["SPKD_FAKE_STATE_DIR"] = str(root / "fake-state")
        if fake_engine:
            self.env["SPKD_ENGINE_FACTORY"] = FAKE_ENGINE
            # A CPU-only inventory without the torch probe (2-3 s per start on 2 cores);
            # tests that plan for GPUs set their own.
            self.env["SPKD_FAKE_DEVICES"] = "{}"
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "daemon.log"
        self.inbox = root / "inbox"
        self.outbox = root / "outbox"
        self.voices = root / "voices"
        self.db_path = root / "state" / "spkd.db"

    # --- process ---------------------------------------------------------------------

    def start(self, *, wait_ready: bool = True, ready_slots: int | None = None, timeout: float = 60) -> "Daemon":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "daemon", "--config", str(self.config_path), "run"],
                                     cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        if wait_ready:
            want = ready_slots if ready_slots is not None else json.loads(self.config_path.read_text())[
                "workers"]["count"]
            self.wait(lambda: len([w for w in self.workers() if w["state"] in ("ready", "busy")
                                   and w["pid"] in self.worker_pids()]) >= want,
                      timeout=timeout, what=f"{want} ready workers")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill_group()

    def kill_group(self) -> None:
        """Make sure nothing of ours is left running (workers included)."""
        kill_process_group(self.proc)

    def worker_pids(self) -> set[int]:
        if self.proc is None:
            return set()
        try:
            import psutil

            return {c.pid for c in psutil.Process(self.proc.pid).children() if c.status() != "zombie"}
        except Exception:  # noqa: BLE001
            return set()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- database --------------------------------------------------------------------

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        if not self.db_path.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, params)]
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def jobs(self) -> list[dict[str, Any]]:
        return self.query("select * from jobs order by id")

    def workers(self) -> list[dict[str, Any]]:
        return self.query("select * from workers order by slot")

    def events(self, job_id: int | None = None) -> list[dict[str, Any]]:
        if job_id is None:
            return self.query("select * from job_events order by id")
        return self.query("select * from job_events where job_id = ? order by id", job_id)

    def wait(self, predicate: Callable[[], Any], *, timeout: float = 60, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) waiting for {what}:\n{self.log()[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{self.log()[-4000:]}")

    def wait_finished(self, n: int, *, timeout: float = 60) -> list[dict[str, Any]]:
        return self.wait(lambda: (lambda js: js if len(js) >= n and all(j["state"] in ("done", "failed")
                                                                         for j in js) else None)(self.jobs()),
                         timeout=timeout, what=f"{n} finished jobs")

    def __enter__(self) -> "Daemon":
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill_group()
