"""Summaries against a real LLM server (issue #30): `spkd run` as a process with real FunASR
on the tiny models, llama.cpp's own OpenAI-compatible server (`python -m llama_cpp.server`,
tests/support/llm_server.py) serving SmolLM2-135M on 127.0.0.1, real files dropped into
the inbox, everything checked from outside: the outbox, the database, `spkd`.

The model is tiny and its summaries are poor: these tests check the plumbing and the
shape (a summary file whose links point at real segment times; a killed server leaving
the transcript done and the summary retried, then failed with its reason, then made once
the server is back; an answer in prose kept as text; `spkd summarize` renewing), never
the wording.

One meeting is transcribed once for the module (`meeting`); the tests run in order on it
and each leaves its summary done. The server is one for the session (`llm_server`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support.browser import screenshot_taker, start_chromium, wait_for
from tests.support.daemon import REPO, Daemon
from tests.support.llm_server import ALIAS, LlamaServer
from tests.support.web import free_port, wait_listening

pytestmark = pytest.mark.e2e

# A link of NAME.summary.md: [HH:MM:SS](NAME.html#t=SECONDS).
LINK = re.compile(r"\[(\d{2}):(\d{2}):(\d{2})\]\(([^)#]+)\.html#t=([0-9]+(?:\.[0-9]+)?)\)")
SUMMARY_TIMEOUT_SECONDS = 240.0


def summary_config(server: LlamaServer, **overrides: Any) -> dict[str, Any]:
    # Attempts and backoff short enough that a dead server's summary fails within the test;
    # answers bounded so that the tiny model's rambling does not cost minutes on 2 cores.
    return {"endpoint": server.endpoint, "model": ALIAS, "context_tokens": 2048, "max_answer_tokens": 512,
            "timeout_seconds": 120, "max_attempts": 3, "retry_backoff_seconds": 0.5, **overrides}


def real_daemon(root: Path, tiny_models, server: LlamaServer, **summary: Any) -> Daemon:
    port = free_port()
    config = {"models": {"dir": str(tiny_models.asr.parent)}, "workers": {"count": 1},
              "jobs": {"lease_seconds": 60, "heartbeat_seconds": 2},
              "output": {"formats": ["json", "txt", "html", "sentences"]},
              "web": {"listen": f"127.0.0.1:{port}"},
              "summary": summary_config(server, **summary)}
    d = Daemon(root, config=config, fake_engine=False)
    d.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return d


def spkd(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "--config", str(d.config_path), *args],
                          capture_output=True, text=True, env=d.env, cwd=REPO, timeout=120)


def summary_row(d: Daemon, job_id: int) -> dict[str, Any] | None:
    rows = d.query("SELECT * FROM summaries WHERE job_id = ?", job_id)
    return rows[0] if rows else None


def wait_summary(d: Daemon, job_id: int, states: tuple[str, ...] = ("done",),
                 timeout: float = SUMMARY_TIMEOUT_SECONDS) -> dict[str, Any]:
    """The job's summary row once it is in one of `states`; fails at once when it settles in
    another final state (done or failed), saying why."""
    def settled() -> dict[str, Any] | None:
        row = summary_row(d, job_id)
        if row is None:
            return None
        if row["state"] in states:
            return row
        assert row["state"] not in ("done", "failed"), f"summary ended {row['state']}, not {states}: {row}"
        return None

    return d.wait(settled, timeout=timeout, what=f"job {job_id}'s summary {'/'.join(states)}")


def event_kinds(d: Daemon, job_id: int) -> list[str]:
    return [e["kind"] for e in d.events(job_id)]


def check_links(outbox: Path, stem: str) -> list[float]:
    """Every link of STEM.summary.md points at STEM.html at the start of one of the
    transcript's segments (STEM.json), its label that time as HH:MM:SS; returns the times."""
    starts = {f"{s['start']:.3f}" for s in json.loads((outbox / f"{stem}.json").read_text())["segments"]}
    times: list[float] = []
    for hours, minutes, seconds, target, at in LINK.findall((outbox / f"{stem}.summary.md").read_text()):
        assert target == stem, target
        assert f"{float(at):.3f}" in starts, f"#t={at} is no segment's start: {sorted(starts)}"
        assert int(hours) * 3600 + int(minutes) * 60 + int(seconds) == int(float(at))
        times.append(float(at))
    return times


@dataclass
class Meeting:
    daemon: Daemon
    server: LlamaServer
    job_id: int
    stem: str


