"""Correcting a transcript on the dashboard, in a real browser: headless Chromium
(selenium, Debian's chromium-driver) against a real daemon that serves the dashboard as
its supervised child. The daemon runs the fake engine of tests/fakes (these tests are
about the page, the corrections and the outputs, not about FunASR), with `docx` left
out of its formats, so that the docx download is one made on demand.

A sentence is corrected in place and the change is seen in every output file and in
search; find highlights and steps through the matches; an edited text that looks like
HTML stays text on the page and in NAME.html; a version is brought back; a docx and a
zip are downloaded. Screenshots go into one folder under pytest's temporary directory
(printed), kept as the run's artefacts.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.e2e.test_web_browser import job_named
from tests.support.browser import chromium_programs, screenshot_taker, start_chromium, wait_for
from tests.support.daemon import Daemon, write_wav
from tests.support.web import free_port, wait_listening

pytestmark = pytest.mark.e2e

FORMATS = ("json", "txt", "srt", "vtt", "html")  # not docx, md, sentences, tsv
HOSTILE = '<img src=x onerror="window.spkdXss=1"><script>window.spkdXss=2</script> & friends'


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], Path]:
    return screenshot_taker(tmp_path_factory, "web-edit-screenshots")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    chromium_programs()
    port = free_port()
    d = Daemon(tmp_path_factory.mktemp("web-edit-daemon"),
               config={"workers": {"count": 1}, "jobs": {"max_attempts": 1}, "output": {"formats": list(FORMATS)},
                       "web": {"listen": f"127.0.0.1:{port}"}})
    d.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    d.start()
    wait_listening(port, timeout=30)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(daemon, downloads, tmp_path_factory: pytest.TempPathFactory):
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"), downloads=downloads)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def meeting(daemon) -> dict[str, Any]:
    """A done job of three sentences (the fake engine's), archived, its outputs in FORMATS."""
    write_wav(daemon.inbox / "meeting.wav", 12.0)
    return daemon.wait(lambda: (lambda j: j if j and j["state"] == "done" and j["archive_name"] else None)(
        job_named(daemon, "meeting.wav")), timeout=60, what="meeting.wav done and archived")


def outputs_of(d: Daemon) -> dict[str, str]:
    return {fmt: (d.outbox / f"meeting.{fmt}").read_text(encoding="utf-8") for fmt in FORMATS}


def flat(text: str) -> str:
    return " ".join(text.split())


def sentences(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#transcript .sent[data-number]")


def correct(driver: Any, index: int, text: str) -> None:
    """What a person does: click the sentence, select its words, type new ones, Enter."""
    from selenium.webdriver.common.keys import Keys

    target = sentences(driver)[index]
    target.click()
    wait_for(lambda: target.get_attribute("contenteditable") in ("plaintext-only", "true"), timeout=10,
             what="the sentence open for editing")
    driver.execute_script("const r = document.createRange(); r.selectNodeContents(arguments[0]);"
                          "const s = window.getSelection(); s.removeAllRanges(); s.addRange(r);", target)
    target.send_keys(text)
    target.send_keys(Keys.ENTER)
    wait_for(lambda: target.get_attribute("contenteditable") is None, timeout=30, what="the correction saved")


def versions(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [r.get_attribute("data-version") for r in driver.find_elements(By.CSS_SELECTOR, "#versions tbody tr")]


def search(driver: Any, url: str, query: str) -> list[str]:
    from selenium.webdriver.common.by import By

    driver.get(url + "/search")
    field = driver.find_element(By.NAME, "q")
    field.send_keys(query)
    field.submit()
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "ol.hits li"), what="the search's answer")
    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "ol.hits li:not(.none)")]


def test_a_corrected_sentence_reaches_every_output_and_search_and_comes_back_on_revert(
        daemon, browser, shots, meeting) -> None:
    from selenium.webdriver.common.by import By

    original = outputs_of(daemon)
    page = f"{daemon.url}/jobs/{meeting['id']}"
    browser.get(page)
    assert len(sentences(browser)) == 3
    old = sentences(browser)[1].text
    assert old.startswith("sentence 2 of meeting.wav")
    new = "The budget grows by twelve percent next quarter."
    sentences(browser)[1].click()
    shots(browser, "job-editing")
    browser.find_element(By.CSS_SELECTOR, ".edit-bar button.cancel").click()
    assert sentences(browser)[1].text == old and not browser.find_elements(By.CSS_SELECTOR, ".edit-bar")
    correct(browser, 1, new)
    wait_for(lambda: versions(browser) == ["2", "1"], timeout=20, what="the versions panel refreshed")
    assert sentences(browser)[1].text == new
    shots(browser, "job-corrected")

    # every output file, made again
    after = outputs_of(daemon)
    for fmt in FORMATS:
        assert new in flat(after[fmt]) and old not in flat(after[fmt]), fmt
    assert json.loads(after["json"])["segments"][1]["text"] == new
    # after a reload too, and in search
    browser.get(page)
    assert sentences(browser)[1].text == new
    assert [flat(h) for h in search(browser, daemon.url, "twelve percent")][0].endswith(new)
    assert search(browser, daemon.url, "sentence 2 of meeting") == []
    shots(browser, "search-corrected")

    # revert: version 1 back, as version 3
    browser.get(page)
    browser.find_element(By.CSS_SELECTOR, "#versions button.revert[data-version='1']").click()
    wait_for(lambda: versions(browser) == ["3", "2", "1"], timeout=30, what="the page after the revert")
    assert sentences(browser)[1].text == old
    assert outputs_of(daemon) == original, "every output as the engine made it, byte for byte"
    assert search(browser, daemon.url, "twelve percent") == []
    assert len(search(browser, daemon.url, "sentence 2 of meeting")) == 1
    kinds = [e["kind"] for e in daemon.events(meeting["id"])]
    assert "corrected" in kinds and "reverted" in kinds
    browser.get(page)
    shots(browser, "job-reverted")


