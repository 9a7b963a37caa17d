"""The dashboard's actions (daemon.web.actions) in process, through Starlette's TestClient:
cancel and remove with their confirmation (the functions of `spkd cancel` and `spkd
remove`), every error an HTML page in the layout with a way back (JSON and text where
those are asked for), a voice's samples served from paths.voices only, and renaming a
voice: the library, its folder and every job it named re-rendered
(daemon.jobs.voice_rename, also `spkd voices rename`), on SQLite and PostgreSQL.
tests/e2e/test_web_actions_browser.py drives the same in a real browser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from daemon.errors import VoiceError
from daemon.intake import voice_folder
from daemon.jobs import outputs, results, voice_rename
from daemon.store import Store
from daemon.transcript import Segment, SpeakerMatch
from daemon.voices import library
from daemon.web.app import create_app
from daemon.web.security import CSRF_COOKIE
from tests.support.config import make_config
from tests.support.daemon import REPO, write_wav
from tests.support.jobs import done_job, queued_job
from tests.support.web import XSS_NAME, loaded, populate, write_config

HTML = {"accept": "text/html"}
XSS_VOICE = "<img src=x onerror=alert(3)>"  # a valid voice name (no '/'), and markup


@pytest.fixture()
def setup(tmp_path):
    config = loaded(write_config(tmp_path))
    return config, populate(config)


@pytest.fixture()
def client(setup):
    config, _jobs = setup
    with TestClient(create_app(config), base_url="http://127.0.0.1:8765") as c:
        yield c


@pytest.fixture()
def web_store(setup):
    config, _jobs = setup
    store = Store(config.database_url, host=config.host)
    yield store
    store.close()


def csrf_of(client: TestClient) -> str:
    client.get("/", headers=HTML)
    return client.cookies[CSRF_COOKIE]


def is_error_page(response, status: int, back: str) -> bool:
    """An HTML page of the site's layout (its navigation), with the status and a link back."""
    body = response.text
    return (response.status_code == status and response.headers["content-type"].startswith("text/html")
            and '<header class="top">' in body and 'href="/jobs"' in body and 'id="error-detail"' in body
            and f'<a href="{back}" id="way-back">' in body)


# --- cancel ----------------------------------------------------------------------------------

