"""sd_notify from the real daemon process: READY=1 once it serves, WATCHDOG=1 from the
main loop, STOPPING=1 on SIGTERM, then a clean exit (code 0)."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import threading
import time

import pytest

from tests.support.daemon import Daemon

pytestmark = pytest.mark.e2e


class NotifySocket:
    """A datagram socket like systemd's, collecting every message on a thread."""

    def __init__(self) -> None:
        # AF_UNIX paths are limited to ~100 bytes; pytest's tmp_path can be longer.
        self.folder = tempfile.TemporaryDirectory(prefix="spkd-", dir="/tmp")
        self.address = os.path.join(self.folder.name, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.address)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.extend(data.decode().split("\n"))

    def first(self, prefix: str) -> int | None:
        return next((i for i, m in enumerate(list(self.messages)) if m.startswith(prefix)), None)

    def wait_for(self, prefix: str, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            index = self.first(prefix)
            if index is not None:
                return index
            time.sleep(0.05)
        raise AssertionError(f"no {prefix!r} within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        self.folder.cleanup()


def test_ready_watchdog_stopping_in_order_and_a_clean_exit(tmp_path):
    notify = NotifySocket()
    try:
        env = {"NOTIFY_SOCKET": notify.address, "SPKD_FAKE_DEVICES": "{}"}
        with Daemon(tmp_path / "site", config={"workers": {"count": 1}}, env=env) as daemon:
            daemon.start()
            ready = notify.wait_for("READY=1")
            watchdog = notify.wait_for("WATCHDOG=1")
            assert notify.first("STATUS=") is not None
            assert notify.first("STOPPING=1") is None
            assert daemon.stop(signal.SIGTERM, timeout=60) == 0, daemon.log()[-3000:]
            stopping = notify.wait_for("STOPPING=1", timeout=5)
        assert ready < watchdog < stopping, notify.messages
        # READY=1 comes with a STATUS= line in the same datagram.
        assert notify.messages[ready + 1].startswith("STATUS="), notify.messages
    finally:
        notify.close()


def test_a_missing_notify_socket_does_not_disturb_the_daemon(tmp_path):
    env = {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock"), "SPKD_FAKE_DEVICES": "{}"}
    with Daemon(tmp_path / "site", config={"workers": {"count": 1}}, env=env) as daemon:
        daemon.start()
        time.sleep(1)
        assert daemon.stop(signal.SIGTERM, timeout=60) == 0, daemon.log()[-3000:]
