"""A real browser for the e2e tests: headless Chromium driven through Debian's
chromium-driver (selenium). One copy of how it is started, how the tests wait for a page
and where screenshots go, for every browser test module."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import pytest

__all__ = ["CHROMIUM_FLAGS", "chromium_programs", "screenshot_taker", "start_chromium", "wait_for"]

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--mute-audio", "--autoplay-policy=no-user-gesture-required",
                  "--window-size=1280,1000")


def chromium_programs() -> tuple[str, str]:
    """Chromium and its driver, or the test skips saying which packages give them."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("needs Chromium and its driver (Debian packages `chromium` and `chromium-driver`): run "
                    "`make test-system-deps`")
    return browser, driver


def start_chromium(profile: Path, *, downloads: Path | None = None) -> Any:
    """A headless Chromium with its own profile folder (and download folder, when given);
    the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium_programs()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    if downloads is not None:
        options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                                  "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    if downloads is not None:
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.set_page_load_timeout(60)
    return driver


def screenshot_taker(tmp_path_factory: pytest.TempPathFactory, name: str) -> Callable[[Any, str], Path]:
    """take(driver, what) saves a numbered screenshot into one folder, kept as the run's
    artefact: `$SPKD_TEST_SCREENSHOTS/<name>` when that is set, else under pytest's
    temporary directory; the folder is printed."""
    wanted = os.environ.get("SPKD_TEST_SCREENSHOTS")
    folder = Path(wanted) / name if wanted else tmp_path_factory.mktemp(name)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")

    def take(driver: Any, what: str) -> Path:
        path = folder / f"{len(list(folder.iterdir())):02d}-{what}.png"
        assert driver.save_screenshot(str(path)) and path.stat().st_size > 1000, path
        print(f"screenshot: {path}")
        return path

    return take


def wait_for(predicate: Callable[[], Any], *, timeout: float = 60, what: str = "condition",
             every: float = 0.2) -> Any:
    """predicate()'s first true value within `timeout` seconds, else AssertionError."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except StaleElementReferenceException:
            value = None  # the live part of the page was replaced between finding and reading: look again
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
