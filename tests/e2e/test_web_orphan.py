"""The dashboard child of `spkd run` (issue 26, S2 and C6): a SIGKILL of the supervisor
leaves no dashboard serving with the old config and token, a restarted daemon gets its
port back, and a `.part` an upload left behind is swept as the dashboard starts."""

from __future__ import annotations

import os
import signal
import time
import urllib.request

import psutil
import pytest

from tests.support.daemon import Daemon
from tests.support.web import free_port

pytestmark = pytest.mark.e2e


def serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def web_child(d: Daemon) -> psutil.Process:
    assert d.proc is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for child in psutil.Process(d.proc.pid).children():
            if "spkd-web" in " ".join(child.cmdline()) or child.name() == "spkd-web":
                return child
        time.sleep(0.2)
    # spawn children all look alike: the one listening on the port is the dashboard
    for child in psutil.Process(d.proc.pid).children():
        if any(c.status == psutil.CONN_LISTEN for c in child.net_connections()):
            return child
    raise AssertionError("no dashboard child")


def test_a_killed_supervisor_leaves_no_dashboard_and_the_next_one_binds(tmp_path):
    port = free_port()
    d = Daemon(tmp_path, config={"web": {"listen": f"127.0.0.1:{port}"}, "workers": {"count": 1}})
    try:
        d.start()
        deadline = time.monotonic() + 30
        while not serving(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert serving(port), d.log()[-3000:]
        child = web_child(d)
        part = d.inbox / ".spkd-upload-cut.part"
        part.write_bytes(b"x" * 4096)  # as if an upload had been cut off
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait(timeout=10)
        child.wait(timeout=25)  # the orphan notices its parent is gone and stops
        assert not serving(port)
        d.start()
        deadline = time.monotonic() + 40
        while not serving(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert serving(port), d.log()[-3000:]
        assert not part.exists()
        assert d.stop() == 0
    finally:
        d.kill_group()
