"""The dashboard's actions in a real browser: headless Chromium driven through Debian's
chromium-driver (selenium, as tests/e2e/test_web_browser.py does), against `spkd web`
as a real process over a tree with jobs and a voice made by the product's own
functions. Cancel a queued job, remove a done job after its confirmation page, rename a
voice to markup (shown as text everywhere, never run), and every page in dark mode
(Chromium's prefers-color-scheme emulation) and at a 390-px phone width, where nothing
may be wider than the screen.

Screenshots of every page looked at are kept as test artefacts: in $SPKD_TEST_SCREENSHOTS
when set, else in a folder under pytest's temporary directory (printed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import pytest

from daemon import files
from daemon.jobs import outputs, results
from daemon.store import Store
from daemon.transcript import SpeakerMatch
from tests.support.browser import chromium_programs, screenshot_taker, start_chromium, wait_for
from tests.support.daemon import write_wav
from tests.support.jobs import done_job, queued_job
from tests.support.web import XSS_NAME, WebProcess, loaded, populate, write_config

pytestmark = pytest.mark.e2e

# A voice's new name that is markup: it would set the title if it ever ran.
XSS_VOICE = "<img src=x onerror=document.title='pwned'>"
LONG_NAME = "board_meeting_recording_without_any_spaces_at_all_2026-12-07_final_final_v3.wav"
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    chromium_programs()
    root = tmp_path_factory.mktemp("web-actions")
    config_path = write_config(root)
    config = loaded(config_path)
    jobs = populate(config)
    store = Store(config.database_url, host=config.host)
    try:
        to_remove = done_job(config, store, "finished talk.wav")  # first: it claims the oldest queued job
        queued = queued_job(config, store, "waiting.wav")
        long_queued = queued_job(config, store, LONG_NAME)
        recording = write_wav(config.paths.voices / "Ann" / "ann.wav", 1.0)
        voice_id, _sample = store.add_voice_sample("Ann", {
            "embedding": (0.1, 0.2, 0.3), "model_name": "cam++", "model_revision": "v1",
            "sha256": files.sha256_file(recording), "speech_seconds": 1.0, "origin": "folder",
            "source": "Ann/ann.wav", "job_id": None})
        # the done job's first speaker named by the voice, as matching leaves it
        transcript = outputs.load_transcript(config, jobs.done)
        assert results.rerender(config, store, jobs.done, transcript.replace(
            speaker_names={1: "Ann"}, speaker_matches={1: SpeakerMatch(voice=voice_id, score=0.97)}),
            event="rematched")
    finally:
        store.close()
    with WebProcess(config_path) as web:
        yield {"url": web.url, "config": config, "jobs": jobs, "queued": queued, "long": long_queued,
               "to_remove": to_remove, "voice": voice_id}


@pytest.fixture(scope="module")
def browser(site, tmp_path_factory: pytest.TempPathFactory):
    driver = start_chromium(tmp_path_factory.mktemp("chromium-actions-profile"))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], Path]:
    return screenshot_taker(tmp_path_factory, "web-actions-screenshots")


def state_of(site: dict, job_id: int) -> str | None:
    store = Store(site["config"].database_url, host=site["config"].host)
    try:
        row = store.job(job_id)
        return row.state if row is not None else None
    finally:
        store.close()


def no_alert_and_title_kept(driver: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        text = None
    assert text is None, f"an alert ran: {text}"
    assert driver.title != "pwned", "markup of a name ran"
    assert driver.execute_script("return document.querySelectorAll('main img').length") == 0


def test_cancel_a_queued_job_from_the_jobs_list(site, browser, shots) -> None:
    from selenium.webdriver.common.by import By

    queued = site["queued"]
    browser.get(site["url"] + "/jobs")
    button = browser.find_element(By.CSS_SELECTOR, f'button.cancel[data-job="{queued}"]')
    button.click()
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, f'tr[data-job="{queued}"] td.state').text == "cancelled",
             timeout=20, what="the row to say cancelled")
    assert browser.current_url.endswith("/jobs")
    assert state_of(site, queued) == "cancelled"
    assert (site["config"].paths.failed / "waiting.wav").is_file(), "its file kept in failed/"
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-job="{queued}"]')
    assert row.find_elements(By.CSS_SELECTOR, "a.remove"), "a cancelled job offers Remove"
    shots(browser, "jobs-after-cancel")


def test_remove_a_done_job_after_its_confirmation(site, browser, shots) -> None:
    from selenium.webdriver.common.by import By

    job_id, config = site["to_remove"], site["config"]
    outbox_files = sorted(p.name for p in config.paths.outbox.glob("finished talk.*"))
    assert outbox_files
    browser.get(f"{site['url']}/jobs/{job_id}")
    browser.find_element(By.ID, "remove-job").click()
    wait_for(lambda: browser.current_url.endswith(f"/jobs/{job_id}/remove"), timeout=20, what="the confirmation")
    goes = browser.find_element(By.ID, "goes").text
    for name in outbox_files:
        assert name in goes, (name, goes)
    assert str(outputs.transcript_path(config, job_id)) in goes
    assert "moved into" in browser.find_element(By.ID, "stays").text
    shots(browser, "remove-confirmation")
    assert state_of(site, job_id) == "done", "nothing goes by looking"
    browser.find_element(By.ID, "confirm-remove-button").click()
    notice = wait_for(lambda: browser.find_elements(By.ID, "notice"), timeout=20, what="the notice")
    assert f"Job {job_id} removed" in notice[0].text
    assert state_of(site, job_id) is None
    assert not list(config.paths.outbox.glob("finished talk.*"))
    assert (config.paths.failed / "finished talk.wav").is_file(), "its audio kept in failed/"
    assert not browser.find_elements(By.CSS_SELECTOR, f'tr[data-job="{job_id}"]')


def test_a_voice_renamed_to_markup_is_text_on_every_page(site, browser, shots) -> None:
    from selenium.webdriver.common.by import By

    voice, jobs = site["voice"], site["jobs"]
    browser.get(site["url"] + "/voices")
    assert browser.find_element(By.CSS_SELECTOR, f'#voice-{voice} audio.sample-audio'), "its sample plays"
    duration = wait_for(lambda: browser.execute_script(
        f"const a = document.querySelector('#voice-{voice} audio'); a.preload = 'auto'; a.load();"
        "return new Promise(r => { if (a.readyState > 0) r(a.duration); "
        "a.addEventListener('loadedmetadata', () => r(a.duration)); setTimeout(() => r(0), 5000); });"),
        timeout=20, what="the sample's metadata")
    assert abs(duration - 1.0) < 0.05, duration
    field = browser.find_element(By.CSS_SELECTOR, f'#voice-{voice} input[name="new_name"]')
    field.clear()
    field.send_keys(XSS_VOICE)
    browser.find_element(By.CSS_SELECTOR, f'#voice-{voice} button.rename').click()
    notice = wait_for(lambda: browser.find_elements(By.ID, "notice"), timeout=30, what="the rename's notice")
    assert XSS_VOICE in notice[0].text and "1 job(s)" in notice[0].text
    no_alert_and_title_kept(browser)
    assert browser.find_element(By.CSS_SELECTOR, f'tr[data-voice="{voice}"] td.name').text == XSS_VOICE
    shots(browser, "voices-renamed-to-markup")
    browser.get(f"{site['url']}/jobs/{jobs.done}")
    no_alert_and_title_kept(browser)
    assert XSS_VOICE in browser.find_element(By.ID, "speakers").text
    outputs_txt = (site["config"].paths.outbox / f"{Path(XSS_NAME).stem}.txt").read_text(encoding="utf-8")
    assert XSS_VOICE in outputs_txt and "Ann" not in outputs_txt, "every output re-rendered"
    browser.get(f"{site['url']}/search?q=morning")
    no_alert_and_title_kept(browser)


def _luminance(css_colour: str) -> float:
    r, g, b = (int(x) for x in re.findall(r"\d+", css_colour)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


PAGES = (("overview", "/"), ("jobs", "/jobs"), ("job", "/jobs/{done}"), ("voices", "/voices"),
         ("search", "/search?q=morning"), ("unknown-job", "/jobs/999"), ("remove", "/jobs/{done}/remove"),
         ("long-name", "/jobs/{long}"))


def test_every_page_in_dark_mode_and_at_phone_width(site, browser, shots) -> None:
    from selenium.webdriver.common.by import By

    jobs = site["jobs"]
    urls = [(name, site["url"] + path.format(done=jobs.done, long=site["long"])) for name, path in PAGES]
    body_colours = "return [getComputedStyle(document.body).backgroundColor, getComputedStyle(document.body).color]"
    try:
        for scheme in ("light", "dark"):
            browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                                    {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
            for width in ("desktop", "phone"):
                if width == "phone":
                    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
                else:
                    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
                for name, url in urls:
                    browser.get(url)
                    background, text = browser.execute_script(body_colours)
                    if scheme == "dark":
                        assert _luminance(background) < 0.15 and _luminance(text) > 0.75, (name, background, text)
                    else:
                        assert _luminance(background) > 0.95 and _luminance(text) < 0.25, (name, background, text)
                    if width == "phone":
                        inner = browser.execute_script("return window.innerWidth")
                        assert inner == PHONE["width"], inner
                        wide = browser.execute_script(
                            "return [document.documentElement.scrollWidth, document.body.scrollWidth]")
                        assert max(wide) <= PHONE["width"], (name, wide)
                        # nothing sticks out either (an element may be clipped inside a scroller of its own)
                        beyond = browser.execute_script(
                            "return Array.from(document.querySelectorAll('main *, header *')).filter(e => {"
                            " const r = e.getBoundingClientRect(); if (!r.width) return false;"
                            " for (let p = e.parentElement; p; p = p.parentElement) {"
                            "   const o = getComputedStyle(p).overflowX; if (o === 'auto' || o === 'scroll') return false; }"
                            " return r.right > window.innerWidth + 0.5; }).map(e => e.tagName + '.' + e.className)")
                        assert beyond == [], (name, beyond)
                    shots(browser, f"{name}-{scheme}-{width}")
                if width == "phone":
                    # the jobs list at phone width: one card per job, no header row
                    browser.get(site["url"] + "/jobs")
                    assert not browser.find_element(By.CSS_SELECTOR, "table.jobs thead").is_displayed()
                    assert browser.find_element(By.CSS_SELECTOR, f'tr[data-job="{site["long"]}"] td.name').is_displayed()
        # the unknown job's page: the layout, the reason and the way back
        browser.get(site["url"] + "/jobs/999")
        assert browser.find_element(By.ID, "error-detail").text == "no job 999"
        browser.find_element(By.ID, "way-back").click()
        wait_for(lambda: browser.current_url.endswith("/jobs"), timeout=20, what="the way back to the list")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
