"""The report's model: the events read from the sources, selected and grouped, and its JSON form.

Shared by the command (`report.py`) and the two renderers (`report_text.py`, `report_html.py`), which is
why it lives apart from all three: each of them imports it, and it imports none of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Optional

from .pricing import PriceTable
from .report_query import Group, Window, bursts, group_events, parse_timestamp

STDIN = "-"
STDIN_NAME = "<stdin>"
SKIP_REASONS = ("torn_last_line", "bad_lines", "duplicates")


@dataclass
class Reading:
    """Everything read from the report's sources: unique events, what was skipped, which sources."""

    events: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    sources: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def add_lines(self, raw: bytes) -> int:
        """Add one source's events; returns how many undecodable lines (other than a torn last one) it had."""
        lines = raw.split(b"\n")
        last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        bad = 0
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                item = None
            if isinstance(item, dict) and isinstance(item.get("event"), dict):
                item = item["event"]  # a spool-style record wrapping the wire event
            if not isinstance(item, dict):
                if index == last:
                    self.skipped["torn_last_line"] += 1
                else:
                    self.skipped["bad_lines"] += 1
                    bad += 1
                continue
            event_id = item.get("event_id")
            if isinstance(event_id, str):
                if event_id in self.seen:
                    self.skipped["duplicates"] += 1
                    continue
                self.seen.add(event_id)
            self.events.append(item)
        return bad


def read_events(path: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The events in one JSONL file, each `event_id` once, and the counts of what was skipped.

    Skipped: `torn_last_line` (writer killed mid-line), `bad_lines` (undecodable lines elsewhere),
    `duplicates` (an id seen before, e.g. written again after a replay).
    """
    reading = Reading()
    with open(path, "rb") as handle:
        reading.add_lines(handle.read())
    return reading.events, reading.skipped


def default_report_path(environ: Mapping[str, str] | None = None) -> str:
    """Where the jsonl exporter writes by default: `CMDRDATA_JSONL_PATH`, else ./cmdrdata-usage.jsonl."""
    from .config import DEFAULT_JSONL_PATH

    env = os.environ if environ is None else environ
    return env.get("CMDRDATA_JSONL_PATH", "").strip() or DEFAULT_JSONL_PATH


def time_range(events: Iterable[Mapping[str, Any]]) -> tuple[datetime | None, datetime | None]:
    """The earliest and latest call start (`timestamp`) among the events, in UTC; None when none has one."""
    moments = [m for m in (parse_timestamp(e.get("timestamp")) for e in events) if m is not None]
    return (min(moments), max(moments)) if moments else (None, None)


@dataclass
class Report:
    """What every output format shows: the selected events, their groups, their cost when priced."""

    reading: Reading
    window: Window
    by: list[str]
    prices: PriceTable | None
    events: list[dict[str, Any]] = field(default_factory=list)
    costs: dict[int, Optional[Decimal]] = field(default_factory=dict)
    groupings: dict[tuple[str, ...], tuple[list[Group], Group]] = field(default_factory=dict)

    @classmethod
    def build(cls, reading: Reading, window: Window, by: Sequence[str], prices: PriceTable | None) -> Report:
        report = cls(reading=reading, window=window, by=list(by), prices=prices)
        report.events = window.select(reading.events)
        if prices is not None:  # each event priced once, whichever tables it appears in
            report.costs = {id(event): prices.cost(event) for event in report.events}
        return report

    def cost_of(self, event: Mapping[str, Any]) -> Decimal | None:
        return self.costs.get(id(event))

    def grouped(self, by: Sequence[str]) -> tuple[list[Group], Group]:
        """The events grouped along `by`, computed once per report (the outputs ask for some many times)."""
        key = tuple(by)
        if key not in self.groupings:
            cost_of = self.cost_of if self.prices is not None else None
            self.groupings[key] = group_events(self.events, by, cost_of)
        return self.groupings[key]

    def default_views(self) -> list[list[str]]:
        """The tables without --by: customer, model, and the deployments when any event names one."""
        views = [["customer"], ["model"]]
        if any(e.get("service") or e.get("environment") for e in self.events):
            views.append(["service", "environment"])
        return views

    def burst_count(self) -> int:
        return bursts(self.events)


def summarize(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Group events by customer and by model, with totals (the core of the `report --json` body)."""
    report = Report.build(Reading(events=[dict(e) for e in events]), Window(), [], None)
    return _summary(report)


def _row_json(names: Sequence[str], group: Group, priced: bool) -> dict[str, Any]:
    row: dict[str, Any] = dict(zip(names, group.key))
    row.update(group.totals.as_json())
    if priced:
        row["cost_usd"] = _cost_number(group.cost)
        row["unpriced"] = group.unpriced
    return row


def _cost_number(cost: Decimal | None) -> float | None:
    return None if cost is None else float(round(cost, 10))


def _summary(report: Report) -> dict[str, Any]:
    priced = report.prices is not None
    result: dict[str, Any] = {}
    for dimension, key in (("customer", "customer_id"), ("model", "model")):
        rows, _ = report.grouped([dimension])
        result[f"by_{dimension}"] = [_row_json([key], row, priced) for row in rows]
    if ["service", "environment"] in report.default_views():
        rows, _ = report.grouped(["service", "environment"])
        result["by_service_environment"] = [_row_json(["service", "environment"], r, priced) for r in rows]
    _, total = report.grouped([])
    result["totals"] = _row_json([], total, priced)
    return result


# ------------------------------------------------------------------------------------------------ output


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds")


def report_json(report: Report) -> dict[str, Any]:
    """The whole report as one JSON-ready dict (`--format json`)."""
    reading, window = report.reading, report.window
    first, last = time_range(report.events)
    body: dict[str, Any] = {
        "file": reading.sources[0] if len(reading.sources) == 1 else None,
        "files": list(reading.sources),
        "events": len(report.events),
        "time_range": {"first": _iso(first), "last": _iso(last)},
        "bursts": report.burst_count(),
        "filter": {
            "since": _iso(window.since),
            "until": _iso(window.until),
            "left_out": window.outside,
            "left_out_untimed": window.untimed,
        },
        "skipped": dict(reading.skipped),
        "prices": None if report.prices is None else report.prices.snapshot_json(),
        **_summary(report),
    }
    if report.prices is not None:
        body["unpriced_models"] = dict(report.prices.unknown_models)
    if report.by:
        rows, _ = report.grouped(report.by)
        body["by"] = list(report.by)
        body["rows"] = [_row_json(report.by, row, report.prices is not None) for row in rows]
    return body
