"""The report opened in headless Chromium: it renders, draws every chart, logs no errors, and at
common window widths (800, 1300, 1920 px) nothing runs out of its card and no chart labels
overlap.

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
from test_report import LONG_NAME, PLOTS, SELECTED, full_report, fused, row, versus

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
    assert state["title"] == f"shopaug report: {SELECTED} on wands <subset> & co"
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


# Run in the page: every card (section) keeps its tables, charts and code inside, or scrolls them
# inside a scroll box of its own (".table-scroll", "pre"); every chart's tick labels keep apart
# within an axis, and no chart text leaves its chart.
LAYOUT_CHECK = """
const problems = [];
const slack = 0.5;  // sub-pixel rounding
const box = (element) => element.getBoundingClientRect();
const union = (boxes) => ({
  left: Math.min(...boxes.map((b) => b.left)), right: Math.max(...boxes.map((b) => b.right)),
  top: Math.min(...boxes.map((b) => b.top)), bottom: Math.max(...boxes.map((b) => b.bottom)),
});
const meet = (a, b) => a.left < b.right - slack && b.left < a.right - slack
  && a.top < b.bottom - slack && b.top < a.bottom - slack;
for (const card of document.querySelectorAll("section")) {
  if (card.scrollWidth > card.clientWidth) {
    problems.push(`${card.id}: content ${card.scrollWidth} px, card ${card.clientWidth} px`);
  }
  const inner = box(card);
  for (const item of card.querySelectorAll("table, svg[data-plot], pre, dl")) {
    const shown = box(item.closest(".table-scroll, pre") || item);
    if (shown.left < inner.left - slack || shown.right > inner.right + slack) {
      problems.push(`${card.id}: a ${item.tagName} spans ${shown.left}-${shown.right}, `
        + `the card ${inner.left}-${inner.right}`);
    }
  }
}
const labels = {};
for (const svg of document.querySelectorAll("svg[data-plot]")) {
  const plot = svg.dataset.plot;
  const frame = box(svg);
  for (const text of svg.querySelectorAll("text")) {
    const b = box(text);
    if (b.left < frame.left - slack || b.right > frame.right + slack
        || b.top < frame.top - slack || b.bottom > frame.bottom + slack) {
      problems.push(`${plot}: label "${text.textContent}" leaves the chart`);
    }
  }
  labels[plot] = 0;
  for (const axis of svg.querySelectorAll('g[id*="matplotlib.axis_"]')) {
    const ticks = [...axis.querySelectorAll('g[id*="tick_"]')]
      .map((tick) => [...tick.querySelectorAll("text")])
      .filter((texts) => texts.length > 0)
      .map((texts) => [texts.map((t) => t.textContent).join(" "), union(texts.map(box))]);
    labels[plot] += ticks.length;
    for (let i = 0; i < ticks.length; i++) {
      for (let j = i + 1; j < ticks.length; j++) {
        if (meet(ticks[i][1], ticks[j][1])) {
          problems.push(`${plot}: tick labels "${ticks[i][0]}" and "${ticks[j][0]}" overlap`);
        }
      }
    }
  }
}
const names = [...document.querySelectorAll("#ablation td.name .value")];
const longest = names.reduce((a, b) => (b.textContent.length > a.textContent.length ? b : a));
return {
  problems: problems,
  labels: labels,
  scrolling: [...document.querySelectorAll(".table-scroll")]
    .filter((s) => s.scrollWidth > s.clientWidth).map((s) => s.closest("section").id),
  pageOverflow: document.documentElement.scrollWidth > window.innerWidth,
  innerWidth: window.innerWidth,
  longName: {text: longest.textContent, width: box(longest).width, height: box(longest).height,
             line: parseFloat(getComputedStyle(longest).lineHeight)},
};
"""


def real_sized_report() -> dict[str, Any]:
    """The full profile's size: 11 trained rows, each with its RRF and convex fusion (written
    after all trained rows, as ``shopaug run`` does), plus the baselines and a reranker."""
    report = full_report()
    names = ["human negatives", "dense hard", "all", "near-miss", "synthetic queries"]
    names += ["synthetic queries (gemma)", "bm25 hard", "hybrid hard", "random", "popular"]
    budget = {"epochs": 2.0, "steps": 1234.5, "train_seconds_per_fold": 612.25}
    trained = [
        row(
            name,
            "augmented",
            0.40 + i / 1000,
            p_value_vs_plain_fine_tune=0.5,
            p_value_vs_zero_shot_hybrid=0.01,
            vs_plain_fine_tune=versus(-0.0123, -0.0301, 0.0052, 0.5),
            vs_zero_shot_hybrid=versus(0.0345, 0.0102, 0.0567, 0.01),
            examples=123456.0,
            groups=45678.0,
            **budget,
        )
        for i, name in enumerate(names)
    ]
    fusions = [
        fused(name, method, 0.41 + i / 1000, weight=[0.8, 0.7, 0.8] if method == "convex" else None)
        for i, name in enumerate(names)
        for method in ("rrf", "convex")
    ]
    report["ablation"][-1:-1] = trained + fusions
    return report


@pytest.mark.parametrize("width", [800, 1300, 1920])
@pytest.mark.parametrize("report", [full_report, real_sized_report])
def test_nothing_overflows_its_card_and_no_labels_overlap(
    browser: WebDriver, tmp_path: Path, width: int, report: Any
) -> None:
    path = render_report(report(), tmp_path / "report.html")
    browser.call("POST", "/window/rect", {"width": width, "height": 1000})
    browser.open(path.as_uri())
    state = browser.script(LAYOUT_CHECK)
    assert abs(state["innerWidth"] - width) < 40, state["innerWidth"]
    assert state["problems"] == []
    assert not state["pageOverflow"]
    assert sorted(state["labels"]) == sorted(PLOTS)
    assert all(count >= 4 for count in state["labels"].values()), state["labels"]
    # Long row names wrap onto several lines instead of widening the table.
    assert state["longName"]["text"] == LONG_NAME
    assert state["longName"]["width"] < 400
    assert state["longName"]["height"] > 2 * state["longName"]["line"]
    if width >= 1300:  # the full ablation table fits a desktop window without scrolling
        assert state["scrolling"] == []


def test_layout_check_catches_overflow_and_overlap(browser: WebDriver, tmp_path: Path) -> None:
    """A control page: a table wider than its card and two tick labels on top of each other."""
    page = tmp_path / "broken.html"
    ticks = "".join(
        f'<g id="c--xtick_{i}"><text x="{x}" y="20" font-size="14">0.{i}000</text></g>'
        for i, x in ((1, 10), (2, 30), (3, 200))
    )
    page.write_text(
        '<!DOCTYPE html><title>broken</title><section id="ablation" style="width:300px">'
        '<table><tr><td class="name"><span class="value">a-name</span></td>'
        '<td style="white-space:nowrap">' + "wide " * 80 + "</td></tr></table>"
        '<svg data-plot="c" width="260" height="40"><g id="c--matplotlib.axis_1">'
        + ticks
        + '</g><text x="250" y="30">out of the chart</text></svg></section>'
    )
    browser.call("POST", "/window/rect", {"width": 800, "height": 600})
    browser.open(page.as_uri())
    problems = " | ".join(browser.script(LAYOUT_CHECK)["problems"])
    assert "ablation: content" in problems
    assert "ablation: a TABLE spans" in problems
    assert 'tick labels "0.1000" and "0.2000" overlap' in problems
    assert '"0.3000"' not in problems
    assert 'label "out of the chart" leaves the chart' in problems
