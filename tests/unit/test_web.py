"""The dashboard's application in process (Starlette's TestClient; no browser, no
server): what its pages show and escape, the token, CSRF, uploads into the inbox, a
job's own files and nothing else, /metrics through prometheus_client's own parser,
search, renaming speakers and the voice library (the rooms' own functions, no model
loaded here). tests/e2e/test_web_*.py drive a real server and a real browser."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from daemon.jobs import diskguard
from daemon.store import EventRow
from daemon.web.app import create_app
from daemon.web.security import CSP, CSRF_COOKIE
from daemon.web.server import is_loopback, refusal
from tests.support.daemon import REPO, write_wav
from tests.support.web import SEGMENTS, XSS_NAME, loaded, populate, write_config

HTML = {"accept": "text/html"}
TOKEN = "correct-horse-battery-staple"


@pytest.fixture()
def setup(tmp_path):
    config = loaded(write_config(tmp_path, web={"max_upload_mb": 1}))
    return config, populate(config)


@pytest.fixture()
def client(setup):
    config, _jobs = setup
    with TestClient(create_app(config), base_url="http://127.0.0.1:8765") as c:
        yield c


def csrf_of(client: TestClient) -> str:
    client.get("/", headers=HTML)
    return client.cookies[CSRF_COOKIE]


# --- pages and escaping --------------------------------------------------------------------

def test_every_page_shows_names_and_sentences_as_text(client, setup) -> None:
    _config, jobs = setup
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    for path in ("/", "/jobs", f"/jobs/{jobs.done}", "/jobs?name=onerror"):
        body = client.get(path, headers=HTML).text
        assert "<img src=x" not in body, path
    assert escaped in client.get("/jobs", headers=HTML).text
    page = client.get(f"/jobs/{jobs.done}", headers=HTML).text
    assert escaped in page
    # the transcript view (daemon.writers.html_page, shared with NAME.html) escapes with html.escape
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<b>everyone</b>" not in page and "&lt;b&gt;everyone&lt;/b&gt;" in page
    # one sentence element per segment, with its start for the player
    starts = re.findall(r'class="sent" data-index="(\d+)" data-start="([0-9.]+)"', page)
    assert [(int(i), float(s)) for i, s in starts] == [(i, s.start) for i, s in enumerate(SEGMENTS)]
    assert f'src="/jobs/{jobs.done}/audio"' in page
    for fmt in ("json", "txt", "srt", "vtt", "html", "docx"):
        assert f'href="/jobs/{jobs.done}/outputs/{fmt}"' in page
    # the rename form: one field per speaker, by its cluster label, and the enrol box
    assert f'action="/jobs/{jobs.done}/speakers"' in page
    assert 'name="name:Speaker1"' in page and 'name="name:Speaker2"' in page and 'name="enrol"' in page


def test_the_overview_shows_daemon_queue_and_failures(client, setup) -> None:
    _config, jobs = setup
    page = client.get("/", headers=HTML).text
    assert "Daemon not running" in page
    assert re.search(r'id="count-done">1<', page) and re.search(r'id="count-failed">1<', page)
    assert f'action="/jobs/{jobs.failed}/retry"' in page and "cannot decode: &lt;junk&gt;" in page
    fragment = client.get("/fragments/overview", headers=HTML).text
    assert "<html" not in fragment and 'id="count-done">1<' in fragment


def test_the_jobs_list_filters_and_pages(client, setup) -> None:
    _config, jobs = setup
    rows = lambda body: [int(i) for i in re.findall(r'<tr class="state-\w+" data-job="(\d+)"', body)]  # noqa: E731
    assert rows(client.get("/jobs", headers=HTML).text) == [jobs.failed, jobs.done]
    assert rows(client.get("/jobs?state=failed", headers=HTML).text) == [jobs.failed]
    assert rows(client.get("/jobs?name=BROKEN", headers=HTML).text) == [jobs.failed]
    assert rows(client.get("/jobs?name=%25", headers=HTML).text) == [], "a LIKE wildcard is a character"
    assert rows(client.get("/jobs?since=2000-01-01&until=2000-01-02", headers=HTML).text) == []
    assert client.get("/jobs?state=bogus").status_code == 400
    assert client.get("/jobs?since=yesterday").status_code == 400


def test_headers_and_templates_allow_no_inline_script() -> None:
    assert "unsafe-inline" not in CSP and "script-src 'self'" in CSP and "default-src 'none'" in CSP
    templates = (REPO / "daemon" / "web" / "templates").glob("*.html")
    for path in templates:
        text = path.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in tag, f"{path.name}: inline script {tag}"
        assert not re.search(r"\son[a-z]+\s*=", text), f"{path.name}: an inline event handler"
        assert not re.search(r"\sstyle\s*=", text), f"{path.name}: an inline style"


def test_every_response_carries_the_security_headers(client) -> None:
    for path in ("/", "/static/spkd.js", "/metrics", "/nowhere"):
        response = client.get(path)
        assert response.headers["content-security-policy"] == CSP, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"


def test_a_running_jobs_stage_and_progress_show_on_its_page_and_in_the_lists(client, setup) -> None:
    config, _jobs = setup
    from daemon.progress import Progress
    from daemon.store import Store

    store = Store(config.database_url, host=config.host)
    job_id = store.enqueue(source_name="long.wav", spool_path="/spool/x/long.wav", output_stem="long", sha256=None,
                           size_bytes=1, audio_seconds=600)
    store.claim(slot=0, pid=4242, device="cpu", lease_seconds=60)
    store.heartbeat(job_id, pid=4242, lease_seconds=60, progress=Progress("punctuation", 0.81, 95.0))
    store.close()
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/live", "/", "/jobs?state=running"):
        body = client.get(path, headers=HTML).text
        assert '<progress max="1" value="0.81">' in body, path
        assert '<span class="stage">punctuation</span> <span class="pct">81%</span>' in body, path
        assert "~95 s left" in body, path


# --- a job's own files -----------------------------------------------------------------------

def test_audio_is_served_with_range_requests(client, setup) -> None:
    _config, jobs = setup
    whole = client.get(f"/jobs/{jobs.done}/audio")
    assert whole.status_code == 200 and whole.content == jobs.audio.read_bytes()
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "audio/wav"
    part = client.get(f"/jobs/{jobs.done}/audio", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == jobs.audio.read_bytes()[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{jobs.audio.stat().st_size}"
    assert client.get(f"/jobs/{jobs.failed}/audio").status_code == 404, "a failed job has nothing archived"


def test_outputs_download_as_attachments(client, setup) -> None:
    config, jobs = setup
    response = client.get(f"/jobs/{jobs.done}/outputs/srt")
    assert response.status_code == 200
    stem = Path(XSS_NAME).stem
    assert response.content == (config.paths.outbox / f"{stem}.srt").read_bytes()
    assert response.headers["content-disposition"].startswith("attachment;")
    assert client.get(f"/jobs/{jobs.done}/outputs/md").status_code == 404, "not one of its outputs"
    assert client.get(f"/jobs/{jobs.done}/outputs/bogus").status_code == 404
    assert client.get(f"/jobs/{jobs.failed}/outputs/json").status_code == 404
    assert client.get("/jobs/999/outputs/json").status_code == 404


def test_files_are_found_from_the_row_and_never_through_a_link(client, setup, tmp_path) -> None:
    config, jobs = setup
    secret = tmp_path / "secret.wav"
    write_wav(secret, 0.5)
    # a symbolic link where the archived source was: 404, not the file it points to
    jobs.audio.unlink()
    jobs.audio.symlink_to(secret)
    assert client.get(f"/jobs/{jobs.done}/audio").status_code == 404
    # an output replaced by a link: 404
    out = config.paths.outbox / (Path(XSS_NAME).stem + ".txt")
    out.unlink()
    out.symlink_to(secret)
    assert client.get(f"/jobs/{jobs.done}/outputs/txt").status_code == 404
    # a row that names a path outside the archive (a tampered database): 404
    from sqlalchemy import text

    from daemon.store.db import make_engine

    engine = make_engine(config.database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET archive_name = :p WHERE id = :id"), {"p": "../secret.wav", "id": jobs.done})
    engine.dispose()
    assert client.get(f"/jobs/{jobs.done}/audio").status_code == 404


# --- CSRF and the token ----------------------------------------------------------------------

def test_a_post_without_the_csrf_token_is_refused(client, setup) -> None:
    config, jobs = setup
    assert client.post(f"/jobs/{jobs.failed}/retry").status_code == 403
    csrf = csrf_of(client)
    assert client.post(f"/jobs/{jobs.failed}/retry", data={"csrf_token": "x" * 43}).status_code == 403
    other = TestClient(create_app(config), base_url="http://127.0.0.1:8765")
    assert other.post(f"/jobs/{jobs.failed}/retry", data={"csrf_token": csrf}).status_code == 403, \
        "the token alone, without the cookie it belongs to"
    assert client.post(f"/jobs/{jobs.failed}/retry", data={"csrf_token": csrf},
                       headers={"origin": "http://evil.example"}).status_code == 403
    assert client.get(f"/jobs/{jobs.failed}/retry").status_code == 405, "state changes are POSTs"
    assert "queued" not in client.get(f"/jobs/{jobs.failed}/live").text


def test_retry_requeues_a_failed_job_as_spkd_retry_does(client, setup) -> None:
    config, jobs = setup
    csrf = csrf_of(client)
    response = client.post(f"/jobs/{jobs.failed}/retry", data={"csrf_token": csrf, "next": "/"},
                           follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    live = client.get(f"/jobs/{jobs.failed}/live").text
    assert 'data-state="queued"' in live and "retry_requested" in live
    assert not (config.paths.failed / "broken.wav").exists(), "its source went back into the spool"
    assert client.post(f"/jobs/{jobs.done}/retry", data={"csrf_token": csrf}).status_code == 409
    response = client.post(f"/jobs/{jobs.failed}/retry", data={"csrf_token": csrf, "next": "//evil.example/"},
                           follow_redirects=False)
    assert response.status_code == 409  # no longer failed


def test_with_a_token_every_request_needs_it(tmp_path) -> None:
    config = loaded(write_config(tmp_path, web={"token": TOKEN}))
    jobs = populate(config)
    c = TestClient(create_app(config), base_url="http://127.0.0.1:8765")
    r = c.get(f"/jobs/{jobs.done}", headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/login?next=%2Fjobs%2F{jobs.done}"
    assert c.get("/metrics").status_code == 401 and c.get("/metrics").headers["www-authenticate"].startswith("Bearer")
    assert c.get(f"/jobs/{jobs.done}/audio").status_code == 401
    assert c.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert c.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
    # a bearer-token script needs no CSRF token (a browser never sends that header by itself)
    r = c.post(f"/jobs/{jobs.failed}/retry", headers={"authorization": f"Bearer {TOKEN}"}, follow_redirects=False)
    assert r.status_code == 303

    login = c.get("/login", headers=HTML)
    assert login.status_code == 200 and 'type="password"' in login.text
    csrf = c.cookies[CSRF_COOKIE]
    assert c.post("/login", data={"csrf_token": csrf, "token": "wrong"}).status_code == 401
    assert c.post("/login", data={"token": TOKEN}).status_code == 403, "the login form has a CSRF token too"
    r = c.post("/login", data={"csrf_token": csrf, "token": TOKEN, "next": f"/jobs/{jobs.done}"},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/jobs/{jobs.done}"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    assert c.get(f"/jobs/{jobs.done}", headers=HTML).status_code == 200
    c.post("/logout", data={"csrf_token": csrf})
    c.cookies.delete("spkd_session")
    assert c.get("/", headers=HTML, follow_redirects=False).status_code == 303


def test_a_non_loopback_address_needs_a_token(tmp_path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.9.9.9")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("myhost")
    bare = loaded(write_config(tmp_path / "bare"))
    assert refusal(bare, "127.0.0.1:8765") is None
    assert "web.token" in (refusal(bare, "0.0.0.0:8765") or "")
    assert refusal(loaded(write_config(tmp_path / "tok", web={"token": TOKEN})), "0.0.0.0:8765") is None
    proc = subprocess.run([sys.executable, "-m", "daemon", "--config", str(tmp_path / "bare" / "spkd.json"), "web",
                           "--listen", "0.0.0.0:1"], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    assert "web.token" in proc.stderr and "0.0.0.0:1" in proc.stderr


# --- uploads ------------------------------------------------------------------------------

def upload(client: TestClient, files: list[tuple[str, bytes]], **fields: str | list[str]):
    return client.post("/upload", headers={"x-csrf-token": csrf_of(client)},
                       files=[("file", (name, data, "audio/wav")) for name, data in files], data=fields)


def wav_bytes(tmp_path: Path, seconds: float = 0.5) -> bytes:
    return write_wav(tmp_path / "source.wav", seconds).read_bytes()


def inbox_files(config) -> list[str]:
    return sorted(p.relative_to(config.paths.inbox).as_posix() for p in config.paths.inbox.rglob("*") if p.is_file())


def test_uploads_land_safely_named_in_the_inbox(client, setup, tmp_path) -> None:
    config, _jobs = setup
    data = wav_bytes(tmp_path)
    names = ["../../etc/evil.wav", "..\\..\\win.wav", ".hidden.wav", XSS_NAME, "plain.wav", "plain.wav"]
    # a body made by hand: HTTP clients would percent-encode the control characters
    boundary = "spkdboundary7f3a"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{n}"\r\n'
                    f"Content-Type: audio/wav\r\n\r\n".encode() + data + b"\r\n" for n in names)
    body += f"--{boundary}--\r\n".encode()
    r = client.post("/upload", content=body, headers={"x-csrf-token": csrf_of(client),
                                                      "content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text
    saved = [f["saved_as"] for f in r.json()["files"]]
    assert saved == ["evil.wav", "win.wav", "hidden.wav", XSS_NAME, "plain.wav", "plain (2).wav"]
    assert inbox_files(config) == sorted(saved), "nothing else: no temporary file is left"
    assert all((config.paths.inbox / n).read_bytes() == data for n in saved)
    assert not (config.paths.inbox.parent / "etc").exists()
    # a control character in a name is refused by the one name rule (daemon.names), never saved
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a\x01b\u200bc.wav"\r\n'
            f"Content-Type: audio/wav\r\n\r\n".encode() + data + f"\r\n--{boundary}--\r\n".encode())
    r = client.post("/upload", content=body, headers={"x-csrf-token": csrf_of(client),
                                                      "content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400 and "control character" in r.json()["error"], r.text
    assert inbox_files(config) == sorted(saved)


def test_upload_options_become_a_checked_sidecar(client, setup, tmp_path) -> None:
    config, _jobs = setup
    data = wav_bytes(tmp_path)
    r = upload(client, [("talk.wav", data)], speakers="2", hotwords="魔搭, FunASR", formats=["srt", "json"])
    assert r.status_code == 200, r.text
    sidecar = json.loads((config.paths.inbox / "talk.wav.spkd.json").read_text())
    assert sidecar == {"speakers": 2, "hotwords": ["魔搭", "FunASR"], "formats": ["srt", "json"]}
    r = upload(client, [("bad.wav", data)], speakers="99")
    assert r.status_code == 400 and "speakers" in r.json()["error"]
    r = upload(client, [("bad.wav", data)], formats=["pdf"])
    assert r.status_code == 400 and "pdf" in r.json()["error"]
    assert inbox_files(config) == ["talk.wav", "talk.wav.spkd.json"], "a refused upload leaves nothing"


def test_uploads_are_refused_past_the_limit_and_for_what_the_watcher_ignores(client, setup, tmp_path) -> None:
    config, _jobs = setup
    big = wav_bytes(tmp_path, 40.0)  # 1.2 MB, over web.max_upload_mb = 1
    r = upload(client, [("big.wav", big)])
    assert r.status_code == 413 and "web.max_upload_mb" in r.json()["error"]
    data = wav_bytes(tmp_path)
    for name in ("notes.txt", "download.wav.part", "x.spkd.json"):
        r = upload(client, [(name, data)])
        assert r.status_code == 400, name
    assert upload(client, [("empty.wav", b"")]).status_code == 400
    assert client.post("/upload", files=[("file", ("a.wav", data))]).status_code == 403, "no CSRF token"
    assert inbox_files(config) == []


# --- /metrics ----------------------------------------------------------------------------------

def test_metrics_parse_as_prometheus_text(client, setup) -> None:
    config, _jobs = setup
    from daemon.store import Store

    store = Store(config.database_url, host=config.host)
    store.worker_update(0, pid=123, device="cpu", state="busy", current_job_id=None)
    store.close()
    diskguard.set_paused(config, "low disk space: a test")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    samples = [sample for family in families.values() for sample in family.samples]
    value = lambda name, **labels: next(s.value for s in samples  # noqa: E731
                                        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))
    assert families["spkd_audio_seconds"].type == "counter"
    assert value("spkd_jobs", state="done") == 1 and value("spkd_jobs", state="failed") == 1
    assert value("spkd_jobs", state="queued") == 0 and value("spkd_queue_depth") == 0
    assert value("spkd_oldest_queued_job_age_seconds") == 0
    assert value("spkd_audio_seconds_total", device="cpu") == pytest.approx(6.0)
    assert families["spkd_processing_seconds"].type == "histogram"
    assert value("spkd_processing_seconds_count", device="cpu") == 1
    assert value("spkd_processing_seconds_bucket", device="cpu", le="1.0") == 1
    assert value("spkd_real_time_factor_bucket", device="cpu", le="0.05") == 0
    assert value("spkd_real_time_factor_bucket", device="cpu", le="0.1") == 1
    assert value("spkd_real_time_factor_sum", device="cpu") == pytest.approx(0.1)
    assert value("spkd_slot_state", host=config.host, slot="0", state="busy") == 1
    assert value("spkd_slot_state", host=config.host, slot="0", state="ready") == 0
    assert value("spkd_disk_guard_paused") == 1
    assert value("spkd_last_success_timestamp_seconds") > 1.6e9
    assert value("spkd_daemon_up") == 0


# --- search ---------------------------------------------------------------------------------

def test_search_finds_what_was_said_and_links_to_that_moment(client, setup) -> None:
    _config, jobs = setup
    page = client.get("/search?q=WELCOME", headers=HTML).text  # what spkd search runs: case does not matter
    hits = re.findall(r'<a href="/jobs/(\d+)#t=([0-9.]+)">', page)
    assert hits == [(str(jobs.done), f"{SEGMENTS[0].start:.3f}")]
    assert "&lt;b&gt;everyone&lt;/b&gt; &amp; <mark>welcome</mark>." in page, "the text escaped, the match marked"
    assert "&lt;img src=x onerror=alert(1)&gt;.wav" in page and "<img" not in page
    page = client.get("/search?q=%3Cscript%3E", headers=HTML).text
    assert "<mark>&lt;script&gt;</mark>alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert "Nothing found" in client.get("/search?q=nowhere+at+all", headers=HTML).text
    assert 'name="q"' in client.get("/search", headers=HTML).text


def test_search_takes_the_filters_of_spkd_search_and_short_queries_without_a_note(client, setup) -> None:
    _config, jobs = setup
    hits = lambda page: re.findall(r'<a href="/jobs/(\d+)#t=([0-9.]+)">', page)  # noqa: E731
    page = client.get("/search?q=we&speaker=speaker2", headers=HTML).text  # 2 characters: the index of grams
    assert hits(page) == [(str(jobs.done), f"{SEGMENTS[1].start:.3f}")] and 'class="note"' not in page
    assert 'name="speaker" value="speaker2"' in page
    assert len(hits(client.get("/search?q=e", headers=HTML).text)) == 3
    assert hits(client.get("/search?q=e&speaker=Nobody", headers=HTML).text) == []
    assert len(hits(client.get("/search?q=e&since=2000-01-01&until=2999-12-31", headers=HTML).text)) == 3
    assert hits(client.get("/search?q=e&since=2999-01-01", headers=HTML).text) == []
    assert hits(client.get("/search?q=e&until=2000-01-01", headers=HTML).text) == []
    assert "not a date" in client.get("/search?q=e&since=soon", headers=HTML).text


# --- renaming speakers ----------------------------------------------------------------------

XSS_VOICE = "<img src=x onerror=alert(2)>"  # a valid voice name (no '/'), and markup


def outputs_of(config, stem: str) -> dict[str, str]:
    return {fmt: (config.paths.outbox / f"{stem}.{fmt}").read_text(encoding="utf-8") for fmt in ("txt", "srt", "json")}


def three_speakers(config, job_id: int) -> None:
    """The done job's stored transcript with a third speaker (what rename re-renders from)."""
    from daemon.jobs import outputs, results
    from daemon.transcript import Segment

    transcript = outputs.load_transcript(config, job_id)
    assert transcript is not None
    results.save_transcript(config, job_id, transcript.replace(
        segments=transcript.segments + (Segment(6.0, 7.0, 3, "A third voice."),)))


