"""What `report` asks of the events: which ones (`--since/--until`), grouped how (`--by`), adding up to what.

Kept apart from the rendering (report.py, report_html.py) so the table, the CSV, the JSON and the page all
count the same rows the same way. Events are the JSONL wire form (DESIGN.md section 4); a field may be
absent in files written before it existed (`service_tier`, `service`, `environment`): absent counts as null.
Every value read here may be of the wrong type in a damaged file, so each read tolerates anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any, Callable, Optional

from .totals import UsageTotals

# the name a person types after --by -> the wire field it reads (time dimensions read `timestamp`)
FIELD_DIMENSIONS = {
    "customer": "customer_id",
    "model": "model",
    "api": "api",
    "service": "service",
    "environment": "environment",
    "service_tier": "service_tier",
    "provider": "provider",
}
TIME_DIMENSIONS = {"hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d", "month": "%Y-%m"}
DIMENSIONS = (*FIELD_DIMENSIONS, *TIME_DIMENSIONS)
# what a group is called when the field is null: "(none)" for who/where, "(unknown)" for what
_MISSING = {"model": "(unknown)", "api": "(unknown)", "provider": "(unknown)"}
NO_TIME = "(no time)"
# a pause this long between two calls starts a new burst: how the report tells separate runs apart
BURST_GAP = timedelta(seconds=30)

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MONTH_ONLY = re.compile(r"^\d{4}-\d{2}$")


def parse_timestamp(value: Any) -> datetime | None:
    """An event's ISO-8601 `timestamp` in UTC; None when it is not one (a naive time is taken as UTC)."""
    if not isinstance(value, str):
        return None
    return _parse_text(value)


@lru_cache(maxsize=1 << 17)  # every grouping of a report reads every event's time again: parse each once
def _parse_text(value: str) -> datetime | None:
    text = value.strip()
    if text.endswith(("Z", "z")):  # fromisoformat accepts "Z" only from Python 3.11
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def parse_dimensions(text: str) -> list[str]:
    """`customer,day` -> ["customer", "day"]; ValueError naming the bad part (argparse says it, exit 2)."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("--by needs at least one of: " + ", ".join(DIMENSIONS))
    for name in names:
        if name not in DIMENSIONS:
            raise ValueError(f"unknown --by value {name!r}; choose from: {', '.join(DIMENSIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"--by names a dimension twice: {text!r}")
    if sum(name in TIME_DIMENSIONS for name in names) > 1:
        raise ValueError("--by takes one of hour, day, month")
    return names


def parse_bound(text: str, *, end: bool) -> datetime:
    """A `--since` / `--until` value as the UTC instant the half-open range [since, until) uses.

    A date (`2026-11-30`) or month (`2026-11`) as `--until` means through its end, so `--since 2026-11-01
    --until 2026-11-30` is all of November and the next month's report starts where it stops. A timestamp
    is taken as given (UTC when it names no offset); as `--until` it is the first instant left out.
    """
    value = text.strip()
    if _MONTH_ONLY.match(value):
        start = datetime.strptime(value, "%Y-%m").replace(tzinfo=timezone.utc)
        if not end:
            return start
        return (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
    if _DATE_ONLY.match(value):
        start = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        return start + timedelta(days=1) if end else start
    moment = parse_timestamp(value)
    if moment is None:
        raise ValueError(f"not a date or ISO timestamp: {text!r} (e.g. 2026-11-30 or 2026-11-30T14:00:00Z)")
    return moment


@dataclass
class Window:
    """The `--since/--until` range, and what it left out (said in the report, never silently)."""

    since: datetime | None = None
    until: datetime | None = None
    outside: int = 0
    untimed: int = 0

    @property
    def active(self) -> bool:
        return self.since is not None or self.until is not None

    def select(self, events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The events inside the range; an event without a readable time is left out once a bound is set."""
        if not self.active:
            return list(events)
        kept = []
        for event in events:
            moment = parse_timestamp(event.get("timestamp"))
            if moment is None:
                self.untimed += 1
            elif (self.since is not None and moment < self.since) or (
                self.until is not None and moment >= self.until
            ):
                self.outside += 1
            else:
                kept.append(event)
        return kept


def dimension_value(event: Mapping[str, Any], name: str) -> str:
    """The group an event falls in along one dimension, as the text shown in every output."""
    pattern = TIME_DIMENSIONS.get(name)
    if pattern is not None:
        moment = parse_timestamp(event.get("timestamp"))
        return NO_TIME if moment is None else moment.strftime(pattern)
    value = event.get(FIELD_DIMENSIONS[name])
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return _MISSING.get(name, "(none)")


@dataclass
class Group:
    """One row of a grouped report: its key along each dimension, its totals and its estimated cost."""

    key: tuple[str, ...]
    totals: UsageTotals = field(default_factory=UsageTotals)
    cost: Optional[Decimal] = None
    unpriced: int = 0

    def add(self, event: Mapping[str, Any], cost: Decimal | None, priced: bool) -> None:
        self.totals.add(event)
        if cost is not None:
            self.cost = cost if self.cost is None else self.cost + cost
        if not priced:
            self.unpriced += 1


CostOf = Callable[[Mapping[str, Any]], Optional[Decimal]]


def group_events(
    events: Iterable[Mapping[str, Any]], by: Sequence[str], cost_of: CostOf | None = None
) -> tuple[list[Group], Group]:
    """The events grouped along `by`, in report order, and the total of them all.

    `cost_of` gives an event's estimated cost, None when it has no price (counted as `unpriced`); without
    it no cost is computed at all. Rows with a time dimension come in time order (a day-by-day sheet);
    others biggest first, by tokens then calls.
    """
    groups: dict[tuple[str, ...], Group] = {}
    total = Group(key=())
    for event in events:
        key = tuple(dimension_value(event, name) for name in by)
        cost = cost_of(event) if cost_of is not None else None
        priced = cost_of is None or cost is not None
        groups.setdefault(key, Group(key=key)).add(event, cost, priced)
        total.add(event, cost, priced)
    rows = list(groups.values())
    if any(name in TIME_DIMENSIONS for name in by):
        rows.sort(key=lambda g: g.key)
    else:
        rows.sort(key=lambda g: (-g.totals.total_tokens, -g.totals.calls, g.key))
    return rows, total


def bursts(events: Iterable[Mapping[str, Any]], gap: timedelta = BURST_GAP) -> int:
    """How many bursts of calls the events form, a pause of `gap` or more separating two.

    A jsonl file is appended to by every run, so running a demo twice shows its calls twice; counting
    bursts lets the report say so instead of leaving the reader to wonder why the numbers doubled.
    """
    moments = sorted(m for m in (parse_timestamp(e.get("timestamp")) for e in events) if m is not None)
    if not moments:
        return 0
    return 1 + sum(1 for a, b in zip(moments, moments[1:]) if b - a >= gap)
