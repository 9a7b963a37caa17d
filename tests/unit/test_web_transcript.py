"""The job page's transcript in process (Starlette's TestClient, the real store, results
and writers; no browser): one transcript view shared with NAME.html, a sentence corrected
through the page's POST (daemon.jobs.corrections, as `spkd edit`), its versions and a
revert, downloads of every format made on demand (never into the outbox), the zips, and
an edited text that looks like markup staying text. tests/e2e/test_web_edit_browser.py
does the same in a real browser against a real daemon."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import docx
import pytest
from starlette.testclient import TestClient

from daemon import writers
from daemon.jobs import outputs
from daemon.store import Store
from daemon.web.app import create_app
from daemon.web.security import CSRF_COOKIE
from daemon.writers import html_page
from tests.support.web import XSS_NAME, loaded, populate, write_config

HTML = {"accept": "text/html"}
JSON = {"accept": "application/json"}
STEM = Path(XSS_NAME).stem
CONFIGURED = ("json", "txt", "srt", "vtt", "html")  # docx, md, sentences and tsv are not


@pytest.fixture()
def setup(tmp_path):
    config = loaded(write_config(tmp_path))
    return config, populate(config, formats=CONFIGURED)


@pytest.fixture()
def client(setup):
    config, _jobs = setup
    with TestClient(create_app(config), base_url="http://127.0.0.1:8765") as c:
        yield c


def csrf_of(client: TestClient) -> str:
    client.get("/", headers=HTML)
    return client.cookies[CSRF_COOKIE]


def edit(client: TestClient, job: int, number: int, text: str, *, csrf: str | None = None,
         data: dict[str, str] | None = None):
    headers = {**JSON, "x-csrf-token": csrf if csrf is not None else csrf_of(client)}
    return client.post(f"/jobs/{job}/segments/{number}", data={"text": text, **(data or {})}, headers=headers)


def outbox_texts(config) -> dict[str, str]:
    return {fmt: (config.paths.outbox / (STEM + writers.extension(fmt))).read_text(encoding="utf-8")
            for fmt in CONFIGURED}


def search_hits(client: TestClient, query: str) -> list[str]:
    """The said text of each hit the dashboard's search page lists."""
    page = client.get("/search", params={"q": query}, headers=HTML).text
    hits = re.findall(r'<ol class="hits">(.*?)</ol>', page, re.S)
    return re.findall(r'<span class="said">(.*?)</span></li>', hits[0], re.S) if hits else []


# --- one view --------------------------------------------------------------------------------