def rename(client: TestClient, job_id: int, csrf: str | None, **names: str):
    data = {f"name:{label}": value for label, value in names.items()}
    if csrf is not None:
        data["csrf_token"] = csrf
    return client.post(f"/jobs/{job_id}/speakers", data=data, headers=HTML, follow_redirects=False)


def test_renaming_a_speaker_rerenders_every_output_and_the_page(client, setup) -> None:
    config, jobs = setup
    stem = Path(XSS_NAME).stem
    three_speakers(config, jobs.done)
    before = outputs_of(config, stem)
    assert rename(client, jobs.done, None, Speaker1="Alice").status_code == 403, "no CSRF token"
    assert outputs_of(config, stem) == before, "a refused rename changes nothing"
    csrf = csrf_of(client)

    r = rename(client, jobs.done, csrf, Speaker1=XSS_VOICE, Speaker2="", Speaker3="")
    assert r.status_code == 303 and r.headers["location"] == f"/jobs/{jobs.done}"
    after = outputs_of(config, stem)
    assert XSS_VOICE in after["txt"] and XSS_VOICE in after["srt"]
    doc = json.loads(after["json"])
    shown = {s["label"]: (s["name"], s["display"], s["renamed"]) for s in doc["speakers"]}
    # the unnamed speakers are numbered among themselves, in every output alike
    assert shown == {"Speaker1": (XSS_VOICE, XSS_VOICE, True), "Speaker2": (None, "Speaker1", False),
                     "Speaker3": (None, "Speaker2", False)}
    page = client.get(f"/jobs/{jobs.done}", headers=HTML).text
    assert "<img src=x onerror=alert(2)>" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    rows = dict(re.findall(r'<tr data-label="(Speaker\d)">.*?<td class="shown">([^<]*)</td>', page, re.S))
    assert rows == {"Speaker1": "&lt;img src=x onerror=alert(2)&gt;", "Speaker2": "Speaker1", "Speaker3": "Speaker2"}
    assert re.search(r'data-label="Speaker1">.*?<td class="source">renamed</td>', page, re.S)
    assert '<strong>Speaker1</strong>' in page and "renamed" in [e.kind for e in _events(config, jobs.done)]
    # the segments rows too: search shows the new name
    hit = client.get("/search?q=welcome", headers=HTML).text
    assert "&lt;img src=x onerror=alert(2)&gt;" in hit and "<img src=x onerror=alert(2)>" not in hit

    # the field names the cluster: Speaker2 is the speaker shown as Speaker1 now, not the
    # one shown as Speaker2 (Speaker3's cluster)
    r = rename(client, jobs.done, csrf, Speaker1=XSS_VOICE, Speaker2="Bob", Speaker3="")
    assert r.status_code == 303, r.text
    doc = json.loads(outputs_of(config, stem)["json"])
    assert {s["speaker"]: s["speaker_name"] for s in doc["segments"]} == {1: XSS_VOICE, 2: "Bob", 3: "Speaker1"}


