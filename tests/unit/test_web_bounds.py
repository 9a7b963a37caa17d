"""The dashboard's own names and bounds (issue 26): Host checked before anything else
(DNS rebinding), Origin judged against the configured names, wrong tokens slowed per
client, NUL and out-of-range numbers and dates a 4xx (never a 500), upload names with
bidi overrides refused, abandoned `.part` uploads swept, a database in trouble one
clear page; and, on a real uvicorn, header deadlines, stalled bodies and EMFILE logged
once a minute."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import threading
import time

import pytest
from starlette.testclient import TestClient

from daemon.errors import DatabaseUnavailableError
from daemon.store import db
from daemon.web import server
from daemon.web.app import create_app
from daemon.web.security import CSRF_COOKIE, HostRule, LoginThrottle
from daemon.web.upload import TEMP_PREFIX, sweep_abandoned
from tests.support.web import loaded, write_config

TOKEN = "correct-horse-battery-staple"


@pytest.fixture()
def config(tmp_path):
    return migrated(loaded(write_config(tmp_path)))


def migrated(config):  # type: ignore[no-untyped-def]
    db.migrate(config.database_url)
    return config


def client(config, host: str = "127.0.0.1:8765", listen: str | None = None) -> TestClient:
    return TestClient(create_app(config, listen), base_url=f"http://{host}")


# --- X1: Host and Origin ---------------------------------------------------------------

def test_a_rebound_host_name_gets_421_before_anything_else(config):
    with client(config, "rebind.attacker.example:8765") as c:
        for response in (c.get("/"), c.get("/jobs"), c.post("/jobs/1/retry", data={}), c.get("/login")):
            assert response.status_code == 421
            assert CSRF_COOKIE not in response.headers.get("set-cookie", "")  # no token handed out
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST."):
        with client(config, host) as c:
            assert c.get("/").status_code == 200, host


def test_web_allowed_hosts_lets_a_listed_name_in(tmp_path):
    config = migrated(loaded(write_config(tmp_path, web={"allowed_hosts": ["spkd.lan"]})))
    with client(config, "spkd.lan:8765") as c:
        assert c.get("/").status_code == 200
    with client(config, "other.lan:8765") as c:
        assert c.get("/").status_code == 421


def test_same_origin_is_judged_against_the_configured_names(config):
    with client(config) as c:
        c.get("/")
        csrf = c.cookies.get(CSRF_COOKIE)
        # A page of another site naming itself in Origin, even with our Host: refused.
        refused = c.post("/logout", data={"csrf_token": csrf}, headers={"origin": "http://rebind.attacker.example:8765"})
        assert refused.status_code == 403
        ours = c.post("/logout", data={"csrf_token": csrf}, headers={"origin": "http://127.0.0.1:8765"},
                      follow_redirects=False)
        assert ours.status_code == 303


def test_the_host_rule_for_each_kind_of_listen_address():
    loop = HostRule("127.0.0.1")
    assert loop.allows("127.0.0.1:1") and loop.allows("localhost") and loop.allows("[::1]:8765")
    assert not loop.allows("rebind.attacker.example") and not loop.allows("10.0.0.5") and not loop.allows("")
    anywhere = HostRule("0.0.0.0", ("spkd.example.com",))
    assert anywhere.allows("192.168.1.20:8765") and anywhere.allows("spkd.example.com")
    assert anywhere.allows(socket.gethostname())
    assert not anywhere.allows("rebind.attacker.example:8765")
    named = HostRule("box.lan")
    assert named.allows("box.lan:8765") and not named.allows("127.0.0.1")


# --- X3: tokens and guessing ----------------------------------------------------------

def test_wrong_tokens_are_slowed_per_client(tmp_path):
    config = migrated(loaded(write_config(tmp_path, web={"token": TOKEN})))
    with client(config) as c:
        c.get("/login")
        csrf = c.cookies.get(CSRF_COOKIE)
        codes = [c.post("/login", data={"csrf_token": csrf, "token": f"wrong-{i}"}).status_code for i in range(8)]
        assert codes[:LoginThrottle.FREE] == [401] * LoginThrottle.FREE
        assert 429 in codes[LoginThrottle.FREE:]
        # The right token too must wait its turn: it is not even looked at.
        assert c.post("/login", data={"csrf_token": csrf, "token": TOKEN}).status_code == 429
        # Bearer guesses count the same way.
        assert c.get("/metrics", headers={"authorization": "Bearer nope"}).status_code == 429


def test_the_throttle_grows_and_forgives():
    now = [0.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    for _ in range(LoginThrottle.FREE):
        assert throttle.wait_seconds("a") == 0
        throttle.failed("a")
    assert throttle.wait_seconds("a") == 1.0 and throttle.wait_seconds("b") == 0
    throttle.failed("a")
    assert throttle.wait_seconds("a") == 2.0
    now[0] = 10.0
    assert throttle.wait_seconds("a") == 0
    throttle.succeeded("a")
    throttle.failed("a")
    assert throttle.wait_seconds("a") == 0


# --- C5: NUL, ids, pages and dates ------------------------------------------------------

def test_nul_huge_ids_pages_and_the_last_day_are_4xx_never_500(config):
    with client(config) as c:
        assert c.get("/search?q=a%00b").status_code == 400
        assert c.get("/jobs?name=%00").status_code == 400
        assert c.get(f"/jobs/{2**63}").status_code == 404
        assert c.get(f"/jobs/{10**30}/audio").status_code == 404
        assert c.get(f"/jobs?page={2**63}").status_code == 400
        assert c.get("/jobs?until=9999-12-31").status_code == 200
        assert c.get("/jobs?since=9999-12-31&until=0001-01-01").status_code == 200
        assert c.get("/jobs?since=99999-01-01").status_code == 400


# --- X3 and C6: uploads -------------------------------------------------------------------

def test_an_upload_name_with_a_bidi_override_is_refused(config):
    with client(config) as c:
        c.get("/")
        csrf = c.cookies.get(CSRF_COOKIE)
        response = c.post("/upload", headers={"x-csrf-token": csrf},
                          files=[("files", ("evil\u202egpj.wav", b"RIFF0000WAVE", "audio/wav"))])
        assert response.status_code == 400 and "bidirectional" in response.json()["error"]
    assert not [p for p in config.paths.inbox.iterdir() if not p.name.startswith(".")]


def test_parts_left_by_a_killed_upload_are_swept_but_not_one_being_written(config):
    config.paths.inbox.mkdir(parents=True, exist_ok=True)
    left = config.paths.inbox / f"{TEMP_PREFIX}dead.part"
    left.write_bytes(b"x" * 1000)
    busy = config.paths.inbox / f"{TEMP_PREFIX}busy.part"
    fd = os.open(busy, os.O_WRONLY | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert sweep_abandoned(config) == [left]
        assert not left.exists() and busy.exists()
    finally:
        os.close(fd)


# --- C8: the database in trouble ----------------------------------------------------------

def test_a_database_that_cannot_be_used_is_one_clear_page_not_a_500(config):
    app = create_app(config)

    def broken(*_a, **_k):
        raise DatabaseUnavailableError("disk I/O error")

    app.state.store.job_page = broken
    with TestClient(app, base_url="http://127.0.0.1:8765", raise_server_exceptions=False) as c:
        response = c.get("/jobs", headers={"accept": "text/html"})
    assert response.status_code == 503
    assert "disk I/O error" in response.text and "Traceback" not in response.text


# --- S4: a real server ----------------------------------------------------------------------

@pytest.fixture()
def live(config, monkeypatch):
    monkeypatch.setattr(server, "HEADER_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(server, "MAX_CONNECTIONS", 20)
    sock = server.bind("127.0.0.1:0")
    uv = server._server(config, sock, supervised=False, listen="127.0.0.1:0")
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    port = sock.getsockname()[1]
    deadline = time.monotonic() + 20
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port
    uv.should_exit = True
    thread.join(timeout=10)


def _get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return s.recv(100)


def test_a_connection_that_never_finishes_its_headers_is_closed(live):
    slow = socket.create_connection(("127.0.0.1", live), timeout=5)
    slow.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
    started = time.monotonic()
    assert slow.recv(100) == b""  # closed by the server
    assert time.monotonic() - started < 4
    slow.close()


def test_slow_connections_cannot_starve_a_real_request(live):
    slow = [socket.create_connection(("127.0.0.1", live), timeout=5) for _ in range(40)]
    try:
        for s in slow:
            s.sendall(b"GET / HTTP/1.1\r\n")
        assert _get(live).startswith(b"HTTP/1.1 200")
    finally:
        for s in slow:
            s.close()


def test_a_stalled_body_gets_408():
    received: list[str] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        while True:
            message = await receive()
            received.append(message["type"])
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})

    sent: list[dict] = []
    messages = [{"type": "http.request", "body": b"a", "more_body": True}]

    async def receive():  # type: ignore[no-untyped-def]
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)

    async def send(message):  # type: ignore[no-untyped-def]
        sent.append(message)

    asyncio.run(server.BodyTimeout(app, seconds=0.2)({"type": "http"}, receive, send))
    assert sent[0]["status"] == 408 and len(sent) == 2  # the app's own answer goes nowhere
    assert received == ["http.request", "http.disconnect"]


def test_running_out_of_descriptors_is_logged_once_a_minute(monkeypatch):
    monkeypatch.setattr(server, "RESOURCE_LOG", server._ResourceLog())
    log = server.RESOURCE_LOG
    exc = OSError(24, "Too many open files")

    def record() -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "accept failed", (), (OSError, exc, None))

    first = record()
    assert log.filter(first) and first.exc_info is None and "Too many open files" in first.getMessage()
    assert not any(log.filter(record()) for _ in range(1000))
    other = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "something else", (), None)
    assert log.filter(other)
