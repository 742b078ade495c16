"""The browser fixture of the dashboard tests (bench/browser.py launches it): page(request, tmp_path) yields a
headless Chromium with a fresh profile, skipping the test, saying why, where chromium or chromedriver are absent; if
the test failed, a screenshot of the page is saved into tmp_path first and its path printed."""

from __future__ import annotations

import pytest

from bench.browser import missing, start, wait_for

__all__ = ["page", "wait_for"]


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
