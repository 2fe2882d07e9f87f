"""Usage totals: calls, errors, estimates, tokens and distinct customers of a group of wire events.

One type for every place that adds events up: `cmdrdata-autopatch report` (one per customer, per model and
overall) and the jsonl exporter's exit line ("N OpenAI call(s), T tokens, C customer(s) recorded locally"),
so both count a call, an error and a token the same way. It reads wire events (section 4 of DESIGN.md: plain
dicts, or the JSON bytes the exporter writes) and tolerates anything else: a field of the wrong type counts
as zero, never as an exception, because the input is a file a crashed or older writer may have produced.
Stdlib only and no package imports, so the exporter's background thread can use it without pulling in a CLI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens", "total_tokens")


def _quantity(value: Any) -> float | None:
    """A billed quantity from `units` (images, audio seconds, web searches...): a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if value >= 0 and value != float("inf") else None  # NaN fails `>= 0`


def _count(value: Any) -> int:
    """A token count as written on the wire; anything that is not a plain int (None, bool, "12") is 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass
class UsageTotals:
    """Running totals of one group of events. `add` is O(1), so a long-lived exporter can keep one."""

    calls: int = 0
    errors: int = 0
    estimated: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    customers: set[str] = field(default_factory=set)
    # billable quantities that are not tokens, by `units` key (DESIGN.md section 4), summed
    units: dict[str, float] = field(default_factory=dict)

    def add(self, event: Mapping[str, Any]) -> None:
        """Count one wire event (a dict with the section-4 field names)."""
        self.calls += 1
        if event.get("error_occurred"):
            self.errors += 1
        if event.get("usage_source") == "estimated":
            self.estimated += 1
        self.input_tokens += _count(event.get("input_tokens"))
        self.output_tokens += _count(event.get("output_tokens"))
        self.cached_input_tokens += _count(event.get("cached_input_tokens"))
        self.reasoning_tokens += _count(event.get("reasoning_tokens"))
        self.total_tokens += _count(event.get("total_tokens"))
        customer = event.get("customer_id")
        if isinstance(customer, str):
            self.customers.add(customer)
        units = event.get("units")
        if isinstance(units, dict):
            for name, value in units.items():
                quantity = _quantity(value)
                if quantity is not None and isinstance(name, str):
                    self.units[name] = self.units.get(name, 0) + quantity

    def add_wire(self, body: bytes | str) -> bool:
        """Count one event in its serialized form (a jsonl line); False, counting nothing, if not one."""
        try:
            event = json.loads(body)
        except ValueError:
            return False
        if not isinstance(event, dict):
            return False
        self.add(event)
        return True

    def tokens(self) -> dict[str, int]:
        """The five token counts by wire field name."""
        return {name: getattr(self, name) for name in TOKEN_FIELDS}

    def as_json(self) -> dict[str, Any]:
        """The counts as `report --json` prints them (customers are a set: the caller says what it needs)."""
        out: dict[str, Any] = {"calls": self.calls, "errors": self.errors, "estimated": self.estimated}
        out.update(self.tokens())
        out["units"] = dict(sorted(self.units.items()))
        return out

    def units_text(self) -> str:
        """The units as one short cell: `images=2 web_searches=3` (empty when there are none)."""
        return " ".join(f"{name}={_number_text(value)}" for name, value in sorted(self.units.items()))


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"