def test_a_name_from_the_library_shows_its_voice_and_score(client, setup) -> None:
    config, jobs = setup
    from daemon.jobs import outputs, results
    from daemon.store import Store
    from daemon.transcript import SpeakerMatch

    store = Store(config.database_url, host=config.host)
    voice_id, _sample_id = store.add_voice_sample(XSS_VOICE, _sample())
    store.close()
    transcript = outputs.load_transcript(config, jobs.done)
    assert transcript is not None
    results.save_transcript(config, jobs.done, transcript.replace(
        speaker_names={1: XSS_VOICE}, speaker_matches={1: SpeakerMatch(voice=voice_id, score=0.87123)}))

    def row(label: str) -> tuple[str, str, str]:
        page = client.get(f"/jobs/{jobs.done}", headers=HTML).text
        assert "<img src=x" not in page
        found = re.search(rf'<tr data-label="{label}">.*?<td class="shown">([^<]*)</td><td class="source">([^<]*)'
                          r'</td>\s*<td class="score">([^<]*)</td>', page, re.S)
        assert found, page
        return found.groups()

    escaped = "&lt;img src=x onerror=alert(2)&gt;"
    assert row("Speaker1") == (escaped, f"voice {escaped}", "0.871")
    assert row("Speaker2") == ("Speaker1", "unnamed", "")
    csrf = csrf_of(client)
    assert client.post("/voices/remove", data={"csrf_token": csrf, "name": XSS_VOICE}).status_code == 200
    assert row("Speaker1") == (escaped, f"voice #{voice_id} (removed from the library since)", "0.871")


