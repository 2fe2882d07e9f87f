"""`UsageTotals`: the one way calls, errors, estimates, tokens and customers are added up.

`report` keeps one per customer, per model and overall; the jsonl exporter's exit line keeps one for the
process. The input is whatever a writer left in a file, so every field of a wrong type must count as zero.
"""

from __future__ import annotations

import json

from cmdrdata_autopatch.totals import TOKEN_FIELDS, UsageTotals


def event(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"event_id": "e", "customer_id": "acme", "usage_source": "reported"}
    base.update(fields)
    return base


def test_counts_calls_errors_estimates_tokens_and_customers() -> None:
    totals = UsageTotals()
    totals.add(
        event(input_tokens=10, output_tokens=5, total_tokens=15, cached_input_tokens=4, reasoning_tokens=2)
    )
    totals.add(event(customer_id="globex", input_tokens=1, total_tokens=1, usage_source="estimated"))
    totals.add(event(customer_id=None, error_occurred=True, usage_source="none"))
    totals.add(event(input_tokens=3, total_tokens=3))
    assert (totals.calls, totals.errors, totals.estimated) == (4, 1, 1)
    assert totals.tokens() == {
        "input_tokens": 14,
        "output_tokens": 5,
        "cached_input_tokens": 4,
        "reasoning_tokens": 2,
        "total_tokens": 19,
    }
    assert totals.customers == {"acme", "globex"}  # no customer is not a customer


def test_a_field_of_the_wrong_type_counts_as_zero() -> None:
    totals = UsageTotals()
    totals.add(
        event(input_tokens="12", output_tokens=None, total_tokens=True, reasoning_tokens=2.5, customer_id=7)
    )
    assert totals.calls == 1
    assert set(totals.tokens().values()) == {0}
    assert totals.customers == set()


def test_add_wire_reads_the_exporter_lines() -> None:
    totals = UsageTotals()
    line = json.dumps(event(total_tokens=22, input_tokens=20, output_tokens=2)).encode()
    assert totals.add_wire(line) is True
    assert totals.add_wire(line.decode()) is True
    for junk in (b'{"event_id": "torn', b"[1, 2]", b"null", b"\xff\xfe"):
        assert totals.add_wire(junk) is False, junk
    assert totals.calls == 2 and totals.total_tokens == 44 and totals.customers == {"acme"}


def test_as_json_is_the_report_row() -> None:
    totals = UsageTotals()
    totals.add(event(input_tokens=1, total_tokens=1))
    row = totals.as_json()
    assert list(row) == ["calls", "errors", "estimated", *TOKEN_FIELDS, "units"]
    assert row["calls"] == 1 and row["total_tokens"] == 1 and row["units"] == {}
    json.dumps(row)  # plain JSON: the set of customers is not in it


def test_units_are_summed_by_name_and_junk_is_ignored() -> None:
    totals = UsageTotals()
    totals.add(event(units={"images": 2, "web_searches": 1}))
    totals.add(event(units={"images": 1, "audio_seconds": 2.5, "bad": "3", "neg": -1, "flag": True}))
    totals.add(event(units={"nan": float("nan"), "inf": float("inf")}))
    totals.add(event(units=None))
    assert totals.units == {"images": 3, "web_searches": 1, "audio_seconds": 2.5}
    assert totals.as_json()["units"] == {"audio_seconds": 2.5, "images": 3, "web_searches": 1}
    assert totals.units_text() == "audio_seconds=2.50 images=3 web_searches=1"