@pytest.fixture(scope="module")
def meeting(tmp_path_factory: pytest.TempPathFactory, tiny_models, two_voice_wav: Path,
            llm_server: LlamaServer) -> Iterator[Meeting]:
    """A daemon with summaries on, one meeting dropped and transcribed (its first summary
    is the first test's to wait for)."""
    root = tmp_path_factory.mktemp("summaries")
    d = real_daemon(root, tiny_models, llm_server)
    try:
        d.start(timeout=180)
        (d.inbox / "meeting.wav").write_bytes(two_voice_wav.read_bytes())
        (job,) = d.wait_finished(1, timeout=300)
        assert job["state"] == "done", job
        yield Meeting(daemon=d, server=llm_server, job_id=job["id"], stem="meeting")
        assert d.stop() == 0
    finally:
        d.kill_group()
        llm_server.start()  # for the next module, should a test have left it down


def test_dropped_meeting_gets_a_summary_linked_to_real_segment_times(meeting: Meeting) -> None:
    d, job_id, stem = meeting.daemon, meeting.job_id, meeting.stem
    row = wait_summary(d, job_id)
    assert row["attempts"] >= 1 and row["error_message"] is None and row["model"] == ALIAS
    # The transcript never waited for the summary: the job was done before it was claimed.
    kinds = event_kinds(d, job_id)
    assert kinds.index("done") < kinds.index("summary_claimed") < kinds.index("summary_done")
    payload = json.loads((d.outbox / f"{stem}.json").read_text())
    summary = payload["summary"]
    assert summary["schema"] == "spkd.summary/1" and summary["model"] == ALIAS
    # Asked for JSON (summary.json_mode, the answer's schema), even the tiny model answers in
    # the format: points that cite segments.
    assert summary["format"] == "json", f"the model's answer was not the JSON asked for: {summary}"
    md = (d.outbox / f"{stem}.summary.md").read_text()
    assert md.startswith("# Summary: meeting.wav")
    times = check_links(d.outbox, stem)
    segments = payload["segments"]
    cited = [m for key in ("overview", "decisions", "action_items", "open_questions")
             for point in summary[key] for m in point["moments"]]
    assert cited and times, f"the summary cites no segment: {summary}"
    # Each point's moments are segments of the transcript, and the md links exactly those.
    for moment in cited:
        assert moment["start"] == pytest.approx(segments[moment["segment"] - 1]["start"], abs=1e-3)
    assert sorted({round(m["start"], 3) for m in cited}) == sorted({round(t, 3) for t in times})
    # The summaries table is plain SQL, read-only.
    out = spkd(d, "sql", "SELECT job_id, state FROM summaries", "--json")
    assert json.loads(out.stdout) == [{"job_id": job_id, "state": "done"}]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def test_clicking_a_point_of_the_summary_panel_plays_the_meeting_from_there(meeting: Meeting, browser: Any,
                                                                           tmp_path_factory: pytest.TempPathFactory
                                                                           ) -> None:
    shots = screenshot_taker(tmp_path_factory, "summary-screenshots")
    from selenium.webdriver.common.by import By

    d, job_id = meeting.daemon, meeting.job_id
    wait_summary(d, job_id)
    wait_listening(int(d.url.rsplit(":", 1)[1]), timeout=30)
    browser.get(f"{d.url}/jobs/{job_id}")
    panel = browser.find_element(By.ID, "summary")
    assert "done" in panel.find_element(By.CSS_SELECTOR, ".summary-state").text
    moments = panel.find_elements(By.CSS_SELECTOR, "a.moment[data-t]")
    assert moments, "the panel shows no moment to play"
    # The moment furthest into the meeting, so that playing from it is told apart from the start.
    link = max(moments, key=lambda m: float(m.get_attribute("data-t")))
    at = float(link.get_attribute("data-t"))
    starts = {round(float(s.get_attribute("data-start")), 3) for s in browser.find_elements(
        By.CSS_SELECTOR, ".sent[data-start]")}
    assert round(at, 3) in starts, "a moment is where a sentence of the transcript starts"
    player = browser.find_element(By.ID, "player")
    wait_for(lambda: browser.execute_script("return arguments[0].readyState", player) >= 1, what="audio metadata")
    link.click()
    position = lambda: browser.execute_script("return arguments[0].currentTime", player)  # noqa: E731
    wait_for(lambda: at - 0.05 <= position() < at + 3, timeout=10, what=f"currentTime at {at}")
    wait_for(lambda: position() > at + 0.2, timeout=20, what="the audio playing on from there")
    browser.execute_script("arguments[0].pause()", player)
    shots(browser, "summary-panel")