def test_a_refused_rename_says_why_and_changes_nothing(client, setup) -> None:
    config, jobs = setup
    stem = Path(XSS_NAME).stem
    csrf = csrf_of(client)
    before = outputs_of(config, stem)
    cases = [
        ({"Speaker1": "Speaker7"}, False, "SpeakerN is how unnamed speakers are shown"),
        ({"Speaker1": "a/b"}, False, "may not contain"),
        ({"Speaker1": "Ann", "Speaker2": "Ann"}, False, "two speakers cannot get the same name"),
        ({"Speaker9": "Ann"}, False, "has no speaker Speaker9"),
        ({"Speaker1": "", "Speaker2": " "}, False, "no speaker&#39;s name changed"),
        # populate's transcript has no centroids (no speaker model): nothing to enrol
        ({"Speaker1": XSS_VOICE}, True, "has no stored centroid"),
    ]
    for names, enrol, message in cases:
        data = {f"name:{k}": v for k, v in names.items()} | {"csrf_token": csrf}
        if enrol:
            data["enrol"] = "1"
        r = client.post(f"/jobs/{jobs.done}/speakers", data=data, headers=HTML)
        assert r.status_code == 400 and message in r.text, (names, r.text)
        assert "<img src=x onerror" not in r.text
    assert outputs_of(config, stem) == before
    r = client.post(f"/jobs/{jobs.failed}/speakers", data={"csrf_token": csrf, "name:Speaker1": "Ann"})
    assert r.status_code == 400 and "not a done transcription" in r.text
    assert client.post("/jobs/999/speakers", data={"csrf_token": csrf, "name:Speaker1": "Ann"}).status_code == 404
    assert 'name="name:' not in client.get(f"/jobs/{jobs.failed}", headers=HTML).text, "no form for a failed job"


