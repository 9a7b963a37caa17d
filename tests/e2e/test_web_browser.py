"""The dashboard in a real browser: headless Chromium driven through Debian's
chromium-driver (selenium), against a real daemon that serves it as its supervised
child (`web.listen`). The first daemon runs the fake engine of tests/fakes: those tests
are about the pages, the uploads and the progress reporting, not about FunASR (whose
stages tests/integration/test_engine.py checks). Renaming speakers and the voice
library need real speakers: a second daemon runs FunASR with the tiny models (its
CAM++ trained on espeak-ng voices) on dialogs of held-out voices. One browser session
serves the whole module.

Each test saves a screenshot of every page it looks at into one folder under pytest's
temporary directory and prints where; nothing of it is committed.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.support.audio import require_tools
from tests.support.browser import chromium_programs, screenshot_taker, start_chromium, wait_for
from tests.support.daemon import Daemon, write_wav
from tests.support.web import XSS_NAME, free_port, wait_listening

pytestmark = pytest.mark.e2e

SLOW_SECONDS = 6


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], Path]:
    return screenshot_taker(tmp_path_factory, "web-screenshots")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    chromium_programs()
    port = free_port()
    d = Daemon(tmp_path_factory.mktemp("web-daemon"),
               config={"workers": {"count": 1}, "jobs": {"max_attempts": 1},
                       "web": {"listen": f"127.0.0.1:{port}"}},
               env={"SPKD_FAKE_SLOW_SECONDS": str(SLOW_SECONDS)})
    d.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    d.port = port  # type: ignore[attr-defined]
    d.start()
    wait_listening(port, timeout=30)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def voice_daemon(tmp_path_factory: pytest.TempPathFactory, tiny_models):
    """A daemon with real FunASR (the tiny models), for speakers and voices."""
    chromium_programs()
    require_tools("espeak-ng")
    port = free_port()
    d = Daemon(tmp_path_factory.mktemp("web-voices-daemon"), fake_engine=False,
               config={"models": {"dir": str(tiny_models.asr.parent)}, "workers": {"count": 1},
                       "jobs": {"lease_seconds": 60, "heartbeat_seconds": 2, "max_attempts": 1},
                       "output": {"formats": ["json", "txt", "srt"]}, "web": {"listen": f"127.0.0.1:{port}"}})
    d.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    d.start(timeout=180)
    wait_listening(port, timeout=30)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def browser(daemon, tmp_path_factory: pytest.TempPathFactory):
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def job_named(d: Daemon, name: str) -> dict[str, Any] | None:
    return next((j for j in d.jobs() if j["source_name"] == name), None)


def drop_files(driver: Any, paths: list[Path]) -> None:
    """What a drop onto the page does: the files go to the drop zone's `drop` handler in
    a DataTransfer (selenium cannot drag from the desktop, so a file input fills it)."""
    from selenium.webdriver.common.by import By

    driver.execute_script("const i = document.createElement('input'); i.type = 'file'; i.multiple = true;"
                          "i.id = 'test-drop-source'; document.body.appendChild(i);")
    driver.find_element(By.ID, "test-drop-source").send_keys("\n".join(str(p) for p in paths))
    driver.execute_script("""
        const files = document.getElementById('test-drop-source').files;
        const transfer = new DataTransfer();
        for (const f of files) transfer.items.add(f);
        const zone = document.getElementById('dropzone');
        zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: transfer, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
        document.getElementById('test-drop-source').remove();
    """)


def test_a_dropped_file_goes_from_queued_to_done_with_its_progress_shown(daemon, browser, shots, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(daemon.url + "/")
    assert "Daemon running" in browser.find_element(By.ID, "daemon-status").text
    shots(browser, "overview")
    browser.execute_script("window.spkdNotReloaded = true;")
    browser.find_element(By.CSS_SELECTOR, "details summary").click()
    browser.find_element(By.NAME, "speakers").send_keys("2")
    source = write_wav(tmp_path / "slow-standup.wav", 3.0)
    drop_files(browser, [source])
    wait_for(lambda: "inbox/slow-standup.wav" in browser.find_element(By.ID, "upload-result").text,
             what="the upload's answer")
    sidecar_job = daemon.wait(lambda: job_named(daemon, "slow-standup.wav"), timeout=30, what="the job row")
    assert sidecar_job["options"] and '"speakers": 2' in sidecar_job["options"]

    seen: list[tuple[str, float]] = []

    def progress_shown() -> bool:
        for bar in browser.find_elements(By.CSS_SELECTOR, "section.running progress"):
            stage = bar.find_element(By.XPATH, "following-sibling::span[@class='stage']").text
            seen.append((stage, float(bar.get_attribute("value") or 0)))
        return any(0 < value < 1 for _stage, value in seen)

    wait_for(progress_shown, timeout=SLOW_SECONDS + 30, what="a progress bar on the overview")
    shots(browser, "overview-progress")
    done_before = int(browser.find_element(By.ID, "count-done").text)
    job = daemon.wait(lambda: (lambda j: j if j and j["state"] == "done" else None)(
        job_named(daemon, "slow-standup.wav")), timeout=SLOW_SECONDS + 30, what="the job done")
    wait_for(lambda: int(browser.find_element(By.ID, "count-done").text) > done_before
             or not browser.find_elements(By.CSS_SELECTOR, "section.running progress"),
             timeout=20, what="the overview to show it done")
    assert browser.execute_script("return window.spkdNotReloaded === true"), "the overview reloaded itself whole"
    assert any(stage == "asr" for stage, _ in seen), seen
    kinds = [e["kind"] for e in daemon.events(job["id"])]
    assert kinds[:2] == ["queued", "claimed"] and kinds[-1] == "done"
    assert job["stage"] is None and job["progress"] is None, "progress is cleared once done"


def test_clicking_a_sentence_plays_the_audio_from_its_start(daemon, browser, shots) -> None:
    from selenium.webdriver.common.by import By

    seconds = 12.0  # the fake engine makes 1 + size % 3 sentences: 3 for this size
    write_wav(daemon.inbox / "meeting.wav", seconds)
    job = daemon.wait(lambda: (lambda j: j if j and j["state"] == "done" and j["archive_name"] else None)(
        job_named(daemon, "meeting.wav")), timeout=60, what="meeting.wav done and archived")
    browser.get(f"{daemon.url}/jobs/{job['id']}")
    sentences = browser.find_elements(By.CSS_SELECTOR, ".sent[data-start]")
    assert len(sentences) == 3
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline rect.seg")) == 3
    player = browser.find_element(By.ID, "player")
    wait_for(lambda: browser.execute_script("return arguments[0].readyState", player) >= 1, what="audio metadata")
    target = sentences[1]
    start = float(target.get_attribute("data-start"))
    assert start > 1.0
    target.click()
    position = lambda: browser.execute_script("return arguments[0].currentTime", player)  # noqa: E731
    wait_for(lambda: start - 0.05 <= position() < start + 3, timeout=10, what=f"currentTime at {start}")
    wait_for(lambda: position() > start + 0.3, timeout=20, what="the audio playing on from there")
    assert "current" in target.get_attribute("class").split()
    assert browser.find_elements(By.CSS_SELECTOR, "rect.seg.active[data-index='1']")
    shots(browser, "job-playing")
    browser.execute_script("arguments[0].pause()", player)


def test_search_and_follow_a_hit_to_that_moment(daemon, browser, shots) -> None:
    """What `spkd search` finds, in the browser: each hit links to its job at the hit's
    start; following it highlights that sentence and puts the player there."""
    from selenium.webdriver.common.by import By

    job = daemon.wait(lambda: (lambda j: j if j and j["state"] == "done" else None)(
        job_named(daemon, "meeting.wav")), timeout=60, what="meeting.wav done")
    browser.get(daemon.url + "/jobs")
    box = browser.find_element(By.CSS_SELECTOR, "header.top")  # any page: the search page is one click away
    box.find_element(By.LINK_TEXT, "Search").click()
    field = browser.find_element(By.NAME, "q")
    field.send_keys("SENTENCE 3 of meeting")  # case does not matter
    field.submit()
    links = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "ol.hits a"), what="a hit")
    assert len(links) == 1 and "meeting.wav" in links[0].text
    assert browser.find_element(By.CSS_SELECTOR, "ol.hits mark").text.lower() == "sentence 3 of meeting"
    shots(browser, "search")
    links[0].click()
    wait_for(lambda: f"/jobs/{job['id']}#t=" in browser.current_url, what="the job page at the hit")
    target = browser.find_elements(By.CSS_SELECTOR, ".sent[data-start]")[2]
    start = float(target.get_attribute("data-start"))
    assert browser.current_url.endswith(f"#t={start:.3f}")
    wait_for(lambda: "current" in target.get_attribute("class").split(), what="the hit's sentence highlighted")
    player = browser.find_element(By.ID, "player")
    wait_for(lambda: abs(browser.execute_script("return arguments[0].currentTime", player) - start) < 0.05,
             timeout=10, what="the player at the hit")
    shots(browser, "job-from-search")


def test_a_failed_job_is_retried_from_the_overview(daemon, browser, shots) -> None:
    from selenium.webdriver.common.by import By

    write_wav(daemon.inbox / "crashonce-interview.wav", 2.0, seed=7)  # kills its worker on the first attempt
    job = daemon.wait(lambda: (lambda j: j if j and j["state"] == "failed" else None)(
        job_named(daemon, "crashonce-interview.wav")), timeout=60, what="the job failed")
    browser.get(daemon.url + "/")
    row = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f"section.failures tr[data-job='{job['id']}']"),
                   what="the failure on the overview")[0]
    assert job["error_kind"] in row.text
    shots(browser, "overview-failure")
    row.find_element(By.CSS_SELECTOR, "button.retry").click()
    wait_for(lambda: "retry_requested" in [e["kind"] for e in daemon.events(job["id"])], timeout=20,
             what="the retry recorded")
    assert browser.current_url.rstrip("/") == daemon.url, "back on the overview"
    done = daemon.wait(lambda: (lambda j: j if j and j["state"] == "done" else None)(
        job_named(daemon, "crashonce-interview.wav")), timeout=60, what="the retried job done")
    assert "retry_requested" in [e["kind"] for e in daemon.events(done["id"])]
    browser.get(f"{daemon.url}/jobs/{done['id']}")
    assert browser.find_element(By.ID, "job-state").text == "done"
    shots(browser, "job-retried")


def test_hostile_names_show_as_text_on_every_page(daemon, browser, shots, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(daemon.url + "/")
    hostile = tmp_path / "x" / XSS_NAME
    write_wav(hostile, 1.5, seed=11)
    drop_files(browser, [hostile])
    wait_for(lambda: XSS_NAME in browser.find_element(By.ID, "upload-result").text, what="the upload's answer")
    job = daemon.wait(lambda: (lambda j: j if j and j["state"] == "done" else None)(job_named(daemon, XSS_NAME)),
                      timeout=60, what="the hostile name done")
    for path, name in (("/jobs", "jobs"), (f"/jobs?name={'onerror'}", "jobs-filtered"),
                       (f"/jobs/{job['id']}", "job-hostile-name")):
        browser.get(daemon.url + path)
        assert not browser.find_elements(By.CSS_SELECTOR, "main img"), f"{path}: the name became an element"
        shots(browser, name)
    assert browser.find_element(By.ID, "job-name").text == XSS_NAME
    browser.get(daemon.url + "/jobs?name=onerror")
    names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "td.name a")]
    assert names == [XSS_NAME]
    browser.get(daemon.url + "/voices")
    assert "No voices enrolled" in browser.find_element(By.ID, "voices").text
    shots(browser, "voices-empty")
    browser.get(daemon.url + "/metrics")
    assert "spkd_jobs{state=\"done\"}" in browser.find_element(By.TAG_NAME, "body").text
    shots(browser, "metrics")


def test_the_dashboard_comes_back_when_its_process_dies(daemon, browser) -> None:
    from selenium.webdriver.common.by import By

    pids = lambda: [int(p) for p in re.findall(r"dashboard process pid (\d+)", daemon.log())]  # noqa: E731
    first = pids()[-1]
    maps = Path(f"/proc/{first}/maps")
    if maps.exists():  # Linux: what the running dashboard has loaded
        loaded = maps.read_text()
        assert "libtorch" not in loaded and "funasr" not in loaded, "the dashboard process loaded torch"
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: len(pids()) >= 2 and pids()[-1] != first, timeout=30, what="a new dashboard process")
    wait_listening(daemon.port, timeout=30)
    browser.get(daemon.url + "/")
    assert "Daemon running" in browser.find_element(By.ID, "daemon-status").text
    assert "restarting in" in daemon.log()


# --- speakers and voices (real FunASR, tiny models) ----------------------------------------

def test_renaming_a_speaker_rerenders_every_output(voice_daemon, browser, shots, tmp_path) -> None:
    """The job page's rename form: the speaker's name in every output file (json, txt,
    srt) and on the page, the other speakers renumbered among the unnamed, and with
    `enrol` the speaker's voice in the library."""
    from selenium.webdriver.common.by import By

    from tests.support.dialog import TEST_VOICES, make_dialog

    d = voice_daemon
    dialog = make_dialog(tmp_path / "standup.wav", list(TEST_VOICES[1:3]), seed=5)
    (d.inbox / "standup.wav").write_bytes(dialog.path.read_bytes())
    job = d.wait(lambda: (lambda j: j if j and j["state"] in ("done", "failed") else None)(
        job_named(d, "standup.wav")), timeout=300, what="standup.wav transcribed")
    assert job["state"] == "done", job
    outputs = {fmt: d.outbox / f"standup.{fmt}" for fmt in ("json", "txt", "srt")}
    before = {fmt: path.read_text(encoding="utf-8") for fmt, path in outputs.items()}
    labels = [s["label"] for s in json.loads(before["json"])["speakers"]]
    assert len(labels) >= 2, labels

    browser.get(f"{d.url}/jobs/{job['id']}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#speakers tbody tr")
    assert [r.get_attribute("data-label") for r in rows] == labels
    assert [r.find_element(By.CSS_SELECTOR, "td.shown").text for r in rows] == labels, "no names yet"
    shots(browser, "job-speakers")
    field = browser.find_element(By.NAME, "name:Speaker1")
    field.send_keys("王总")
    browser.find_element(By.CSS_SELECTOR, "#rename input[name=enrol]").click()
    browser.find_element(By.CSS_SELECTOR, "#rename button[type=submit]").click()
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "#speakers tr[data-label=Speaker1] td.shown").text
             == "王总", timeout=30, what="the page showing the new name")
    assert browser.current_url == f"{d.url}/jobs/{job['id']}"
    row = browser.find_element(By.CSS_SELECTOR, "#speakers tr[data-label=Speaker1]")
    assert row.find_element(By.CSS_SELECTOR, "td.source").text == "renamed, and enrolled as a voice"
    others = [r.find_element(By.CSS_SELECTOR, "td.shown").text
              for r in browser.find_elements(By.CSS_SELECTOR, "#speakers tbody tr")[1:]]
    assert others == [f"Speaker{i}" for i in range(1, len(labels))], "the unnamed renumbered among themselves"
    turns = browser.find_elements(By.CSS_SELECTOR, "#transcript .turn")
    shown = {t.get_attribute("data-speaker"): t.find_element(By.CSS_SELECTOR, ".who strong").text for t in turns}
    assert shown["1"] == "王总" and shown["2"] == "Speaker1"
    shots(browser, "job-renamed")

    # every output file was rendered again from the stored transcript
    after = {fmt: path.read_text(encoding="utf-8") for fmt, path in outputs.items()}
    doc = json.loads(after["json"])
    first = next(s for s in doc["speakers"] if s["label"] == "Speaker1")
    assert (first["name"], first["display"], first["renamed"]) == ("王总", "王总", True)
    assert first["voice"] is not None, "enrolled: the voice's id"
    names = {seg["speaker"]: seg["speaker_name"] for seg in doc["segments"]}
    assert names[1] == "王总" and names[2] == "Speaker1"
    turn_starts = [seg for i, seg in enumerate(doc["segments"])
                   if seg["speaker"] == 1 and (i == 0 or doc["segments"][i - 1]["speaker"] != 1)]
    assert len(re.findall(r"^王总 \[", after["txt"], re.M)) == len(turn_starts) > 0, after["txt"]
    assert "王总" not in before["srt"] and "王总" in after["srt"]
    assert all(after[fmt] != before[fmt] for fmt in outputs)
    assert "renamed" in [e["kind"] for e in d.events(job["id"])]
    assert [v["name"] for v in d.query("select name from voices")] == ["王总"]


