"""The job page's summary panel (daemon/web/summary_panel.py, templates/_summary.html), in
process through Starlette's TestClient: each state of a summary as the store keeps it
(queued, running, done, failed, stale), the points with the moments that play the
recording, the model's words shown as text, the request button behind the CSRF check.
The summaries themselves are made by the store's own methods here; tests/e2e/
test_summaries.py makes them with a real model behind a real server."""

from __future__ import annotations

import json
import os
import re
from html import unescape

import pytest
from starlette.testclient import TestClient

from daemon.store import Store
from daemon.summaries.answer import SECTIONS, parse_answer, text_summary
from daemon.transcript import Source, Transcript
from daemon.web.app import create_app
from daemon.web.security import CSRF_COOKIE, CSRF_FIELD
from tests.support.web import SEGMENTS, loaded, populate, write_config

HTML = {"accept": "text/html"}
SUMMARY = {"endpoint": "http://127.0.0.1:9/v1", "model": "tiny", "max_attempts": 2}
EVIL = "<img src=x onerror=alert(1)>"


def result(**lists: list[dict]) -> dict:
    """The summary object daemon.summaries makes of a model's JSON answer with these lists
    (its own parser: the moments are the cited segments' starts in the populated transcript)."""
    answer = json.dumps({key: lists.get(key, []) for key in SECTIONS})
    transcript = Transcript(segments=SEGMENTS, audio_seconds=6.0, source=Source(name="x.wav"))
    return {**parse_answer(answer, transcript), "model": "tiny", "transcript_version": 1, "parts": 1}


@pytest.fixture()
def setup(tmp_path):
    config = loaded(write_config(tmp_path, summary=SUMMARY))
    jobs = populate(config)
    store = Store(config.database_url, host=config.host)
    yield config, jobs.done, store
    store.close()


@pytest.fixture()
def client(setup):
    config, _job, _store = setup
    with TestClient(create_app(config), base_url="http://127.0.0.1:8765") as c:
        yield c


def panel(client: TestClient, job_id: int) -> str:
    page = client.get(f"/jobs/{job_id}", headers=HTML)
    assert page.status_code == 200
    found = re.search(r'<section class="summary" id="summary".*?</section>', page.text, re.S)
    assert found, "no summary panel on the job page"
    return found.group(0)


def finish(store: Store, job_id: int, summary: dict, *, version: int = 1) -> None:
    store.request_summary(job_id, max_attempts=2)
    claimed = store.claim_summary(pid=os.getpid(), lease_seconds=60)
    assert claimed is not None and claimed.job_id == job_id
    assert store.complete_summary(job_id, pid=os.getpid(), result=summary, transcript_version=version, model="tiny")


def test_points_link_their_moments_and_show_the_models_words_as_text(client, setup) -> None:
    _config, job_id, store = setup
    finish(store, job_id, result(
        overview=[{"text": f"A greeting {EVIL}", "segments": [1, 2]}],
        decisions=[{"text": "Start now", "segments": [2, 99]}],  # 99: no such segment, dropped
        action_items=[{"who": "Speaker1", "what": "Send the notes", "due": "Friday", "segments": [3]}],
        open_questions=[{"text": "Who pays?", "segments": []}]))
    body = panel(client, job_id)
    assert "<img src=x" not in body and "A greeting &lt;img src=x onerror=alert(1)&gt;" in body
    assert [unescape(t) for t in re.findall(r"<h3>(.*?)</h3>", body)] == [
        "Overview", "Decisions", "Action items", "Open questions"]
    # Each moment plays from its segment's start; the point itself from its first moment.
    links = re.findall(r'<a class="moment" href="#t=([0-9.]+)" data-t="([0-9.]+)"[^>]*>([0-9:]+)</a>', body)
    assert [(float(t), label) for t, _, label in links] == [
        (SEGMENTS[0].start, "0:00"), (SEGMENTS[1].start, "0:02"), (SEGMENTS[1].start, "0:02"),
        (SEGMENTS[2].start, "0:04")]
    points = re.findall(r'<li class="summary-point"( data-t="([0-9.]+)" tabindex="0")?>', body)
    assert [float(t) if t else None for _, t in points] == [SEGMENTS[0].start, SEGMENTS[1].start,
                                                            SEGMENTS[2].start, None]
    assert "<strong class=\"who\">Speaker1</strong>: <span class=\"point-text\">Send the notes</span>" in body
    assert "(by Friday)" in body
    assert 'data-state="done"' in body and "data-live-url" not in body, "a done summary is not polled"
    assert '<script src="/static/summary.js" defer></script>' in body
    assert client.get("/static/summary.js").status_code == 200


