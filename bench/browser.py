"""Headless Chromium driven by selenium, for the dashboard's bench and tests: Debian's chromium and chromium-driver
(CI installs them: .ci/run), or AIOS_CHROMIUM / AIOS_CHROMEDRIVER.

missing() says why a browser cannot run here (None if it can); start(profile_dir) launches one with a fresh profile
and flags that keep it from reaching the network on its own; wait_for(driver, what, condition) waits on a DOM
condition (never a fixed sleep) with a deadline generous for a loaded 2-core machine, and fails naming what it
waited for.
"""

from __future__ import annotations

import os
import shutil

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
    for what, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)) and shutil.which(path) is None:
            return f"{what} not found at {path} (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    return None


def start(profile_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_for(driver, what: str, condition, timeout_s: float = WAIT_S):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(lambda d: condition(d))
    except TimeoutException:
        raise AssertionError(f"the page never showed {what} within {timeout_s:.0f} s") from None
