"""The report's query rules, in process: `--by` names, `--since/--until` bounds at their edges, grouping.

These are the rules a bill depends on (an event at midnight belongs to exactly one day, an absent
field of an older file is null, a group adds up exactly), so each is pinned here at its boundary; the
command-line tests in test_report_by.py check that the outputs carry them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from cmdrdata_autopatch.report_query import (
    DIMENSIONS,
    Window,
    bursts,
    dimension_value,
    group_events,
    parse_bound,
    parse_dimensions,
)

from .report_helpers import wire


def at(moment: str, **kw: Any) -> dict[str, Any]:
    return wire("acme", "gpt-4o", 1, 1, timestamp=moment, **kw)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def test_dimensions_are_checked() -> None:
    assert parse_dimensions("customer,day") == ["customer", "day"]
    assert parse_dimensions(" Model , service_tier ") == ["model", "service_tier"]
    assert set(DIMENSIONS) >= {"customer", "model", "api", "day", "hour", "month", "service", "environment"}
    for bad, words in (
        ("customer,weekday", "unknown --by value 'weekday'"),
        ("customer,customer", "twice"),
        ("day,month", "one of hour, day, month"),
        (",", "at least one"),
    ):
        with pytest.raises(ValueError, match=words):
            parse_dimensions(bad)


def test_bounds_from_dates_months_and_timestamps() -> None:
    assert parse_bound("2026-11-30", end=False) == utc(2026, 11, 30)
    assert parse_bound("2026-11-30", end=True) == utc(2026, 12, 1)  # through the end of the day
    assert parse_bound("2026-11", end=False) == utc(2026, 11, 1)
    assert parse_bound("2026-12", end=True) == utc(2027, 1, 1)  # a month through its end, across a year
    assert parse_bound("2026-11-30T14:00:00Z", end=True) == utc(2026, 11, 30, 14)  # a time is as given
    assert parse_bound("2026-11-30T16:00:00+02:00", end=False) == utc(2026, 11, 30, 14)
    assert parse_bound("2026-11-30T14:00", end=False) == utc(2026, 11, 30, 14)  # no offset: UTC
    with pytest.raises(ValueError, match="not a date"):
        parse_bound("last tuesday", end=False)


def test_window_edges_are_half_open() -> None:
    events = [
        at("2026-11-29T23:59:59.999+00:00"),  # just before --since: out
        at("2026-11-30T00:00:00.000+00:00"),  # exactly --since: in
        at("2026-11-30T23:59:59.999Z"),  # last instant of the --until day: in
        at("2026-12-01T01:30:00+02:00"),  # 2026-11-30 23:30 UTC: in (offsets count as UTC)
        at("2026-12-01T00:00:00.000+00:00"),  # first instant after it: out
        at("not a time"),
        wire("acme", "gpt-4o", 1, 1),  # no timestamp at all
    ]
    window = Window(since=parse_bound("2026-11-30", end=False), until=parse_bound("2026-11-30", end=True))
    kept = window.select(events)
    assert [e["timestamp"] for e in kept] == [
        "2026-11-30T00:00:00.000+00:00",
        "2026-11-30T23:59:59.999Z",
        "2026-12-01T01:30:00+02:00",
    ]
    assert (window.outside, window.untimed) == (2, 2)

    until_a_time = Window(until=parse_bound("2026-11-30T00:00:00Z", end=True))
    assert [e["timestamp"] for e in until_a_time.select(events[:3])] == ["2026-11-29T23:59:59.999+00:00"]
    everything = Window()
    assert everything.select(events) == events and not everything.active


def test_dimension_values_and_absent_fields() -> None:
    old = at("2026-11-30T09:15:00Z")  # an older file: no service, environment or service_tier keys
    assert [dimension_value(old, d) for d in ("service", "environment", "service_tier")] == ["(none)"] * 3
    new = at("2026-11-30T09:15:00Z", service="billing-api", environment="prod", service_tier="flex")
    assert [dimension_value(new, d) for d in ("service", "environment", "service_tier")] == [
        "billing-api",
        "prod",
        "flex",
    ]
    assert dimension_value(new, "hour") == "2026-11-30 09:00"
    assert dimension_value(new, "day") == "2026-11-30"
    assert dimension_value(new, "month") == "2026-11"
    assert dimension_value(wire("acme", "m", 1, 1), "day") == "(no time)"
    nameless = {**wire(None, "m", 1, 1), "model": None, "api": 7}
    assert dimension_value(nameless, "customer") == "(none)"
    assert dimension_value(nameless, "model") == "(unknown)"
    assert dimension_value(nameless, "api") == "7"


def test_groups_add_up_and_costs_sum() -> None:
    events = [
        wire("acme", "gpt-4o", 10, 5, timestamp="2026-11-30T10:00:00Z"),
        wire("acme", "gpt-4o", 20, 5, timestamp="2026-11-29T10:00:00Z"),
        wire("acme", "mystery", 1, 1, timestamp="2026-11-30T11:00:00Z"),
        wire("globex", "gpt-4o", 100, 50, timestamp="2026-11-30T12:00:00Z", usage_source="estimated"),
    ]
    prices = {"gpt-4o": Decimal("0.25")}
    rows, total = group_events(events, ["customer", "day"], lambda e: prices.get(e["model"]))
    assert [row.key for row in rows] == [  # a time dimension: in time order, then by name
        ("acme", "2026-11-29"),
        ("acme", "2026-11-30"),
        ("globex", "2026-11-30"),
    ]
    acme_30 = rows[1]
    assert (acme_30.totals.calls, acme_30.totals.input_tokens, acme_30.cost, acme_30.unpriced) == (
        2,
        11,
        Decimal("0.25"),
        1,
    )
    assert rows[2].totals.estimated == 1
    assert (total.totals.calls, total.cost, total.unpriced) == (4, Decimal("0.75"), 1)

    by_customer, _ = group_events(events, ["customer"])  # no time: biggest first; no cost asked, none given
    assert [row.key for row in by_customer] == [("globex",), ("acme",)]
    assert all(row.cost is None and row.unpriced == 0 for row in by_customer)

    only_unknown, _ = group_events(events[2:3], ["model"], lambda e: None)
    assert (only_unknown[0].cost, only_unknown[0].unpriced) == (None, 1)


def test_bursts_tell_runs_apart() -> None:
    first_run = [at(f"2026-11-30T10:00:0{i}Z") for i in range(4)]
    second_run = [at(f"2026-11-30T10:05:0{i}Z") for i in range(4)]
    assert bursts(first_run) == 1
    assert bursts(first_run + second_run) == 2
    assert bursts([at("x"), wire("a", "m", 1, 1)]) == 0
    assert bursts([at("2026-11-30T10:00:00Z"), at("2026-11-30T10:00:29Z")]) == 1
    assert bursts([at("2026-11-30T10:00:00Z"), at("2026-11-30T10:00:30Z")]) == 2