def test_an_answer_that_ignored_the_format_is_shown_as_written(client, setup) -> None:
    _config, job_id, store = setup
    finish(store, job_id, {**text_summary(f"Plain words {EVIL}\nand a second line."), "model": "tiny",
                           "transcript_version": 1, "parts": 1})
    body = panel(client, job_id)
    assert "did not answer in the asked format" in body
    assert '<div class="summary-text">Plain words &lt;img src=x onerror=alert(1)&gt;\nand a second line.</div>' in body
    assert "<h3>" not in body


def test_queued_running_and_failed_are_said_and_the_last_good_summary_stays(client, setup) -> None:
    _config, job_id, store = setup
    assert 'data-state="none"' in panel(client, job_id) and "Summarize</button>" in panel(client, job_id)

    store.request_summary(job_id, max_attempts=2)
    body = panel(client, job_id)
    assert 'data-state="queued"' in body and f'data-live-url="/jobs/{job_id}/summary"' in body
    assert "<button" not in body, "nothing to request while one is queued"
    fragment = client.get(f"/jobs/{job_id}/summary", headers=HTML)
    assert fragment.status_code == 200 and '<div class="summary-body" data-state="queued">' in fragment.text
    assert "<section" not in fragment.text

    assert store.claim_summary(pid=os.getpid(), lease_seconds=60) is not None
    body = panel(client, job_id)
    assert 'data-state="running"' in body and "attempt 1 of 2" in body

    # A transient failure: queued again, the reason said.
    store.fail_summary(job_id, pid=os.getpid(), kind="llm_unreachable", message=f"connection refused {EVIL}",
                       permanent=False, retry_backoff_seconds=60)
    body = panel(client, job_id)
    assert 'data-state="queued"' in body and "attempt 2 of 2" in body
    assert "connection refused &lt;img" in body


def test_a_failed_renewal_is_said_and_the_last_good_summary_stays(client, setup) -> None:
    _config, job_id, store = setup
    finish(store, job_id, result(overview=[{"text": "Kept", "segments": [1]}]))
    store.request_summary(job_id, max_attempts=2)
    assert store.claim_summary(pid=os.getpid(), lease_seconds=60) is not None
    store.fail_summary(job_id, pid=os.getpid(), kind="llm_answer", message="the server answered 500",
                       permanent=True, retry_backoff_seconds=60)
    body = panel(client, job_id)
    assert 'data-state="failed"' in body and "after 1 attempt:" in body and "the server answered 500" in body
    assert "the last summary made" in body and '<span class="point-text">Kept</span>' in body
    assert "Try again</button>" in body


def test_requesting_a_summary_needs_the_csrf_token_and_queues_it(client, setup) -> None:
    _config, job_id, store = setup
    refused = client.post(f"/jobs/{job_id}/summary", data={}, headers=HTML)
    assert refused.status_code == 403 and store.summary(job_id) is None
    client.get("/", headers=HTML)
    token = client.cookies[CSRF_COOKIE]
    done = client.post(f"/jobs/{job_id}/summary", data={CSRF_FIELD: token}, headers=HTML, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/jobs/{job_id}#summary"
    row = store.summary(job_id)
    assert row is not None and row.state == "queued"
    assert client.post("/jobs/99999/summary", data={CSRF_FIELD: token}, headers=HTML).status_code == 404


def test_no_panel_where_summaries_are_off(tmp_path) -> None:
    config = loaded(write_config(tmp_path))
    jobs = populate(config)
    with TestClient(create_app(config), base_url="http://127.0.0.1:8765") as c:
        page = c.get(f"/jobs/{jobs.done}", headers=HTML).text
        assert 'id="summary"' not in page
        assert c.get(f"/jobs/{jobs.failed}", headers=HTML).status_code == 200
