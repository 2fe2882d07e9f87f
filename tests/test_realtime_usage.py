"""The pure side of WebSocket billing (`realtime_usage`), the derived event ids and the session event's
wire form, without any socket: plain dicts (older SDKs and Live's nested events are dicts), SDK-like
objects, and garbage."""

from __future__ import annotations

import json
import math
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from cmdrdata_autopatch import realtime_usage as ru
from cmdrdata_autopatch.derived import NAMESPACE, SessionEvent, derived_event_id
from cmdrdata_autopatch.events import UsageEvent
from cmdrdata_autopatch.sessions import Attribution, SessionObserver

from .ws_server import REALTIME_USAGE, RESPONSES_USAGE, live_decision_event, resp_terminal, rt_response_done


def test_realtime_response_done_numbers_and_split() -> None:
    billing = ru.realtime_response(rt_response_done("resp_1", REALTIME_USAGE), "gpt-realtime")
    assert (billing.api, billing.source_id, billing.model) == ("realtime", "resp_1", "gpt-realtime")
    assert (billing.input_tokens, billing.output_tokens, billing.total_tokens) == (521, 20, 541)
    assert billing.cached_input_tokens == 128 and billing.usage_source == "reported"
    assert billing.usage_details == REALTIME_USAGE  # a copy, equal, not the same object
    assert billing.usage_details is not REALTIME_USAGE
    assert billing.error_type is None


def test_realtime_response_without_usage_is_not_reported() -> None:
    billing = ru.realtime_response(rt_response_done("resp_2", None, status="cancelled"), None)
    assert billing.usage_source == "none" and billing.total_tokens == 0 and billing.usage_details is None


def test_total_is_derived_when_absent_and_garbage_is_ignored() -> None:
    usage = {"input_tokens": 10, "output_tokens": True, "input_token_details": {"cached_tokens": -3}}
    billing = ru.realtime_response({"type": "response.done", "response": {"id": "r", "usage": usage}}, None)
    assert (billing.input_tokens, billing.output_tokens, billing.total_tokens) == (10, 0, 10)
    assert billing.cached_input_tokens == 0


def test_transcription_duration_and_tokens() -> None:
    event = {"item_id": "item_1", "content_index": 0, "usage": {"type": "duration", "seconds": 3.2}}
    billing = ru.realtime_transcription(event, "gpt-4o-transcribe")
    assert billing is not None and billing.units == {"audio_seconds": 3.2} and billing.part == "0"
    tokens = {"type": "tokens", "input_tokens": 5, "output_tokens": 2, "total_tokens": 7}
    billing = ru.realtime_transcription({"item_id": "item_2", "usage": tokens}, None)
    assert (
        billing is not None
        and (billing.input_tokens, billing.total_tokens) == (5, 7)
        and billing.units is None
    )
    assert ru.realtime_transcription({"item_id": "item_3"}, None) is None
    assert (
        ru.realtime_transcription({"item_id": "i", "usage": {"type": "duration", "seconds": math.nan}}, None)
        is None
    )


def test_session_info_ga_and_beta_shapes() -> None:
    ga = {
        "type": "session.created",
        "session": {
            "id": "s1",
            "model": "gpt-realtime",
            "audio": {"input": {"transcription": {"model": "whisper-1"}}},
        },
    }
    beta = {
        "type": "session.updated",
        "session": {
            "id": "s2",
            "model": "gpt-4o-realtime-preview",
            "input_audio_transcription": {"model": "gpt-4o-transcribe"},
        },
    }
    assert ru.realtime_session(ga) == ("s1", "gpt-realtime", "whisper-1")
    assert ru.realtime_session(beta) == ("s2", "gpt-4o-realtime-preview", "gpt-4o-transcribe")
    assert ru.realtime_session(SimpleNamespace(session=None)) == (None, None, None)


def test_responses_terminal_units() -> None:
    output = [
        {"type": "web_search_call"},
        {"type": "code_interpreter_call", "container_id": "c1"},
        {"type": "code_interpreter_call", "container_id": "c2"},
        {"type": "file_search_call"},
    ]
    event = resp_terminal("resp_9", web_searches=3, output=output)
    event["response"]["tool_usage"]["image_gen"].update(input_tokens=40, output_tokens=1056)
    billing = ru.responses_terminal(event)
    assert billing is not None
    assert billing.units == {
        "web_searches": 3,
        "file_searches": 1,
        "code_interpreter_sessions": 2,
        "image_gen_input_tokens": 40,
        "image_gen_output_tokens": 1056,
    }
    assert (billing.cached_input_tokens, billing.reasoning_tokens) == (512, 64)
    assert billing.service_tier == "default" and billing.model == "gpt-5.1"
    assert ru.responses_terminal({"type": "response.completed"}) is None