def test_find_highlights_and_steps_through_the_matches(daemon, browser, shots, meeting) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{daemon.url}/jobs/{meeting['id']}")
    box = browser.find_element(By.ID, "find-text")
    box.send_keys("OF MEETING")  # case does not matter
    count = browser.find_element(By.ID, "find-count")
    wait_for(lambda: count.text == "1 of 3", timeout=10, what="three matches")
    current = lambda: [s.get_attribute("data-index") for s in  # noqa: E731
                       browser.find_elements(By.CSS_SELECTOR, "#transcript .sent.found-current")]
    assert current() == ["0"]
    assert browser.execute_script("return CSS.highlights.get('spkd-find').size") == 3
    shots(browser, "job-find")
    browser.find_element(By.ID, "find-next").click()
    assert count.text == "2 of 3" and current() == ["1"]
    box.send_keys(Keys.ENTER)
    assert count.text == "3 of 3" and current() == ["2"]
    box.send_keys(Keys.ENTER)
    assert count.text == "1 of 3", "past the last: the first again"
    browser.find_element(By.ID, "find-prev").click()
    assert count.text == "3 of 3"
    box.clear()
    box.send_keys("no such words")
    wait_for(lambda: count.text == "no match", timeout=10, what="no match")
    assert current() == []


def test_an_edited_text_that_looks_like_html_stays_text(daemon, browser, shots, meeting) -> None:
    from selenium.webdriver.common.by import By

    page = f"{daemon.url}/jobs/{meeting['id']}"
    browser.get(page)
    correct(browser, 0, HOSTILE)
    for _ in range(2):  # as saved, then as the server renders it
        assert sentences(browser)[0].text == HOSTILE
        assert not browser.find_elements(By.CSS_SELECTOR, "main img, #transcript script")
        assert browser.execute_script("return window.spkdXss") is None
        browser.get(page)
    shots(browser, "job-hostile-text")
    # NAME.html, re-rendered with it
    browser.get((daemon.outbox / "meeting.html").as_uri())
    assert browser.find_element(By.CSS_SELECTOR, ".sent[data-index='0']").text == HOSTILE
    assert not browser.find_elements(By.CSS_SELECTOR, "img") and browser.execute_script("return window.spkdXss") is None
    shots(browser, "name-html-hostile-text")
    assert HOSTILE in flat((daemon.outbox / "meeting.txt").read_text(encoding="utf-8"))


def test_an_unconfigured_docx_and_a_zip_download_from_the_page(daemon, browser, shots, meeting, downloads) -> None:
    import docx
    from selenium.webdriver.common.by import By

    browser.get(f"{daemon.url}/jobs/{meeting['id']}")
    said = [s.text for s in sentences(browser)]
    assert not (daemon.outbox / "meeting.docx").exists(), "docx is not among the configured formats"
    link = browser.find_element(By.CSS_SELECTOR, "#downloads a[data-format='docx']")
    link.click()
    document = wait_for(lambda: _complete(downloads / "meeting.docx"), timeout=30, what="the docx downloaded")
    text = "\n".join(p.text for p in docx.Document(io.BytesIO(document)).paragraphs)
    for sentence in said:
        assert sentence in text
    assert not (daemon.outbox / "meeting.docx").exists(), "made on demand: never written to the outbox"
    browser.find_element(By.ID, "zip-all").click()
    archive = wait_for(lambda: _complete(downloads / "meeting-all.zip"), timeout=30, what="the zip downloaded")
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        names = z.namelist()
        assert "meeting.docx" in names and "meeting.md" in names and len(names) == 9
        assert said[1] in flat(z.read("meeting.md").decode())
    shots(browser, "job-downloads")


def _complete(path: Path) -> bytes | None:
    """The file's bytes once Chromium has finished writing it (no .crdownload beside it)."""
    if not path.exists() or path.with_name(path.name + ".crdownload").exists():
        return None
    time.sleep(0.2)
    data = path.read_bytes()
    return data or None


def test_the_transcript_fits_a_phone_in_dark_mode(daemon, browser, shots, meeting) -> None:
    """390 px wide, `prefers-color-scheme: dark`: the timeline, the legend, find, a sentence
    open for correcting and the versions fit the screen (nothing scrolls sideways)."""
    from selenium.webdriver.common.by import By

    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        browser.get(f"{daemon.url}/jobs/{meeting['id']}")
        assert browser.execute_script("return matchMedia('(prefers-color-scheme: dark)').matches")
        browser.find_element(By.ID, "find-text").send_keys("meeting")
        sentences(browser)[2].click()
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".edit-bar button.save"), what="the editor")
        fits = "return document.documentElement.scrollWidth <= window.innerWidth"
        assert browser.execute_script(fits), browser.execute_script("return document.documentElement.scrollWidth")
        background = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert background != "rgb(255, 255, 255)", "dark, not the light page"
        shots(browser, "job-phone-dark-editing")
        browser.find_element(By.ID, "versions").location_once_scrolled_into_view
        shots(browser, "job-phone-dark-versions")
        browser.find_element(By.CSS_SELECTOR, ".edit-bar button.cancel").click()
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