def _events(config, job_id: int) -> list[EventRow]:
    from daemon.store import Store

    store = Store(config.database_url, host=config.host)
    try:
        return store.events(job_id)
    finally:
        store.close()


# --- the voice library ------------------------------------------------------------------------

def _sample(origin: str = "cli") -> dict:
    return {"embedding": (0.1, 0.2, 0.3), "model_name": "cam++", "model_revision": "v1", "sha256": None,
            "speech_seconds": 12.5, "audio_seconds": 14.0, "origin": origin, "source": "x.wav", "job_id": None}


def enrol(client: TestClient, csrf: str | None, name: str, filename: str, data: bytes):
    fields = {"name": name} | ({"csrf_token": csrf} if csrf is not None else {})
    return client.post("/voices", data=fields, files=[("recording", (filename, data, "audio/wav"))], headers=HTML,
                       follow_redirects=False)


def test_the_voices_page_lists_the_library_with_names_as_text(client, setup) -> None:
    config, _jobs = setup
    from daemon.store import Store

    store = Store(config.database_url, host=config.host)
    store.add_voice_sample(XSS_VOICE, _sample())
    store.add_voice_sample(XSS_VOICE, _sample("rename"))
    store.add_voice_sample("王总", _sample())
    store.close()
    page = client.get("/voices", headers=HTML).text
    assert "<img src=x onerror" not in page
    rows = re.findall(r'<tr data-voice="\d+"><td class="name">([^<]*)</td><td>(\d+)</td>\s*<td>([^<]*)</td>'
                      r'<td>([^<]*)</td><td>([^<]*)</td>', page)
    assert rows == [("&lt;img src=x onerror=alert(2)&gt;", "2", "25 s", "cli, rename", "cam++@v1/3"),
                    ("王总", "1", "12 s", "cli", "cam++@v1/3")]
    assert 'name="name" value="&lt;img src=x onerror=alert(2)&gt;"' in page, "the remove form's field"
    assert 'enctype="multipart/form-data"' in page and 'name="recording"' in page