def test_a_voice_is_enrolled_from_the_page_and_removed(voice_daemon, browser, shots, tmp_path) -> None:
    """Upload a recording of one held-out voice on /voices: it goes into paths.voices,
    the daemon's folder scan enrols it through the queue, the page lists it, the next
    recording of that voice is named after it (its job page shows the voice and the
    score); then remove it."""
    from selenium.webdriver.common.by import By

    from daemon.config import SpeakersConfig
    from tests.support.dialog import make_dialog

    d = voice_daemon
    recording = make_dialog(tmp_path / "li wei.wav", ["m3"], seed=21, min_speech_seconds=15)
    browser.get(d.url + "/voices")
    shots(browser, "voices")
    form = browser.find_element(By.ID, "enrol")
    form.find_element(By.NAME, "name").send_keys("李伟")
    form.find_element(By.NAME, "recording").send_keys(str(recording.path))
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    def listed() -> list[Any]:
        return [r for r in browser.find_elements(By.CSS_SELECTOR, "#voices tbody tr[data-voice]")
                if r.find_element(By.CSS_SELECTOR, "td.name").text == "李伟"]

    wait_for(lambda: browser.current_url == d.url + "/voices", what="back on /voices")
    pending = browser.find_elements(By.CSS_SELECTOR, "#pending li")
    assert listed() or any("李伟/li wei.wav" in p.text for p in pending), "the upload shown on its way"
    if pending:
        shots(browser, "voices-pending")
    assert (d.voices / "李伟" / "li wei.wav").is_file(), "in the voice's folder, for the daemon"

    def enrolled() -> list[Any]:
        browser.refresh()
        return listed()

    try:
        row = wait_for(enrolled, timeout=180, every=2, what="the voice enrolled by the daemon")[0]
    except AssertionError:
        failed = browser.find_elements(By.ID, "failed-enrolments")
        raise AssertionError(f"not enrolled: {failed[0].text if failed else ''}\n{d.log()[-3000:]}") from None
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1] == "1" and cells[3] == "folder", cells
    assert not browser.find_elements(By.ID, "pending")
    job = next(j for j in d.jobs() if j["task"] == "enrol" and j["source_name"] == "voices/李伟/li wei.wav")
    assert job["state"] == "done"
    shots(browser, "voices-enrolled")

    # the library names the next recording of that voice, and the job page says by which
    # voice and with what score
    dialog = make_dialog(tmp_path / "call.wav", ["m3", "m7"], seed=22)
    (d.inbox / "call.wav").write_bytes(dialog.path.read_bytes())
    job = d.wait(lambda: (lambda j: j if j and j["state"] in ("done", "failed") else None)(
        job_named(d, "call.wav")), timeout=300, what="call.wav transcribed")
    assert job["state"] == "done", job
    browser.get(f"{d.url}/jobs/{job['id']}")
    first = browser.find_element(By.CSS_SELECTOR, "#speakers tr[data-label=Speaker1]")
    assert first.find_element(By.CSS_SELECTOR, "td.shown").text == "李伟"
    assert first.find_element(By.CSS_SELECTOR, "td.source").text == "voice 李伟"
    score = float(first.find_element(By.CSS_SELECTOR, "td.score").text)
    assert SpeakersConfig().match_threshold <= score <= 1.0, score  # the default the daemon runs with
    doc = json.loads((d.outbox / "call.json").read_text(encoding="utf-8"))
    assert next(s for s in doc["speakers"] if s["label"] == "Speaker1")["score"] == pytest.approx(score, abs=5e-4)
    shots(browser, "job-named-by-the-library")

    browser.get(d.url + "/voices")
    row = listed()[0]
    row.find_element(By.CSS_SELECTOR, "button.remove").click()
    wait_for(lambda: browser.current_url == d.url + "/voices" and not listed(), timeout=30, what="the voice gone")
    assert not d.query("select id from voices where name = ?", "李伟")
    assert not (d.voices / "李伟").exists()
    assert [p.name.startswith("李伟 ") for p in (d.root / "state" / "removed-voices").iterdir()] == [True]
    shots(browser, "voices-removed")
