"""Headless Chromium for the dashboard tests, driven by selenium: Debian's chromium and chromium-driver (CI installs
them: .ci/run); the tests that need it skip, saying why, where they are absent.

page(request, tmp_path) yields a WebDriver with a fresh profile; if the test failed, a screenshot of the page is saved
into tmp_path first and its path printed. wait_for(driver, what, condition) waits on a DOM condition (never sleeps)
with a generous deadline for a loaded 2-core machine.
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = os.environ.get("AIOS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("AIOS_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1800",
)
WAIT_S = 180.0


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for what, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)) and shutil.which(path) is None:
            return f"{what} not found at {path} (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    return None


def start(profile_dir) -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def page(request, tmp_path):
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    from selenium.common.exceptions import WebDriverException

    driver = start(tmp_path / "profile")
    try:
        yield driver
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            shot = tmp_path / "page.png"
            try:
                driver.save_screenshot(str(shot))
                print(f"\ndashboard screenshot: {shot}")
            except WebDriverException as error:  # the browser itself may be what failed
                print(f"\nno dashboard screenshot ({error})")
        driver.quit()


def wait_for(driver, what: str, condition, timeout_s: float = WAIT_S):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(lambda d: condition(d))
    except TimeoutException:
        raise AssertionError(f"the page never showed {what} within {timeout_s:.0f} s") from None
