"""The report opened in headless Chromium: it renders, draws every chart, logs no errors.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``); skipped without them.

The browser is driven through chromedriver's W3C WebDriver HTTP API with the standard library
(``urllib``), so no Selenium or websocket package is needed. Console errors come from
chromedriver's browser log (``goog:loggingPrefs``), which carries each message's level:
``console.error``, uncaught exceptions and failed resource loads arrive as ``SEVERE``. (Chromium's
``--enable-logging=stderr`` was not used: it prints every console message as ``INFO:CONSOLE``,
whatever its level.) A control page with a deliberate error checks that the detection works.

Screenshots go to ``$SHOPAUG_ARTIFACTS`` when set (CI keeps them), else to ``tmp_path``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shopaug.eval.report import render_report
from test_report import PLOTS, full_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is absent; run: apt-get install -y chromium chromium-driver",
    ),
    pytest.mark.skipif(
        not Path(CHROMEDRIVER).exists(),
        reason="chromedriver is absent; run: apt-get install -y chromium-driver",
    ),
]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
]


class WebDriver:
    """The few WebDriver commands these tests use, over plain HTTP."""

    def __init__(self, base_url: str, session_id: str) -> None:
        self.base_url = base_url
        self.session_id = session_id

    @staticmethod
    def request(base_url: str, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=90) as response:
            return json.load(response)["value"]

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return self.request(self.base_url, method, f"/session/{self.session_id}{path}", body)

    def open(self, url: str) -> None:
        self.call("POST", "/url", {"url": url})

    def script(self, source: str) -> Any:
        return self.call("POST", "/execute/sync", {"script": source, "args": []})

    def browser_log(self) -> list[dict[str, Any]]:
        """Console and network messages since the last call, each with a ``level``."""
        return list(self.call("POST", "/se/log", {"type": "browser"}))

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("GET", "/screenshot"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    driver = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    profile = tempfile.mkdtemp(prefix="shopaug-chromium-")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                WebDriver.request(base_url, "GET", "/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail("chromedriver did not start within 30 s")
                time.sleep(0.1)
        options = {"binary": str(CHROMIUM), "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]}
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "goog:loggingPrefs": {"browser": "ALL"},
        }
        session = WebDriver.request(
            base_url, "POST", "/session", {"capabilities": {"alwaysMatch": capabilities}}
        )
        web = WebDriver(base_url, session["sessionId"])
        yield web
        web.call("DELETE", "")
    finally:
        driver.terminate()
        driver.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


def _artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SHOPAUG_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _severe(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["message"] for entry in entries if entry["level"] == "SEVERE"]


def test_error_detection_works_on_a_broken_page(browser: WebDriver, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><title>broken</title><p>x</p>"
        '<script>console.error("deliberate-error"); missingFunction();</script>'
        '<img src="missing.png">'
    )
    browser.browser_log()  # drop anything earlier
    browser.open(page.as_uri())
    messages = " ".join(_severe(browser.browser_log()))
    assert "deliberate-error" in messages
    assert "missingFunction" in messages
    assert "missing.png" in messages


def test_report_renders_without_console_errors(browser: WebDriver, tmp_path: Path) -> None:
    path = render_report(full_report(), tmp_path / "report.html")
    browser.browser_log()
    browser.open(path.as_uri())
    state = browser.script(
        """
        const plots = {};
        for (const svg of document.querySelectorAll("svg[data-plot]")) {
          const box = svg.getBoundingClientRect();
          plots[svg.dataset.plot] = [box.width, box.height];
        }
        return {
          title: document.title,
          plots: plots,
          sections: [...document.querySelectorAll("section")].map((s) => s.id),
          resources: performance.getEntriesByType("resource").length,
          height: document.documentElement.scrollHeight,
          overflow: document.documentElement.scrollWidth > window.innerWidth,
        };
        """
    )
    assert _severe(browser.browser_log()) == []
    assert state["title"] == "shopaug report: minilm-ft on wands <subset> & co"
    assert sorted(state["plots"]) == sorted(PLOTS)
    for name, (width, height) in state["plots"].items():
        assert width > 100 and height > 100, f"plot {name} rendered at {width}x{height}"
    assert state["sections"][0] == "summary" and "manifest" in state["sections"]
    assert state["resources"] == 0  # nothing fetched: the page is self-contained
    assert not state["overflow"]  # charts scale down to the window width

    page_height = min(state["height"] + 200, 6000)  # + room for the window frame
    browser.call("POST", "/window/rect", {"width": 1280, "height": page_height})
    image = browser.screenshot()
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(image) > 20_000  # a blank page of this size compresses to a few kB
    (_artifacts(tmp_path) / "report.png").write_bytes(image)
