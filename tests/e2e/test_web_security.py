"""Hostile requests against a real `spkd web` process (uvicorn decoding the raw request
line, no test client in between): traversal in every spelling gets 404, a POST
without its CSRF token is refused, an XSS file name comes back escaped, audio answers
a Range request with 206; and `spkd run` with a non-loopback `web.listen` but no
token runs without the dashboard, saying why."""

from __future__ import annotations

import http.client
import re
import socket

import pytest

from tests.support.daemon import Daemon
from tests.support.web import XSS_NAME, WebProcess, free_port, loaded, populate, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("web-security")
    config_path = write_config(root)
    config = loaded(config_path)
    jobs = populate(config)
    (root / "outside.txt").write_text("a secret next to the folders\n")
    # a link inside the outbox pointing outside it, and one inside the archive
    (config.paths.outbox / "link.txt").symlink_to(root / "outside.txt")
    (config.paths.archive / "link.wav").symlink_to(root / "outside.txt")
    with WebProcess(config_path) as web:
        yield web, jobs, config


def request(web: WebProcess, method: str, raw_path: str, headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with the path exactly as given (http.client does not normalise it)."""
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
    try:
        conn.putrequest(method, raw_path, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


TRAVERSALS = (
    "/jobs/{done}/outputs/../../../../etc/passwd",
    "/jobs/{done}/outputs/..%2f..%2f..%2fetc%2fpasswd",
    "/jobs/{done}/outputs/%2e%2e%2f%2e%2e%2fspkd.json",
    "/jobs/{done}/outputs/..%252f..%252fspkd.json",
    "/jobs/{done}/outputs//etc/passwd",
    "/jobs/{done}/outputs/%2fetc%2fpasswd",
    "/jobs/{done}/outputs/link.txt",
    "/jobs/{done}/audio/../../spkd.json",
    "/jobs/{done}/audio%2f..%2f..%2fspkd.json",
    "/jobs/..%2f..%2fspkd.json/audio",
    "/jobs/-1/audio",
    "/jobs/{failed}/audio",
    "/static/../app.py",
    "/static/..%2fapp.py",
    "/static/%2e%2e/%2e%2e/config.py",
    "/static/..%5c..%5cconfig.py",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/archive/link.wav",
    "/outbox/link.txt",
    "/../../etc/passwd",
)


def test_traversal_attempts_get_404(served) -> None:
    web, jobs, _config = served
    for template in TRAVERSALS:
        path = template.format(done=jobs.done, failed=jobs.failed)
        status, _headers, body = request(web, "GET", path)
        assert status == 404, f"{path}: {status} {body[:200]!r}"
        assert b"root:" not in body and b"secret" not in body and b"def create_app" not in body, path


def test_audio_answers_range_requests(served) -> None:
    web, jobs, _config = served
    size = jobs.audio.stat().st_size
    status, headers, body = request(web, "GET", f"/jobs/{jobs.done}/audio", {"Range": "bytes=1000-1999"})
    assert status == 206 and body == jobs.audio.read_bytes()[1000:2000]
    assert headers["content-range"] == f"bytes 1000-1999/{size}" and headers["accept-ranges"] == "bytes"
    status, headers, body = request(web, "GET", f"/jobs/{jobs.done}/audio", {"Range": f"bytes={size + 10}-"})
    assert status == 416


def test_a_post_without_csrf_is_refused(served) -> None:
    web, jobs, _config = served
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _h, _b = request(web, "POST", f"/jobs/{jobs.failed}/retry", form, b"next=%2F")
    assert status == 403
    status, headers, _b = request(web, "GET", "/", {"Accept": "text/html"})
    cookie = re.search(r"spkd_csrf=([^;]+)", headers["set-cookie"]).group(1)
    status, _h, _b = request(web, "POST", f"/jobs/{jobs.failed}/retry", {**form, "Cookie": f"spkd_csrf={cookie}"},
                             b"next=%2F")
    assert status == 403, "the cookie alone is not the token"
    status, _h, _b = request(web, "POST", "/upload", {"Cookie": f"spkd_csrf={cookie}",
                                                      "Content-Type": "multipart/form-data; boundary=x"}, b"--x--")
    assert status == 403
    status, _h, body = request(web, "GET", f"/jobs/{jobs.failed}/live")
    assert b'data-state="failed"' in body, "nothing was requeued"


def test_an_xss_file_name_comes_back_as_text(served) -> None:
    web, jobs, _config = served
    for path in ("/", "/jobs", f"/jobs/{jobs.done}"):
        status, headers, body = request(web, "GET", path, {"Accept": "text/html"})
        assert status == 200
        assert b"<img src=x" not in body, path
        assert "script-src 'self'" in headers["content-security-policy"]
    _s, _h, body = request(web, "GET", f"/jobs/{jobs.done}")
    assert b"&lt;img src=x onerror=alert(1)&gt;.wav" in body and XSS_NAME.encode() not in body


def test_a_daemon_with_a_public_listen_and_no_token_runs_without_the_dashboard(tmp_path) -> None:
    port = free_port()
    with Daemon(tmp_path / "d", config={"workers": {"count": 1}, "web": {"listen": f"0.0.0.0:{port}"}}) as d:
        d.start()
        d.wait(lambda: "not starting the dashboard" in d.log(), timeout=30, what="the refusal in the log")
        assert "web.token" in d.log()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        assert d.proc is not None and d.proc.poll() is None, "the daemon itself runs on"
