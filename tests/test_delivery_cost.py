"""The pieces that make delivering an event cheap keep its bytes and ids exactly what they were."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from cmdrdata_autopatch.events import WIRE_FIELDS, UsageEvent, assign_ids
from cmdrdata_autopatch.exporter import BackgroundExporter
from cmdrdata_autopatch.httptransport import HttpTransport
from tests.cmdrdata_server import FakeCmdrData, Reply
from tests.support import make_event


def test_assign_ids_draws_distinct_uuid4s_and_keeps_ids_already_read() -> None:
    events = [make_event(i) for i in range(50)]
    already = events[7].event_id
    other: Any = object()
    assign_ids([*events, other])
    ids = [event.event_id for event in events]
    assert ids[7] == already
    assert len(set(ids)) == 50
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and str(parsed) == text
    assert [event.event_id for event in events] == ids  # stable once drawn
    assign_ids(events)  # a second call changes nothing
    assert [event.event_id for event in events] == ids


def test_to_wire_keeps_the_field_order_and_to_json_the_old_bytes() -> None:
    event = make_event(3, metadata={"team": "ml", "n": 1.5, "tags": ["a", "b"]})
    event.model = "gpt-4o-mini"
    event.request_id = "req_1"
    event.error_type = "ünïcode"
    wire = event.to_wire()
    assert tuple(wire) == WIRE_FIELDS
    assert wire["output_tokens"] == 3 and wire["metadata"]["team"] == "ml"
    assert wire["error_type"] == "ünïcode" and wire["usage_source"] == "none"
    expected = json.dumps(wire, separators=(",", ":"), ensure_ascii=False, default=str, allow_nan=False)
    assert event.to_json() == expected.encode("utf-8")
    assert event.to_json() is event.to_json()  # serialized once: every retry sends the same bytes


def test_non_finite_numbers_still_refuse_to_serialize() -> None:
    event = UsageEvent("chat.completions", 0.0, float("nan"))
    with pytest.raises(ValueError):
        event.to_json()


def test_a_hanging_attempt_does_not_hold_up_the_others(exporters: list[Any]) -> None:
    """With a near backend few senders are wanted (Little's law on the measured attempt time); one that
    hangs must not make the events behind it wait for its read timeout."""
    with FakeCmdrData(latency=0.0) as server:
        transport = HttpTransport("tk-cost-0001", server.url, connect_timeout=1.0, read_timeout=30.0)
        exporter = BackgroundExporter(transport, flush_interval=0.02, register_exit=False)
        exporters.append(exporter)
        for i in range(40):  # a measured attempt time of about a millisecond
            exporter.record(make_event(i))
        assert exporter.flush(10) == (40, 0)
        server.script(Reply(hang=True))
        for i in range(30):
            exporter.record(make_event(100 + i))
        started = time.monotonic()
        assert server.wait_for_stored(40 + 29, timeout=10)
        assert time.monotonic() - started < 5  # far below the 30 s read timeout of the hanging one
        assert [r.outcome for r in server.received].count("hang") == 1
        server.release()  # the hanging attempt fails (connection closed) and is retried
        assert exporter.flush(10)[1] == 0
        assert len(server.stored) == 70 and all(n == 1 for n in server.stored.values())
