"""A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium.

Never a browser download: the binary and driver paths are given explicitly, and the browser runs
with a fresh user-data dir and no background networking, sync or component updates.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]


def artifacts_dir() -> Path:
    """Where browser tests write screenshots (TEST_ARTIFACTS_DIR, else ./test-artifacts)."""
    d = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "test-artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator:
    """A Selenium WebDriver on headless Chromium; raises with the install command if it is missing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for exe, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.path.exists(exe):
            raise RuntimeError(f"{exe} is missing: apt-get install {pkg} (deploy/bootstrap.sh does, as root)")
    profile = tempfile.mkdtemp(prefix="forensics-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
