"""The wire form: exactly the documented fields, a fixed id, UTC timestamps, no secrets."""

from __future__ import annotations

import json
import re
import uuid

import pytest

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.events import WIRE_FIELDS, UsageEvent

from .endpoints import MESSAGES
from .fake_openai import FakeOpenAI

DESIGN_FIELDS = {
    "event_id",
    "timestamp",
    "customer_id",
    "provider",
    "model",
    "api",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "usage_details",
    "usage_source",
    "streaming",
    "request_id",
    "request_start_time",
    "request_end_time",
    "latency_ms",
    "time_to_first_token_ms",
    "error_occurred",
    "error_type",
    "error_code",
    "error_message",
    "metadata",
    "sdk",
}


# DESIGN.md section 4, second release: present on every event, null when they do not apply
SECOND_RELEASE_FIELDS = {"service_tier", "source_id", "service", "environment"}


def test_wire_has_the_design_fields_plus_units_and_http_status(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    fake.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    wire = memory.wire()[0]
    assert set(wire) == DESIGN_FIELDS | SECOND_RELEASE_FIELDS | {"units", "http_status"}
    assert list(wire) == list(WIRE_FIELDS)
    assert uuid.UUID(wire["event_id"]).version == 4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", wire["timestamp"])
    assert wire["sdk"]["name"] == "cmdrdata-autopatch" and wire["sdk"]["openai_version"]
    assert wire["source_id"] is None and wire["service"] is None and wire["environment"] is None


def test_event_id_and_bytes_are_fixed_at_creation() -> None:
    event = UsageEvent("chat.completions", 1_700_000_000.25, 0.5, customer_id="c")
    first_id = event.event_id
    body = event.to_json()
    assert event.event_id == first_id and event.to_json() is body
    assert json.loads(body)["event_id"] == first_id
    assert json.loads(body)["timestamp"] == "2023-11-14T22:13:20.250+00:00"
    assert json.loads(body)["latency_ms"] == 500.0
    event.input_tokens = 99  # set after serialization: the bytes already sent stay the bytes sent
    assert event.to_json() is body and json.loads(event.to_json())["input_tokens"] == 0


def test_timestamp_is_utc_whatever_the_local_zone(monkeypatch: object) -> None:
    import os
    import time

    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    try:
        stamp = UsageEvent("embeddings", 0.0, 0.0).to_wire()["timestamp"]
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()
    assert stamp == "1970-01-01T00:00:00.000+00:00"


def test_secrets_never_reach_the_event() -> None:
    event = UsageEvent("chat.completions", 0.0, 0.0)
    event.set_error(
        RuntimeError("Incorrect API key provided: sk-proj-AbCdEf0123456789. Bearer tk-live-99887766")
    )
    text = event.to_json().decode()
    assert "AbCdEf0123456789" not in text and "99887766" not in text
    assert "[REDACTED]" in text


def test_to_json_is_strict_json() -> None:
    event = UsageEvent("chat.completions", 0.0, float("nan"))  # a NaN latency cannot be sent as JSON
    with pytest.raises(ValueError):
        event.to_json()


def test_unset_slots_read_as_wire_defaults_and_unknown_attributes_fail() -> None:
    event = UsageEvent("embeddings", 0.0, 0.0)
    assert (event.input_tokens, event.usage_source, event.error_occurred, event.service_tier) == (
        0,
        "none",
        False,
        None,
    )
    with pytest.raises(AttributeError):
        event.raw_result = object()  # type: ignore[attr-defined]  # no references to responses