def test_cancel_from_the_jobs_list_and_the_job_page_is_spkd_cancel(client, setup, web_store) -> None:
    config, jobs = setup
    first = queued_job(config, web_store, "later.wav")
    second = queued_job(config, web_store, "after.wav")
    listing = client.get("/jobs", headers=HTML).text
    assert f'action="/jobs/{first}/cancel"' in listing and f'action="/jobs/{second}/cancel"' in listing
    assert f'href="/jobs/{jobs.done}/remove"' in listing and f'action="/jobs/{jobs.done}/cancel"' not in listing
    assert 'id="cancel-job"' in client.get(f"/jobs/{first}", headers=HTML).text
    csrf = csrf_of(client)
    r = client.post(f"/jobs/{first}/cancel", data={"csrf_token": csrf, "next": "/jobs?state=queued"},
                    headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/jobs?state=queued"
    row = web_store.job(first)
    assert (row.state, row.error_kind) == ("cancelled", "cancelled") and "the dashboard" in row.error_message
    assert (config.paths.failed / "later.wav").is_file(), "its file kept in failed/, as spkd cancel does"
    [event] = [e for e in web_store.events(first) if e.kind == "cancelled"]
    assert event.detail["by"] == "the dashboard" and event.detail["was"] == "queued"
    # from the job page; `next` leading to another site is not followed
    r = client.post(f"/jobs/{second}/cancel", data={"csrf_token": csrf, "next": "//evil.example/"},
                    headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/jobs/{second}"
    assert web_store.job(second).state == "cancelled"
    page = client.get(f"/jobs/{second}", headers=HTML).text
    assert 'id="cancel-job"' not in page and 'id="remove-job"' in page, "a cancelled job can be removed"


def test_cancelling_a_finished_or_unknown_job_is_refused_with_a_page_and_a_way_back(client, setup) -> None:
    _config, jobs = setup
    csrf = csrf_of(client)
    r = client.post(f"/jobs/{jobs.done}/cancel", data={"csrf_token": csrf}, headers=HTML)
    assert is_error_page(r, 409, f"/jobs/{jobs.done}"), r.text
    assert "only a queued or running job can be cancelled" in r.text
    r = client.post("/jobs/999/cancel", data={"csrf_token": csrf}, headers=HTML)
    assert is_error_page(r, 404, "/jobs") and "no job 999" in r.text


# --- remove ----------------------------------------------------------------------------------

def test_remove_shows_what_goes_and_what_stays_then_removes_only_when_confirmed(client, setup, web_store) -> None:
    config, jobs = setup
    stem = Path(XSS_NAME).stem
    outputs_before = sorted(p.name for p in config.paths.outbox.iterdir())
    assert outputs_before and all(name.startswith(stem) for name in outputs_before)
    page = client.get(f"/jobs/{jobs.done}/remove", headers=HTML)
    assert page.status_code == 200
    body = page.text
    assert "<img src=x" not in body and "&lt;img src=x onerror=alert(1)&gt;" in body
    for name in outputs_before:  # every output named, and the stored transcript
        assert name.replace("<", "&lt;").replace(">", "&gt;") in body, name
    assert str(outputs.transcript_path(config, jobs.done)) in body
    assert f"moved into <span class=\"path\">{config.paths.failed}</span>" in body, "the audio stays, in failed/"
    assert 'name="state" value="done"' in body
    # nothing has gone by looking
    assert sorted(p.name for p in config.paths.outbox.iterdir()) == outputs_before

    # a CSRF failure: an HTML page, nothing removed
    r = client.post(f"/jobs/{jobs.done}/remove", data={"state": "done"}, headers=HTML)
    assert is_error_page(r, 403, f"/jobs/{jobs.done}") and "CSRF token" in r.text and "reload the page" in r.text
    csrf = csrf_of(client)
    # confirmed for a state the job is no longer in: refused
    r = client.post(f"/jobs/{jobs.done}/remove", data={"csrf_token": csrf, "state": "failed"}, headers=HTML)
    assert is_error_page(r, 409, f"/jobs/{jobs.done}") and "nothing removed" in r.text
    assert web_store.job(jobs.done) is not None

    r = client.post(f"/jobs/{jobs.done}/remove", data={"csrf_token": csrf, "state": "done"}, headers=HTML,
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/jobs?removed={jobs.done}"
    assert web_store.job(jobs.done) is None
    assert list(config.paths.outbox.iterdir()) == []
    assert not outputs.transcript_path(config, jobs.done).exists()
    assert (config.paths.failed / XSS_NAME).is_file() and not jobs.audio.exists(), "the audio moved to failed/"
    listing = client.get(r.headers["location"], headers=HTML).text
    assert f"Job {jobs.done} removed" in listing and f'data-job="{jobs.done}"' not in listing
    assert "Job &lt;b&gt; removed" not in client.get("/jobs?removed=%3Cb%3E", headers=HTML).text
    # gone now: its confirmation page is a 404 page leading to the list
    assert is_error_page(client.get(f"/jobs/{jobs.done}/remove", headers=HTML), 404, "/jobs")


def test_an_unfinished_job_offers_no_removal_and_its_confirmation_says_why(client, setup, web_store) -> None:
    config, _jobs = setup
    job_id = queued_job(config, web_store, "soon.wav")
    r = client.get(f"/jobs/{job_id}/remove", headers=HTML)
    assert is_error_page(r, 409, f"/jobs/{job_id}") and f"spkd cancel {job_id}" in r.text
    assert web_store.job(job_id).state == "queued"


# --- error pages -----------------------------------------------------------------------------

def test_every_error_is_a_page_in_the_layout_with_a_way_back(client, setup) -> None:
    _config, jobs = setup
    # whatever the client accepts, as long as it does not ask for JSON or text
    for headers in (HTML, {}, {"accept": "*/*"}):
        assert is_error_page(client.get("/jobs/999", headers=headers), 404, "/jobs"), headers
    assert is_error_page(client.get("/nowhere", headers=HTML), 404, "/")
    assert is_error_page(client.get("/voices/nowhere", headers=HTML), 404, "/voices")
    assert is_error_page(client.get("/jobs?state=bogus", headers=HTML), 400, "/")
    assert is_error_page(client.get(f"/jobs/{jobs.done}/outputs/pdf", headers=HTML), 404, "/jobs")
    # a refused form: the job's page is the way back
    r = client.post(f"/jobs/{jobs.failed}/speakers", data={"csrf_token": csrf_of(client), "name:Speaker1": "Ann"},
                    headers=HTML)
    assert is_error_page(r, 400, f"/jobs/{jobs.failed}") and "not a done transcription" in r.text
    # a CSRF failure on any form
    r = client.post("/voices/remove", data={"name": "Ann"}, headers=HTML)
    assert is_error_page(r, 403, "/voices") and "CSRF token is missing or wrong" in r.text
    # a method the path does not take
    assert client.delete(f"/jobs/{jobs.done}", headers=HTML).status_code == 405


def test_json_text_and_metrics_keep_their_formats(client, setup) -> None:
    r = client.get("/jobs/999", headers={"accept": "application/json"})
    assert r.status_code == 404 and r.json() == {"error": "no job 999"}
    r = client.get("/jobs/999", headers={"accept": "text/plain"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/plain") and r.text == "no job 999\n"
    r = client.post("/upload", files=[("file", ("a.wav", b"RIFF", "audio/wav"))])
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert client.post("/metrics", headers=HTML).headers["content-type"].startswith("text/plain")


def test_the_error_page_escapes_what_it_repeats(client) -> None:
    r = client.get("/jobs?since=%3Cscript%3Ealert(1)%3C/script%3E", headers=HTML)
    assert r.status_code == 400 and "<script>alert" not in r.text and "&lt;script&gt;alert(1)" in r.text


# --- a voice's samples -----------------------------------------------------------------------

def _sample(origin: str, source: str | None, sha256: str | None = None, job_id: int | None = None) -> dict:
    return {"embedding": (0.1, 0.2, 0.3), "model_name": "cam++", "model_revision": "v1", "sha256": sha256,
            "speech_seconds": 12.5, "origin": origin, "source": source, "job_id": job_id}


def test_the_voices_page_plays_the_samples_spkd_keeps_and_serves_nothing_else(client, setup, web_store,
                                                                              tmp_path) -> None:
    config, jobs = setup
    from daemon import files

    recording = write_wav(config.paths.voices / "Ann" / "ann.wav", 1.0)
    _voice, kept = web_store.add_voice_sample("Ann", _sample("folder", "Ann/ann.wav", files.sha256_file(recording)))
    _voice, given = web_store.add_voice_sample("Ann", _sample("cli", str(recording)))
    _voice, renamed = web_store.add_voice_sample("Ann", _sample("rename", f"job {jobs.done} Speaker1",
                                                                job_id=jobs.done))
    outside = write_wav(tmp_path / "secret.wav", 0.2)
    link = config.paths.voices / "Bob"
    link.mkdir()
    (link / "bob.wav").symlink_to(outside)
    _voice, linked = web_store.add_voice_sample("Bob", _sample("folder", "Bob/bob.wav"))
    _voice, climbing = web_store.add_voice_sample("Eve", _sample("folder", "../../secret.wav"))

    page = client.get("/voices", headers=HTML).text
    assert f'src="/voices/samples/{kept}/audio"' in page
    for other in (given, renamed, linked, climbing):
        assert f'src="/voices/samples/{other}/audio"' not in page
    assert f'href="/jobs/{jobs.done}"' in page, "a sample from a rename leads to its job"
    r = client.get(f"/voices/samples/{kept}/audio")
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav" and r.content == recording.read_bytes()
    r = client.get(f"/voices/samples/{kept}/audio", headers={"range": "bytes=0-3"})
    assert r.status_code == 206 and r.content == b"RIFF", "players can seek"
    for other in (given, renamed, linked, climbing, 999):
        r = client.get(f"/voices/samples/{other}/audio", headers=HTML)
        assert is_error_page(r, 404, "/voices"), other
        assert outside.read_bytes()[:4] not in r.content


# --- renaming a voice ------------------------------------------------------------------------

def name_speaker_by_voice(config, store: Store, job_id: int, voice_id: int, name: str, speaker: int = 1) -> None:
    """The job's speaker named by the library, as matching leaves it (through the one re-render path)."""
    transcript = outputs.load_transcript(config, job_id)
    named = transcript.replace(speaker_names={**transcript.speaker_names, speaker: name},
                               speaker_matches={**transcript.speaker_matches,
                                                speaker: SpeakerMatch(voice=voice_id, score=0.97)})
    assert results.rerender(config, store, job_id, named, event="rematched")


def test_renaming_a_voice_on_its_page_re_renders_every_job_it_named_and_escapes_the_name(client, setup,
                                                                                        web_store) -> None:
    config, jobs = setup
    from daemon import files

    recording = write_wav(config.paths.voices / "Ann" / "ann.wav", 1.0)
    voice_id, sample_id = web_store.add_voice_sample("Ann", _sample("folder", "Ann/ann.wav",
                                                                    files.sha256_file(recording)))
    audio = recording.read_bytes()
    name_speaker_by_voice(config, web_store, jobs.done, voice_id, "Ann")
    stem = Path(XSS_NAME).stem
    assert "Ann" in (config.paths.outbox / f"{stem}.txt").read_text()
    csrf = csrf_of(client)
    page = client.get("/voices", headers=HTML).text
    assert 'action="/voices/rename"' in page and 'name="new_name"' in page

    for bad, message in (("Speaker3", "SpeakerN"), ("a/b", "may not contain"), ("Ann", "called &#39;Ann&#39; already")):
        r = client.post("/voices/rename", data={"csrf_token": csrf, "name": "Ann", "new_name": bad}, headers=HTML)
        assert is_error_page(r, 400, "/voices") and message in r.text, (bad, r.text)
    r = client.post("/voices/rename", data={"csrf_token": csrf, "name": "Nobody", "new_name": "Ann B"}, headers=HTML)
    assert is_error_page(r, 400, "/voices") and "no voice named" in r.text
    assert client.post("/voices/rename", data={"name": "Ann", "new_name": "Bo"}, headers=HTML).status_code == 403

    r = client.post("/voices/rename", data={"csrf_token": csrf, "name": "Ann", "new_name": f"  {XSS_VOICE} "},
                    headers=HTML, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == f"/voices?renamed={voice_id}&jobs=1&skipped=0#voice-{voice_id}"
    # the library: the same voice, its new name, its folder and sample path with it
    assert [(v.id, v.name) for v in web_store.voice_summaries()] == [(voice_id, XSS_VOICE)]
    assert not (config.paths.voices / "Ann").exists() and (config.paths.voices / XSS_VOICE / "ann.wav").is_file()
    [sample] = web_store.voice_samples_of()
    assert (sample.id, sample.source) == (sample_id, f"{XSS_VOICE}/ann.wav")
    # the job it named: every output, its segments and its history
    for fmt in ("txt", "srt", "vtt", "json", "html"):
        text = (config.paths.outbox / f"{stem}.{fmt}").read_text(encoding="utf-8")
        assert "Ann" not in text, fmt
        assert "onerror=alert(3)" in text, fmt  # each format writes it as its own escaping says
        assert (XSS_VOICE in text) if fmt in ("txt", "srt", "json") else (XSS_VOICE not in text), fmt
    doc = json.loads((config.paths.outbox / f"{stem}.json").read_text())
    assert {s["name"] for s in doc["speakers"]} >= {XSS_VOICE}
    event = [e for e in web_store.events(jobs.done) if e.kind == "renamed"][-1]
    assert event.detail["voice"] == {"id": voice_id, "from": "Ann", "to": XSS_VOICE}
    assert results.disagreements(config, web_store, jobs.done) == []
    # the pages show it as text
    for path in (r.headers["location"], f"/jobs/{jobs.done}", "/search?q=morning"):
        body = client.get(path, headers=HTML).text
        assert "<img src=x onerror=alert(3)>" not in body, path
        assert "&lt;img src=x onerror=alert(3)&gt;" in body, path
    assert "Voice renamed: now <strong>&lt;img src=x onerror=alert(3)&gt;</strong>; 1 job(s)" in \
        client.get(r.headers["location"], headers=HTML).text
    # the sample still plays from its new place
    assert client.get(f"/voices/samples/{sample_id}/audio").content == \
        (config.paths.voices / XSS_VOICE / "ann.wav").read_bytes() == audio


# --- the library's rename, the folder scan and the CLI, on each backend ------------------------

@pytest.fixture()
def config(tmp_path: Path, url: str):  # type: ignore[no-untyped-def]
    return make_config(tmp_path, url=url, host="h1")


def test_a_voice_rename_reaches_every_job_it_named_and_skips_a_clash(config, store) -> None:
    first, second, other = (done_job(config, store, f"{n}.wav") for n in ("one", "two", "three"))
    voice_id, _ = store.add_voice_sample("Li", _sample("cli", "li.wav"))
    other_voice, _ = store.add_voice_sample("Wang", _sample("cli", "wang.wav"))
    name_speaker_by_voice(config, store, first, voice_id, "Li")
    name_speaker_by_voice(config, store, second, voice_id, "Li")
    name_speaker_by_voice(config, store, other, other_voice, "Wang")
    # a job where a person already called another speaker by the new name
    clash = done_job(config, store, "four.wav")
    name_speaker_by_voice(config, store, clash, voice_id, "Li")
    transcript = outputs.load_transcript(config, clash)
    assert results.rerender(config, store, clash, transcript.replace(
        segments=(*transcript.segments, Segment(1.0, 1.5, 2, "me too")),
        speaker_names={**transcript.speaker_names, 2: "Li Lei"},
        speaker_matches={**transcript.speaker_matches, 2: SpeakerMatch(renamed=True)}), event="renamed")

    done = voice_rename.rename_voice(config, store, "Li", "Li\tLei")
    assert (done.voice, done.name, done.new_name) == (voice_id, "Li", "Li Lei")
    assert done.jobs == (first, second) and len(done.skipped) == 1 and f"job {clash}" in done.skipped[0]
    for job_id in (first, second):
        assert "Li Lei" in (config.paths.outbox / f"{store.job(job_id).output_stem}.txt").read_text()
        assert results.disagreements(config, store, job_id) == []
    assert outputs.load_transcript(config, other).speaker_names == {1: "Wang"}
    assert outputs.load_transcript(config, clash).speaker_names[1] == "Li", "left as it was, and said why"
    # asked again (as after a crash between the library and the jobs): nothing left to do
    again = voice_rename.rename_voice(config, store, "Li", "Li Lei")
    assert again.jobs == () and again.voice == voice_id
    with pytest.raises(VoiceError, match="called 'Wang' already"):
        voice_rename.rename_voice(config, store, "Li Lei", "Wang")
    with pytest.raises(VoiceError, match="no voice named 'Nobody'"):
        voice_rename.rename_voice(config, store, "Nobody", "Somebody")


def test_a_rename_interrupted_before_its_folder_moved_is_finished_by_the_folder_scan(config, store) -> None:
    from daemon import files

    recording = write_wav(config.paths.voices / "Li" / "li.wav", 1.0)
    voice_id, sample_id = store.add_voice_sample("Li", _sample("folder", "Li/li.wav", files.sha256_file(recording)))
    # as `library.rename` leaves it when killed after the store's commit: the intent, the store renamed
    (config.paths.state).mkdir(parents=True, exist_ok=True)
    files.atomic_write(config.paths.state / library.RENAME_INTENT,
                       json.dumps({"voice": "Li Lei", "from": "Li", "to": "Li Lei"}))
    assert store.rename_voice("Li", "Li Lei", sources={"Li/li.wav": "Li Lei/li.wav"}) == voice_id
    report = voice_folder.sync_folder(config, store, now=1e12)
    assert report.removed_samples == 0 and report.queued == [], "nothing taken for gone, nothing enrolled again"
    assert (config.paths.voices / "Li Lei" / "li.wav").is_file() and not (config.paths.voices / "Li").exists()
    assert [(s.id, s.name, s.source) for s in store.voice_samples_of()] == [(sample_id, "Li Lei", "Li Lei/li.wav")]
    assert not (config.paths.state / library.RENAME_INTENT).exists()
    # killed before the store's commit: the intent is dropped, the folder stays
    files.atomic_write(config.paths.state / library.RENAME_INTENT,
                       json.dumps({"voice": "Wang", "from": "Li Lei", "to": "Wang"}))
    assert voice_folder.sync_folder(config, store, now=1e12).removed_samples == 0
    assert (config.paths.voices / "Li Lei").is_dir() and not (config.paths.voices / "Wang").exists()
    assert not (config.paths.state / library.RENAME_INTENT).exists()


def test_a_folder_that_cannot_follow_leaves_the_voice_as_it_was(config, store) -> None:
    from daemon import files

    recording = write_wav(config.paths.voices / "Li" / "li.wav", 1.0)
    store.add_voice_sample("Li", _sample("folder", "Li/li.wav", files.sha256_file(recording)))
    (config.paths.voices / "Li Lei").mkdir()
    (config.paths.voices / "Li Lei" / "note.txt").write_text("someone else's")
    with pytest.raises(VoiceError, match="exists already"):
        library.rename(config, store, "Li", "Li Lei")
    assert [v.name for v in store.voice_summaries()] == ["Li"]
    assert [s.source for s in store.voice_samples_of()] == ["Li/li.wav"]


@pytest.mark.backends("sqlite")
def test_spkd_voices_rename(tmp_path, url, config, store) -> None:
    from tests.support.config import write_config as config_file

    path = config_file(tmp_path, url=url, host="h1")
    job_id = done_job(config, store, "talk.wav")
    voice_id, _ = store.add_voice_sample("Li", _sample("cli", "li.wav"))
    name_speaker_by_voice(config, store, job_id, voice_id, "Li")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SPKD_")}, "PYTHONPATH": str(REPO)}

    def spkd(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "daemon", "--config", str(path), *argv], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, env=env)

    done = spkd("voices", "rename", "Li", "Li Lei")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"voice Li is now Li Lei; re-rendered 1 job(s): {job_id}\n" and done.stderr == ""
    assert "Li Lei" in (config.paths.outbox / "talk.txt").read_text()
    refused = spkd("voices", "rename", "Li Lei", "Speaker2")
    assert refused.returncode != 0 and "SpeakerN" in refused.stderr
