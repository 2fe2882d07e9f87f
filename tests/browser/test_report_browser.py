"""The `report --html` page in a real headless Chromium: it loads without errors and its charts draw.

Marked `browser` so CI can run it on its own (`pytest -m browser tests/browser`); it skips cleanly where
no Chromium is installed (Debian: `apt-get install chromium`). The page is written by the real command
from a JSONL file, opened from disk with networking off, and checked three ways: the DevTools protocol
reports no console error, exception or error log entry (a blocked fetch or a CSP violation would be one);
the chart bars have a laid-out size; and the screenshot, kept as an artifact, shows the charts' colours.
A page with a deliberate error proves the error check can fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..apps.harness import clean_env, run
from ..report_helpers import REPORT, wire, write_jsonl
from .cdp import Browser, find_chromium, png_pixels

pytestmark = pytest.mark.browser
CHROMIUM = find_chromium()
BAR_BLUE = (0x00, 0x72, 0xB2)  # the first series' colour in report_html.PALETTE
BAR_ORANGE = (0xE6, 0x9F, 0x00)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("no Chromium on PATH (apt-get install chromium), or set $CHROMIUM")
    chrome = Browser(CHROMIUM, tmp_path / "profile", tmp_path / "chromium.log")
    try:
        yield chrome
    finally:
        chrome.close()


def artifacts(tmp_path: Path) -> Path:
    """Where the screenshot is kept: $TEST_ARTIFACTS_DIR for CI to collect, else the test's tmp dir."""
    target = Path(os.environ.get("TEST_ARTIFACTS_DIR") or tmp_path / "artifacts")
    target.mkdir(parents=True, exist_ok=True)
    return target


def write_page(tmp_path: Path) -> Path:
    days = ["2026-11-27", "2026-11-28", "2026-11-30", "2026-12-01"]
    events = [
        wire(customer, model, 1000 * (n + 1), 100 * (n + 1), timestamp=f"{day}T1{n}:00:00Z")
        for n, (customer, model) in enumerate(
            [("acme", "gpt-4o"), ("globex", "gpt-4o-mini"), ("initech", "gpt-4o"), ("acme", "o3")]
        )
        for day in days
    ]
    events.append(wire("<b>odd</b>", "gpt-4o", 10, 10, timestamp="2026-11-29T10:00:00Z"))
    source = write_jsonl(tmp_path / "usage.jsonl", events)
    page = tmp_path / "report.html"
    result = run([*REPORT, str(source), "--html", str(page)], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    return page


def test_report_page_loads_cleanly_and_draws_its_charts(browser: Browser, tmp_path: Path) -> None:
    page = write_page(tmp_path)
    session = browser.open(page.as_uri())
    assert browser.evaluate(session, "document.readyState") == "complete"
    assert browser.problems(session) == []

    charts = browser.evaluate(
        session,
        "[...document.querySelectorAll('svg.chart')].map(svg => ({"
        " label: svg.getAttribute('aria-label'),"
        " bars: svg.querySelectorAll('rect.bar').length,"
        " drawn: [...svg.querySelectorAll('rect.bar')].filter(r => {"
        "   const box = r.getBoundingClientRect(); return box.width > 0 && box.height > 0; }).length }))",
    )
    assert len(charts) >= 2
    assert charts[0]["label"] == "tokens per day, by customer"
    for chart in charts:
        assert chart["bars"] > 0 and chart["drawn"] == chart["bars"], chart
    customers = browser.evaluate(session, "[...document.querySelectorAll('h3')].map(h => h.textContent)")
    assert "customer acme" in customers and "customer <b>odd</b>" in customers  # shown as text, not markup

    shot = browser.screenshot(session)
    kept = artifacts(tmp_path) / "report-page.png"
    kept.write_bytes(shot)
    width, height, pixels = png_pixels(shot)
    assert width == 1000 and height > 900  # the whole page, beyond the first screen
    colours = set(pixels)
    assert len(colours) > 20, f"screenshot looks blank: {kept}"
    assert BAR_BLUE in colours and BAR_ORANGE in colours, f"no chart bars in {kept}"
    shutil.copy(page, kept.with_suffix(".html"))


def test_the_error_check_sees_errors(browser: Browser, tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!DOCTYPE html><html><body><p>x</p><script>console.error('deliberate');"
        "undefinedFunction();</script></body></html>"
    )
    session = browser.open(broken.as_uri())
    problems = browser.problems(session)
    assert any("deliberate" in p for p in problems), problems
    assert any(p.startswith("exception:") for p in problems), problems
