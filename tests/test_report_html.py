"""`report --html FILE`: the page's content and its promise to work offline, checked on the markup.

Rendering in a real browser (does it load without errors, do the charts draw) is tests/browser/; here the
page is parsed with the standard library: balanced markup, nothing fetched from anywhere, a chart per
metric and split, a table per customer, ids escaped, and the command's exit codes.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from cmdrdata_autopatch.pricing import load_prices
from cmdrdata_autopatch.report import Reading, Report
from cmdrdata_autopatch.report_html import nice_ceiling, render_html
from cmdrdata_autopatch.report_query import Window

from .apps.harness import clean_env, run
from .report_helpers import REPORT, wire, without_prices, write_jsonl

VOID = {"meta", "br", "img", "input", "link", "hr", "line", "rect"}  # rect/line are closed or self-closing


class Page(HTMLParser):
    """Every tag and attribute of the page, and whether each opened element was closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, Any]]] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def count(self, tag: str, **attrs: str) -> int:
        return sum(1 for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items()))


def events() -> list[dict[str, Any]]:
    return [
        wire("acme", "gpt-4o", 1000, 100, timestamp="2026-11-28T10:00:00Z"),
        wire("acme", "gpt-4o-mini", 3000, 300, timestamp="2026-11-30T10:00:00Z"),
        wire("<script>alert(1)</script>", "gpt-4o", 10, 10, timestamp="2026-11-30T11:00:00Z"),
        wire("globex", "my-local-llama", 50, 5, timestamp="2026-12-01T09:00:00Z", usage_source="estimated"),
    ]


def page_of(evts: list[dict[str, Any]], priced: bool) -> tuple[str, Page]:
    reading = Reading(events=evts, sources=["/data/usage.jsonl"])
    report = Report.build(reading, Window(), [], load_prices() if priced else None)
    text = render_html(report)
    parsed = Page()
    parsed.feed(text)
    parsed.close()
    assert parsed.errors == [] and parsed.stack == []  # every element closed, in order
    return text, parsed


def test_page_is_self_contained(tmp_path: Path) -> None:
    text, page = page_of(events(), priced=True)
    assert text.startswith("<!DOCTYPE html>")
    csp = [
        a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'; img-src data:"]
    assert page.count("script") == 0 and page.count("link") == 0 and page.count("img") == 0
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            assert name not in ("src", "href"), (tag, name, value)
    assert re.findall(r"https?://[^\"' ]+", text) == ["http://www.w3.org/2000/svg"] * page.count("svg")
    assert "url(" not in text and "@import" not in text


def test_page_has_totals_charts_and_a_table_per_customer() -> None:
    text, page = page_of(events(), priced=load_prices() is not None)
    charts = [a for t, a in page.tags if t == "svg" and a.get("class") == "chart"]
    labels = [a["aria-label"] for a in charts]
    assert labels[:2] == ["tokens per day, by customer", "tokens per day, by model"]
    if load_prices() is not None:
        assert labels[2:] == [
            "estimated cost (USD) per day, by customer",
            "estimated cost (USD) per day, by model",
        ]
    bars = [a for t, a in page.tags if t == "rect" and a.get("class") == "bar"]
    token_bars = {(a["data-series"], a["data-bucket"]) for a in bars}
    assert ("acme", "2026-11-28") in token_bars and ("globex", "2026-12-01") in token_bars
    words = " ".join(page.text)
    for heading in ("customer acme", "customer globex", "Customers", "Models", "Per customer", "Notes"):
        assert heading in words
    assert "2026-11-29" in words  # a day without calls still has its place on the axis
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert re.search(r'<div class="card">calls<b>4</b></div>', text)


def test_without_prices_only_token_charts() -> None:
    text, page = page_of(events(), priced=False)
    assert [a["aria-label"] for t, a in page.tags if t == "svg"] == [
        "tokens per day, by customer",
        "tokens per day, by model",
    ]
    assert "cost (est.)" not in text and "no cost column: pip install" in text


def test_long_spans_chart_by_month_and_empty_reports_render() -> None:
    spread = [wire("acme", "gpt-4o", 10, 10, timestamp=f"2026-{m:02d}-15T00:00:00Z") for m in range(1, 13)]
    _, page = page_of(spread, priced=False)
    buckets = {a["data-bucket"] for t, a in page.tags if t == "rect" and a.get("class") == "bar"}
    assert buckets == {f"2026-{m:02d}" for m in range(1, 13)}
    text, _ = page_of([], priced=False)
    assert "nothing to draw" in text
    assert [nice_ceiling(v) for v in (0, 0.7, 3, 501_300, 2_000_200, 0.0042)] == [1, 1, 5, 1e6, 2.5e6, 0.005]


def test_html_option_writes_the_page_and_still_prints(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "u.jsonl", events())
    out = tmp_path / "report.html"
    env = without_prices(clean_env(tmp_path), tmp_path)
    result = run([*REPORT, str(path), "--html", str(out), "--by", "customer"], env)
    assert result.returncode == 0, result.stderr
    assert f"wrote the HTML report to {out}" in result.stderr
    assert result.stdout.startswith(f"usage from {path}: 4 event(s)")
    assert out.read_text(encoding="utf-8").count("<svg") == 2

    blocker = tmp_path / "afile"
    blocker.write_text("")
    bad = run([*REPORT, str(path), "--html", str(blocker / "r.html")], env)
    assert bad.returncode == 1 and f"{blocker} is a file, not a directory" in bad.stderr
    assert bad.stdout == ""


def test_many_series_fold_into_other_and_the_period_is_stated() -> None:
    when = "2026-11-30T10:00:00Z"
    crowd = [wire(f"customer-{n:02d}", "gpt-4o", 100 * (n + 1), 0, timestamp=when) for n in range(12)]
    reading = Reading(events=crowd, sources=["/data/usage.jsonl"])
    window = Window(since=datetime(2026, 11, 30, tzinfo=timezone.utc))
    page = Page()
    page.feed(render_html(Report.build(reading, window, [], None)))
    first_chart = page.tags.index(next(t for t in page.tags if t[0] == "svg"))
    legend = [a for t, a in page.tags[:first_chart] if t == "span" and a.get("class") == "sw"]
    assert len(legend) == 9  # the eight biggest customers, then "other"
    bars = [a for t, a in page.tags if t == "rect" and a.get("class") == "bar"]
    by_customer = [a["data-series"] for a in bars[:9]]
    assert by_customer[:2] == ["customer-11", "customer-10"] and by_customer[-1] == "other"
    assert "customer-00" not in by_customer
    assert "selected: calls from 2026-11-30 00:00:00 UTC" in " ".join(page.text)