def test_the_job_page_and_name_html_show_one_transcript_view(client, setup) -> None:
    config, jobs = setup
    transcript = outputs.load_transcript(config, jobs.done)
    page = client.get(f"/jobs/{jobs.done}", headers=HTML).text
    standalone = (config.paths.outbox / f"{STEM}.html").read_text(encoding="utf-8")
    # the timeline and the talk-time legend: the same markup, from the same renderer, on both
    for part in (html_page.render_timeline(transcript), html_page.render_legend(transcript)):
        assert part in page and part in standalone
    for shown in (page, standalone):
        assert "Speaker1: 00:02 (62%, 2 sentences)" in shown and "Speaker2: 00:01 (38%, 1 sentence)" in shown
    # the turns: the page's sentences also carry the number `spkd edit --segment` takes
    assert html_page.render_turns(transcript) in standalone
    assert html_page.render_turns(transcript, {0: 1, 1: 2, 2: 3}) in page
    numbers = re.findall(r'class="sent" data-index="(\d)" data-start="[0-9.]+" data-end="[0-9.]+" data-number="(\d)"',
                         page)
    assert numbers == [("0", "1"), ("1", "2"), ("2", "3")]
    # its stylesheet: one copy, inline in NAME.html and served to the dashboard from this origin
    css = client.get("/transcript-view.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.text == html_page.VIEW_CSS and html_page.VIEW_CSS in standalone
    assert '<link rel="stylesheet" href="/transcript-view.css">' in page
    assert '<script src="/static/transcript.js" defer></script>' in page
    # no inline styles in the view: the dashboard's CSP allows none
    assert not re.search(r"\sstyle\s*=", html_page.render_timeline(transcript) + html_page.render_turns(transcript))


# --- corrections ------------------------------------------------------------------------------

def test_a_sentence_corrected_on_the_page_reaches_every_output_search_and_the_history(client, setup) -> None:
    config, jobs = setup
    before = outbox_texts(config)
    new = "Good morning all, and welcome to the quarterly review."
    answer = edit(client, jobs.done, 1, new)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"version": 2, "number": 1, "index": 0, "text": new, "numbers": {"0": 1, "1": 2, "2": 3}}
    after = outbox_texts(config)
    for fmt in CONFIGURED:
        assert new in " ".join(after[fmt].split()), fmt  # subtitles cut it into lines
        assert "everyone" not in after[fmt] and after[fmt] != before[fmt], fmt
    assert json.loads(after["json"])["segments"][0]["text"] == new
    assert outputs.load_transcript(config, jobs.done).segments[0].text == new
    # the page, search and the versions panel
    page = client.get(f"/jobs/{jobs.done}", headers=HTML).text
    shown = page.split('id="transcript"')[1].split('id="versions"')[0]
    assert f">{new}</span>" in shown and "everyone" not in shown
    assert search_hits(client, "quarterly review") and not search_hits(client, "everyone")
    fragment = client.get(f"/jobs/{jobs.done}/versions", headers=HTML).text
    rows = re.findall(r'<tr data-version="(\d+)"', fragment)
    assert rows == ["2", "1"], "newest first"
    assert '<td data-label="From">web</td>' in fragment and '<td data-label="From">engine</td>' in fragment
    assert 'name="version" value="1"' in fragment and 'name="version" value="2"' not in fragment, \
        "the current version is not offered back"
    store = Store(config.database_url, host=config.host)
    try:
        assert store.transcript_version(jobs.done) == 2
        kinds = [e.kind for e in store.events(jobs.done)]
        assert "corrected" in kinds
    finally:
        store.close()
    # a text too long for one cue takes two: the numbers after it move, and a page loaded
    # before that (its sentence 2, index 1, is number 3 now) is told to reload
    longer = edit(client, jobs.done, 1, f"{new} {new}")
    assert longer.status_code == 200 and longer.json()["numbers"] == {"0": 1, "1": 3, "2": 4}
    stale = edit(client, jobs.done, 2, "Thanks; shall we begin?", data={"index": "1"})
    assert stale.status_code == 409 and "reload" in stale.json()["error"]
    # a plain form (no script) is sent back to the page
    csrf = csrf_of(client)
    plain = client.post(f"/jobs/{jobs.done}/segments/3", data={"text": "Thanks; shall we begin?", "csrf_token": csrf,
                                                               "index": "1"}, follow_redirects=False)
    assert plain.status_code == 303 and plain.headers["location"] == f"/jobs/{jobs.done}"
    assert "Thanks; shall we begin?" in outbox_texts(config)["txt"]