def test_live_usage_is_copied_and_billed_final_or_estimated() -> None:
    usage = ru.live_usage({"usage": {"seconds": 12.0, "active_seconds": 10}})
    assert usage == {"seconds": 12.0, "active_seconds": 10}
    final = ru.live_billing("sess_1", "gpt-live-1", usage, final=True)
    assert final.units == {"session_seconds": 12.0} and final.usage_source == "reported"
    assert ru.live_billing("sess_1", None, usage, final=False).usage_source == "estimated"
    assert ru.live_usage({"usage": {"seconds": "12"}}) is None


def test_live_decision() -> None:
    billing = ru.live_decision(live_decision_event("dlg_1"))
    assert billing is not None and billing.api == "decisions" and billing.source_id == "dlg_1"
    assert (billing.input_tokens, billing.output_tokens, billing.total_tokens) == (64, 8, 72)
    assert ru.live_decision({"event": {"decision": {"model": "m"}}}) is None


def test_plain_copies_models_and_drops_private_and_none() -> None:
    class Model:
        def __init__(self) -> None:
            self.a = 1
            self.b = None
            self._private = "x"
            self.nested = [SimpleNamespace(c=2.5, d=math.inf)]

    assert ru.plain(Model()) == {"a": 1, "nested": [{"c": 2.5}]}
    assert ru.plain(object()) is None


def test_derived_event_id_is_uuid5_of_the_documented_name() -> None:
    assert derived_event_id("openai", "realtime", "resp_1") == uuid.uuid5(NAMESPACE, "openai/realtime/resp_1")
    assert derived_event_id(None, "realtime.transcription", "item_1", "0") == uuid.uuid5(
        NAMESPACE, "openai/realtime.transcription/item_1/0"
    )
    assert derived_event_id("openai", "live", "s") != derived_event_id("azure", "live", "s")


def test_session_event_wire_has_derived_id_and_second_release_fields() -> None:
    event = SessionEvent("realtime", 1764556800.0, 0.25, "acme", None, True, "gpt-realtime")
    derived = derived_event_id("openai", "realtime", "resp_1")
    event.set_ids(derived, "resp_1", None)
    wire = json.loads(event.to_json())
    assert wire["event_id"] == str(derived) and wire["source_id"] == "resp_1"
    assert "service_tier" in wire and wire["service_tier"] is None
    assert isinstance(event, UsageEvent)
    random_one = SessionEvent("realtime", 0.0, 0.0)
    random_one.set_ids(None, None, None)
    assert uuid.UUID(random_one.event_id).version == 4


class _Boom:
    def record(self, event: Any) -> bool:
        raise RuntimeError("exporter down")


def test_a_failing_exporter_never_reaches_the_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    from cmdrdata_autopatch import sessions
    from cmdrdata_autopatch.diagnostics import internal_errors, reset_internal_errors

    reset_internal_errors()
    monkeypatch.setattr(sessions.RUNTIME, "recorder", _Boom())
    observer = SessionObserver(Attribution(None, "acme", None, None, True), "realtime")
    observer.observe(rt_response_done(f"resp_{uuid.uuid4().hex}", REALTIME_USAGE))
    assert sum(internal_errors().values()) == 1
    reset_internal_errors()


def test_observer_ignores_what_it_does_not_bill(monkeypatch: pytest.MonkeyPatch) -> None:
    from cmdrdata_autopatch import sessions

    recorded: list[Any] = []
    monkeypatch.setattr(sessions.RUNTIME, "recorder", SimpleNamespace(record=recorded.append))
    observer = SessionObserver(Attribution(None, None, None, None, True), "responses")
    for event in ({"type": "response.output_text.delta"}, {"no": "type"}, None, 42, {"type": 7}):
        observer.observe(event)
    observer.observe(resp_terminal(f"resp_{uuid.uuid4().hex}", usage=RESPONSES_USAGE))
    assert len(recorded) == 1
