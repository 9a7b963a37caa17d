"""The dashboard offers Retry only where a retry can change how a job ends, by the rule
`spkd retry` uses (daemon.jobs.retry), and its POST /jobs/<id>/retry is that retry: not
for a file that is not audio, nor a too-short enrolment, while a job whose worker was
lost is offered and requeued."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from daemon.errors import EnrolmentError, NotAudioError, WorkerLostError
from daemon.jobs import spool
from daemon.store import Store, db
from daemon.web.app import create_app
from daemon.web.security import CSRF_COOKIE
from tests.support.daemon import write_wav
from tests.support.jobs import failed_job
from tests.support.web import loaded, write_config

HTML = {"accept": "text/html"}


@pytest.fixture()
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = loaded(write_config(tmp_path))
    db.migrate(config.database_url)
    store = Store(config.database_url, host="h1")
    text, _ = failed_job(config, store, "notes.mp3", NotAudioError("not a readable audio or video file"),
                         content=b"minutes of the meeting, typed")
    lost, _ = failed_job(config, store, "call.wav", WorkerLostError("worker 9 killed (SIGKILL)"))
    # a recording in paths.voices/Ann/ with too little speech, as the worker fails it
    source = write_wav(spool.new_slot(config.paths.spool, "h1") / "Ann" / "hello.wav", 1.0)
    enrolment = store.enqueue(source_name="Ann/hello.wav", spool_path=str(source), output_stem="Ann/hello",
                              sha256=None, size_bytes=source.stat().st_size, options={"voice": "Ann"}, task="enrol")
    store.claim(slot=0, pid=1, device="cpu", lease_seconds=60)
    error = EnrolmentError("hello.wav: 0.8 s of speech; a voice needs at least 10 s")
    outcome = store.fail(enrolment, pid=1, kind=error.kind, message=error.message, permanent=error.permanent,
                         retry_backoff_seconds=0)
    spool.retire_failed(config, outcome.job)
    with TestClient(create_app(config), base_url="http://127.0.0.1:8765") as client:
        yield client, {"not_audio": text, "lost": lost, "enrolment": enrolment}
    store.close()


def retry_buttons(page: str) -> set[int]:
    return {int(i) for i in re.findall(r'action="/jobs/(\d+)/retry"', page)}


def test_retry_is_offered_only_where_it_can_change_the_outcome(setup) -> None:
    client, jobs = setup
    assert retry_buttons(client.get("/", headers=HTML).text) == {jobs["lost"]}
    assert retry_buttons(client.get("/fragments/overview", headers=HTML).text) == {jobs["lost"]}
    for name in ("not_audio", "enrolment"):
        live = client.get(f"/jobs/{jobs[name]}/live").text
        assert retry_buttons(live) == set(), name
        assert "Not offered for retry" in live and "the file has not changed since" in live, name
    assert retry_buttons(client.get(f"/jobs/{jobs['lost']}", headers=HTML).text) == {jobs["lost"]}


def test_the_post_is_the_same_retry_as_spkd_retry(setup) -> None:
    client, jobs = setup
    client.get("/", headers=HTML)
    csrf = client.cookies[CSRF_COOKIE]
    refused = client.post(f"/jobs/{jobs['not_audio']}/retry", data={"csrf_token": csrf})
    assert refused.status_code == 409 and "failed not_audio" in refused.text
    assert client.post("/jobs/999/retry", data={"csrf_token": csrf}).status_code == 404
    response = client.post(f"/jobs/{jobs['lost']}/retry", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert 'data-state="queued"' in client.get(f"/jobs/{jobs['lost']}/live").text