def test_revert_brings_a_version_back_as_a_new_one(client, setup) -> None:
    config, jobs = setup
    original = outbox_texts(config)
    assert edit(client, jobs.done, 2, "Thanks, let us start.").json()["version"] == 2
    assert "let us start" in outbox_texts(config)["vtt"]
    csrf = csrf_of(client)
    answer = client.post(f"/jobs/{jobs.done}/revert", data={"version": "1", "csrf_token": csrf},
                         follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == f"/jobs/{jobs.done}#versions"
    assert outbox_texts(config) == original, "version 1: every output as the engine made it, byte for byte"
    assert not search_hits(client, "let us start") and search_hits(client, "shall we start")
    page = client.get(f"/jobs/{jobs.done}", headers=HTML).text
    assert re.findall(r'<tr data-version="(\d+)"', page) == ["3", "2", "1"]
    # and back to version 2
    client.post(f"/jobs/{jobs.done}/revert", data={"version": "2", "csrf_token": csrf})
    assert "let us start" in outbox_texts(config)["srt"]


def test_refused_corrections_change_nothing(client, setup) -> None:
    config, jobs = setup
    before = outbox_texts(config)
    assert edit(client, jobs.done, 1, "new words", csrf="x" * 43).status_code == 403
    assert client.post(f"/jobs/{jobs.done}/segments/1", data={"text": "new words"}).status_code == 403
    assert edit(client, jobs.done, 9, "new words").status_code == 404
    empty = edit(client, jobs.done, 1, "   ")
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    assert edit(client, jobs.done, 1, "bad \u202e override").status_code == 400
    assert edit(client, jobs.failed, 1, "new words").status_code == 409
    assert edit(client, 999, 1, "new words").status_code == 404
    csrf = csrf_of(client)
    assert client.post(f"/jobs/{jobs.done}/revert", data={"version": "7", "csrf_token": csrf}).status_code == 404
    assert client.post(f"/jobs/{jobs.done}/revert", data={"version": "x", "csrf_token": csrf}).status_code == 400
    assert client.post(f"/jobs/{jobs.done}/segments/1", data={"csrf_token": csrf}).status_code == 400
    assert outbox_texts(config) == before
    # a failed job's page offers neither editing nor versions
    page = client.get(f"/jobs/{jobs.failed}", headers=HTML).text
    assert "data-edit-url" not in page and 'id="versions"' not in page


def test_an_edited_text_that_looks_like_markup_stays_text(client, setup) -> None:
    config, jobs = setup
    hostile = '<img src=x onerror=alert(1)> & "quoted" </span><script>alert(2)</script>'
    answer = edit(client, jobs.done, 1, hostile)
    assert answer.status_code == 200 and answer.json()["text"] == hostile, "JSON carries the text; the page sets it as text"
    page = client.get(f"/jobs/{jobs.done}", headers=HTML).text
    assert "<img src=x" not in page and "<script>alert(2)" not in page
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; &quot;quoted&quot; &lt;/span&gt;&lt;script&gt;" in page
    fragment = client.get(f"/jobs/{jobs.done}/versions", headers=HTML).text
    assert "<img" not in fragment and "&lt;img src=x" in fragment, "the history's words of the change too"
    standalone = (config.paths.outbox / f"{STEM}.html").read_text(encoding="utf-8")
    assert "<img src=x" not in standalone and "&lt;img src=x onerror=alert(1)&gt;" in standalone


# --- downloads ----------------------------------------------------------------------------------

def test_every_format_downloads_made_now_and_nothing_is_written_to_the_outbox(client, setup) -> None:
    config, jobs = setup
    edit(client, jobs.done, 3, "Corrected before the download.")
    transcript = outputs.load_transcript(config, jobs.done)
    listing = sorted(p.name for p in config.paths.outbox.iterdir())
    page = client.get(f"/jobs/{jobs.done}", headers=HTML).text
    for fmt in writers.FORMATS:
        response = client.get(f"/jobs/{jobs.done}/download/{fmt}")
        assert response.status_code == 200, fmt
        assert response.content == writers.render_bytes(fmt, transcript), fmt
        disposition = response.headers["content-disposition"]
        assert disposition.startswith("attachment;") and "filename*=utf-8''" in disposition, disposition
        if fmt not in CONFIGURED:
            assert f'href="/jobs/{jobs.done}/download/{fmt}"' in page, f"{fmt} offered on the page"
    assert sorted(p.name for p in config.paths.outbox.iterdir()) == listing, "downloads publish nothing"
    document = docx.Document(io.BytesIO(client.get(f"/jobs/{jobs.done}/download/docx").content))
    said = "\n".join(p.text for p in document.paragraphs)
    assert "Corrected before the download." in said and "Thanks; shall we start?" in said
    md = client.get(f"/jobs/{jobs.done}/download/md").text
    assert "Corrected before the download." in md
    assert client.get(f"/jobs/{jobs.done}/download/pdf").status_code == 404
    assert client.get(f"/jobs/{jobs.failed}/download/txt").status_code == 404
    assert client.get("/jobs/999/download/txt").status_code == 404


def test_the_zips_hold_the_jobs_outputs_or_every_format(client, setup) -> None:
    config, jobs = setup
    response = client.get(f"/jobs/{jobs.done}/outputs.zip")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith("attachment;")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert names == [STEM + writers.extension(fmt) for fmt in CONFIGURED]
        for fmt in CONFIGURED:
            assert archive.read(STEM + writers.extension(fmt)) == \
                (config.paths.outbox / (STEM + writers.extension(fmt))).read_bytes(), fmt
    every = client.get(f"/jobs/{jobs.done}/outputs.zip?formats=all")
    with zipfile.ZipFile(io.BytesIO(every.content)) as archive:
        assert archive.namelist() == [STEM + writers.extension(fmt) for fmt in writers.FORMATS]
    assert client.get(f"/jobs/{jobs.done}/outputs.zip").content == response.content, "the same job, the same zip"
    # without its stored transcript: the files its row records, from the outbox
    outputs.transcript_path(config, jobs.done).unlink()
    with zipfile.ZipFile(io.BytesIO(client.get(f"/jobs/{jobs.done}/outputs.zip").content)) as archive:
        assert archive.namelist() == names
    assert client.get(f"/jobs/{jobs.done}/download/md").status_code == 404
    assert client.get(f"/jobs/{jobs.failed}/outputs.zip").status_code == 404