def test_enrolling_from_the_page_drops_the_recording_for_the_daemon(client, setup, tmp_path) -> None:
    config, _jobs = setup
    import time

    from daemon.intake import voice_folder
    from daemon.store import Store

    data = wav_bytes(tmp_path)
    assert enrol(client, None, "Li Wei", "li.wav", data).status_code == 403, "no CSRF token"
    csrf = csrf_of(client)
    for name, filename, body, status, message in (
            ("Speaker3", "li.wav", data, 400, "SpeakerN"),
            ("a/b", "li.wav", data, 400, "may not contain"),
            ("  ", "li.wav", data, 400, "give a name and a recording"),
            ("Li Wei", "notes.txt", data, 400, "extension not in watch.extensions"),
            ("Li Wei", "li.wav", b"", 400, "the file is empty"),
            ("Li Wei", "big.wav", wav_bytes(tmp_path, 40.0), 413, "web.max_upload_mb")):
        r = enrol(client, csrf, name, filename, body)
        assert r.status_code == status and message in r.text, (name, filename, r.status_code, r.text)
    # a chunked body says no length up front: cut off as it arrives
    boundary = "spkdvoice42"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nLi Wei\r\n--{boundary}\r\n'
            f'Content-Disposition: form-data; name="recording"; filename="big.wav"\r\n\r\n').encode()
    chunks = iter([head] + [b"\0" * 2**16] * 20 + [f"\r\n--{boundary}--\r\n".encode()])
    r = client.post("/voices", content=chunks, headers={"x-csrf-token": csrf, **HTML,
                                                        "content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and "content-length" not in r.request.headers
    assert not config.paths.voices.exists() or not any(config.paths.voices.rglob("*.*")), "a refusal drops nothing"

    r = enrol(client, csrf, " Li  Wei ", "../../li <b>.wav", data)
    assert r.status_code == 303 and r.headers["location"] == "/voices"
    dropped = config.paths.voices / "Li Wei" / "li <b>.wav"
    assert dropped.read_bytes() == data
    assert [p.name for p in (config.paths.state / "uploads").iterdir()] == [], "no temporary file left"
    page = client.get("/voices", headers=HTML).text
    assert re.search(r'<li data-state="waiting"><span class="name">Li Wei</span>: '
                     r'<span class="file">Li Wei/li &lt;b&gt;.wav</span>', page), page
    assert "The daemon is not running" in page

    # the daemon's folder scan (daemon.intake.voice_folder.sync_folder) makes it an enrolment job
    store = Store(config.database_url, host=config.host)
    queued = voice_folder.sync_folder(config, store, now=time.time() + 60).queued
    assert len(queued) == 1
    page = client.get("/voices", headers=HTML).text
    assert f'<a href="/jobs/{queued[0]}">job {queued[0]}</a> queued' in page and 'data-state="waiting"' not in page
    # a worker fails it (too little speech): the page says so while the file is there
    job = store.claim(slot=0, pid=4242, device="cpu", lease_seconds=60)
    assert job is not None and job.id == queued[0] and job.task == "enrol"
    store.fail(job.id, pid=4242, kind="enrolment", message="only 0.4 s of speech <here>", permanent=True,
               retry_backoff_seconds=0)
    store.close()
    page = client.get("/voices", headers=HTML).text
    assert 'id="pending"' not in page
    assert re.search(rf'<a href="/jobs/{job.id}">job {job.id}</a> failed: <span class="error">enrolment: only 0.4 s '
                     r'of speech &lt;here&gt;</span>', page), page


def test_removing_a_voice_from_the_page(client, setup, tmp_path) -> None:
    config, _jobs = setup
    from daemon.store import Store

    store = Store(config.database_url, host=config.host)
    store.add_voice_sample(XSS_VOICE, _sample())
    store.close()
    csrf = csrf_of(client)
    assert enrol(client, csrf, "Li Wei", "li.wav", wav_bytes(tmp_path)).status_code == 303
    assert client.post("/voices/remove", data={"name": XSS_VOICE}).status_code == 403, "no CSRF token"
    assert "&lt;img src=x onerror=alert(2)&gt;</td>" in client.get("/voices", headers=HTML).text

    r = client.post("/voices/remove", data={"csrf_token": csrf, "name": XSS_VOICE}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/voices"
    assert "onerror=alert(2)" not in client.get("/voices", headers=HTML).text
    r = client.post("/voices/remove", data={"csrf_token": csrf, "name": XSS_VOICE}, headers=HTML)
    assert r.status_code == 400 and "no voice named" in r.text and "<img src=x" not in r.text
    # a voice that is only a folder so far: the folder goes (to state/removed-voices/, never deleted)
    r = client.post("/voices/remove", data={"csrf_token": csrf, "name": "Li Wei"}, follow_redirects=False)
    assert r.status_code == 303 and not (config.paths.voices / "Li Wei").exists()
    assert [p.name.startswith("Li Wei ") for p in (config.paths.state / "removed-voices").iterdir()] == [True]
    assert 'id="pending"' not in client.get("/voices", headers=HTML).text


HEAVY = ("torch", "funasr", "modelscope", "torchaudio")


def test_the_web_stack_never_imports_torch_or_funasr() -> None:
    code = ("import sys, daemon.web.server, daemon.web.app, daemon.cli.main; "
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}); "
            "print(bad); raise SystemExit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_renaming_and_the_voice_library_load_no_model_in_the_web_process(tmp_path) -> None:
    """Every page and POST of the dashboard, renaming and enrolling included, served in a
    fresh process: a lazy import anywhere on those paths would show in sys.modules."""
    config_path = write_config(tmp_path)
    code = f"""
import sys
from pathlib import Path
from starlette.testclient import TestClient
from daemon.web.app import create_app
from daemon.web.security import CSRF_COOKIE
from tests.support.daemon import write_wav
from tests.support.web import loaded, populate
config = loaded(Path({str(config_path)!r}))
jobs = populate(config)
c = TestClient(create_app(config), base_url="http://127.0.0.1:8765")
for path in ("/", "/jobs", f"/jobs/{{jobs.done}}", "/search?q=welcome", "/voices", "/metrics"):
    assert c.get(path).status_code == 200, path
csrf = c.cookies[CSRF_COOKIE]
r = c.post(f"/jobs/{{jobs.done}}/speakers", data={{"csrf_token": csrf, "name:Speaker1": "Ann"}}, follow_redirects=False)
assert r.status_code == 303, r.text
wav = write_wav(Path({str(tmp_path / "ann.wav")!r}), 0.5).read_bytes()
r = c.post("/voices", data={{"csrf_token": csrf, "name": "Ann"}}, files=[("recording", ("ann.wav", wav))],
           follow_redirects=False)
assert r.status_code == 303, r.text
assert c.post("/voices/remove", data={{"csrf_token": csrf, "name": "Ann"}}, follow_redirects=False).status_code == 303
bad = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})
print(bad)
raise SystemExit(1 if bad else 0)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