def test_spkd_summarize_renews_a_stale_summary(meeting: Meeting) -> None:
    d, job_id, stem = meeting.daemon, meeting.job_id, meeting.stem
    first = wait_summary(d, job_id)
    assert first["transcript_version"] == 1
    # An edit to the transcript (spkd edit, issue #27) makes a new version: the summary is stale.
    edited = spkd(d, "edit", str(job_id), "--segment", "1", "--text", "the corrected first sentence")
    assert edited.returncode == 0, edited.stderr
    listed = spkd(d, "summaries", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = [s for s in json.loads(listed.stdout) if s["job_id"] == job_id]
    assert entry["stale"] is True and entry["state"] == "done"
    queued_before = event_kinds(d, job_id).count("summary_queued")

    renewed = spkd(d, "summarize", str(job_id))
    assert renewed.returncode == 0, renewed.stderr
    row = wait_summary(d, job_id, timeout=SUMMARY_TIMEOUT_SECONDS)
    assert event_kinds(d, job_id).count("summary_queued") == queued_before + 1
    assert row["transcript_version"] == 2 and row["finished_at"] > first["finished_at"]
    (entry,) = [s for s in json.loads(spkd(d, "summaries", "--json").stdout) if s["job_id"] == job_id]
    assert entry["stale"] is False
    # The renewed summary was made from the edited transcript, and its links still land on it.
    assert json.loads((d.outbox / f"{stem}.json").read_text())["summary"]["transcript_version"] == 2
    check_links(d.outbox, stem)


def test_server_killed_mid_request_leaves_the_transcript_done_and_the_summary_retried(meeting: Meeting) -> None:
    d, server, job_id, stem = meeting.daemon, meeting.server, meeting.job_id, meeting.stem
    wait_summary(d, job_id)
    transcript_before = json.loads((d.outbox / f"{stem}.json").read_text())["segments"]
    summary_before = (d.outbox / f"{stem}.summary.md").read_bytes()
    retries_before = event_kinds(d, job_id).count("summary_retry")
    try:
        assert spkd(d, "summarize", str(job_id)).returncode == 0
        # Killed while it answers: the worker's request is open on the server's port.
        d.wait(lambda: (summary_row(d, job_id) or {}).get("state") == "running" and server.requests_in_flight(),
               timeout=SUMMARY_TIMEOUT_SECONDS, what="the summary's request in flight")
        server.kill()
        # With the server gone every attempt fails; after summary.max_attempts the summary
        # ends failed, saying why. The transcript is untouched all along.
        row = wait_summary(d, job_id, ("failed",), timeout=120)
        assert row["attempts"] == row["max_attempts"] == 3
        assert row["error_kind"] and row["error_message"]
        kinds = event_kinds(d, job_id)
        assert kinds.count("summary_retry") >= retries_before + 2 and kinds[-1] == "summary_failed"
        (job,) = d.jobs()
        assert job["state"] == "done" and job["error_message"] is None
        assert json.loads((d.outbox / f"{stem}.json").read_text())["segments"] == transcript_before
        # The last good summary is kept, not replaced by nothing.
        assert (d.outbox / f"{stem}.summary.md").read_bytes() == summary_before
    finally:
        server.start()
    # Once the server is back, `spkd summarize` makes it.
    assert spkd(d, "summarize", str(job_id)).returncode == 0
    row = wait_summary(d, job_id)
    assert row["error_message"] is None and (d.outbox / f"{stem}.summary.md").exists()
    check_links(d.outbox, stem)


def test_an_answer_in_prose_is_kept_as_text(meeting: Meeting, tmp_path: Path) -> None:
    """A model that ignores the format (here asked for prose by a `summary.prompt` file, and
    not held to JSON by `summary.json_mode: false`): its answer is kept as written. The
    answer is kept short (`summary.max_answer_tokens`): prose then, or at worst JSON cut off
    mid-way, which is no JSON either; both must come back as the text the model wrote."""
    d, job_id, stem = meeting.daemon, meeting.job_id, meeting.stem
    wait_summary(d, job_id)
    assert d.stop() == 0
    prompt = tmp_path / "prose.txt"
    prompt.write_text("Summarise the meeting below in two or three plain English sentences of prose. "
                      "Do not use JSON, lists, braces or headings.\n")
    config = json.loads(d.config_path.read_text())
    config["summary"].update(prompt=str(prompt), json_mode=False, max_answer_tokens=64)
    d.config_path.write_text(json.dumps(config, indent=2))
    d.start(timeout=180)
    assert spkd(d, "summarize", str(job_id)).returncode == 0
    row = wait_summary(d, job_id)
    summary = json.loads((d.outbox / f"{stem}.json").read_text())["summary"]
    assert summary["format"] == "text", summary
    assert summary["text"].strip() and not any(summary[k] for k in ("overview", "decisions", "action_items",
                                                                   "open_questions"))
    md = (d.outbox / f"{stem}.summary.md").read_text()
    assert "## Summary" in md and summary["text"].strip() in md
    assert json.loads(row["result"])["text"] == summary["text"]
