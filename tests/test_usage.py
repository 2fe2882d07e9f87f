"""Usage extraction: every field-name variant, attribute or dict access, and garbage that must not hurt."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.usage import estimate, extract, normalize

from .endpoints import MESSAGES
from .fake_openai import FakeOpenAI, chat_completion


def test_chat_usage_as_dicts_and_as_attributes() -> None:
    as_dict = {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 6},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }
    as_attrs = SimpleNamespace(
        prompt_tokens=10,
        completion_tokens=4,
        total_tokens=14,
        prompt_tokens_details={"cached_tokens": 6},  # old SDKs hand newer fields back as dicts
        completion_tokens_details=SimpleNamespace(reasoning_tokens=3),
    )
    for usage in (as_dict, as_attrs):
        u = normalize(usage)
        assert u is not None
        assert (u.input_tokens, u.output_tokens, u.total_tokens) == (10, 4, 14)
        assert (u.cached_input_tokens, u.reasoning_tokens, u.source) == (6, 3, "reported")
        assert u.details is not None and u.details["prompt_tokens_details"] == {"cached_tokens": 6}


def test_responses_realtime_and_transcription_shapes() -> None:
    responses = normalize(
        {
            "input_tokens": 8,
            "output_tokens": 2,
            "total_tokens": 10,
            "input_tokens_details": {"cached_tokens": 5},
            "output_tokens_details": {"reasoning_tokens": 1},
        }
    )
    assert responses is not None and (responses.cached_input_tokens, responses.reasoning_tokens) == (5, 1)
    transcription_tokens = normalize(
        {
            "type": "tokens",
            "input_tokens": 30,
            "output_tokens": 12,
            "total_tokens": 42,
            "input_token_details": {"audio_tokens": 30, "cached_tokens": 2},
        }
    )
    assert transcription_tokens is not None and transcription_tokens.cached_input_tokens == 2
    seconds = normalize({"type": "duration", "seconds": 12.5})
    duration = normalize({"type": "duration", "duration": 3})  # the name in openai 1.91.0-1.94.0
    assert seconds is not None and seconds.units == {"audio_seconds": 12.5} and seconds.source == "reported"
    assert duration is not None and duration.units == {"audio_seconds": 3.0}


def test_total_is_derived_when_missing_and_nonsense_is_ignored() -> None:
    u = normalize({"prompt_tokens": 5, "completion_tokens": 2})
    assert u is not None and u.total_tokens == 7
    assert normalize({"prompt_tokens": "5", "completion_tokens": True}) is None
    assert normalize({"prompt_tokens": -1, "total_tokens": 10**20}) is None
    assert normalize(None) is None and normalize(17) is None and normalize("usage") is None


def test_estimates_are_flagged_and_documented_method() -> None:
    # the rules are chosen by the table row's usage_kind, never by API name
    chat = estimate("chat", {"messages": [{"role": "user", "content": "12345678"}]}, None, None)
    assert (chat.input_tokens, chat.source) == (2 + 4, "estimated")
    speech = estimate("speech", {"input": "x" * 41}, None, None)
    assert speech.units == {"characters": 41} and speech.input_tokens == 11
    tokens_given = estimate("embeddings", {"input": [[1, 2, 3], [4, 5]]}, None, None)
    assert tokens_given.input_tokens == 5  # token ids are counted exactly
    nothing = estimate("audio", {}, {"text": "hi"}, None)
    assert nothing.source == "none" and nothing.input_tokens == 0
    verbose = extract("audio", {}, {"text": "hi", "duration": 4.2})
    assert verbose.units == {"audio_seconds": 4.2} and verbose.source == "estimated"


def test_every_row_names_kinds_the_extractor_and_the_stream_capture_know() -> None:
    from cmdrdata_autopatch.targets import TARGETS

    for row in TARGETS:
        assert row.usage_kind in ("chat", "text", "embeddings", "speech", "images", "audio"), row
        assert row.stream_kind in ("chat", "text", "events"), row
        # the safety net needs the path of every billed request row (WebSocket sessions are no requests;
        # object rows bill what a read returns, never the request itself)
        assert row.delegates or row.kind in ("connect", "object") or row.path is not None, row
        if row.kind == "object":
            from cmdrdata_autopatch.object_billing import TERMINAL

            assert row.reads in TERMINAL and row.role in ("create", "read", "list", "manager", "block"), row


def test_usage_copy_is_independent_of_the_response() -> None:
    from cmdrdata_autopatch.usage import copy_usage, numbers

    inner = SimpleNamespace(cached_tokens=3)
    usage = SimpleNamespace(prompt_tokens=10, completion_tokens=2, prompt_tokens_details=inner)
    copied = copy_usage(usage)
    usage.prompt_tokens += 100
    inner.cached_tokens = 50
    u = numbers(copied)
    assert u is not None and (u.input_tokens, u.cached_input_tokens, u.total_tokens) == (10, 3, 12)


def _dump(model: Any) -> str:
    """The model as JSON text, without pydantic's warnings about the garbage we fed it on purpose."""
    if hasattr(model, "model_dump"):
        try:
            return json.dumps(model.model_dump(warnings=False), default=str)
        except TypeError:  # openai's pydantic-v1 shim has no `warnings`
            return json.dumps(model.model_dump(), default=str)
    return json.dumps(model.dict(), default=str)


usage_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
)
usage_payloads = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.integers(),
    st.lists(st.integers(), max_size=5),
    st.dictionaries(
        st.sampled_from(
            [
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
                "input_tokens",
                "output_tokens",
                "prompt_tokens_details",
                "completion_tokens_details",
                "type",
                "seconds",
                "duration",
                "extra",
            ]
        ),
        st.one_of(
            usage_values,
            st.dictionaries(st.sampled_from(["cached_tokens", "reasoning_tokens"]), usage_values),
        ),
        max_size=8,
    ),
    st.dictionaries(st.text(max_size=50), st.text(max_size=5000), max_size=30),  # oversized junk
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=usage_payloads)
def test_malformed_usage_never_hurts_the_caller(payload: Any) -> None:
    fake = FakeOpenAI()
    fake.overrides["/chat/completions"] = (200, chat_completion(usage=payload))
    client = fake.client()
    cmdrdata.unpatch()
    bare = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    exporter = cmdrdata.MemoryExporter()
    cmdrdata.patch(exporter=exporter)
    try:
        result = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    finally:
        cmdrdata.unpatch()
    assert type(result) is type(bare)
    assert _dump(result) == _dump(bare)
    events = exporter.wire()
    assert len(events) == 1
    event = events[0]
    json.dumps(event)  # always serializable
    for key in ("input_tokens", "output_tokens", "total_tokens", "cached_input_tokens", "reasoning_tokens"):
        assert isinstance(event[key], int) and event[key] >= 0
    assert event["usage_source"] in ("reported", "estimated", "none")
    if event["usage_source"] != "reported":
        assert event["input_tokens"] == 7  # the estimate, never a silent zero


@settings(max_examples=60, deadline=None)
@given(payload=usage_payloads)
def test_malformed_stream_usage_never_hurts_the_caller(payload: Any) -> None:
    from .fake_openai import chat_chunks, sse

    chunks = chat_chunks(include_usage=True)
    chunks[-1]["usage"] = payload
    body = sse(chunks)
    fake = FakeOpenAI()
    fake.overrides["/chat/completions"] = lambda *a: (200, {"content-type": "text/event-stream"}, body)
    exporter = cmdrdata.MemoryExporter()
    cmdrdata.patch(exporter=exporter, stream_usage="off")
    try:
        items = list(fake.client().chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    finally:
        cmdrdata.unpatch()
    assert len(items) == len(chunks)
    assert len(exporter.wire()) == 1
    json.dumps(exporter.wire()[0])


def test_usage_copy_plan_follows_the_class_not_the_first_instance() -> None:
    """The per-class copy plan is read from the declared fields: a details model absent from the first
    usage seen and present in the next is still copied (and so is a field the SDK does not know)."""
    from openai.types.completion_usage import CompletionUsage

    from cmdrdata_autopatch.usage import copy_usage, numbers

    first = CompletionUsage.model_validate({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})
    assert copy_usage(first) is not None
    second = CompletionUsage.model_validate(
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2},
            "future_breakdown": {"tool_tokens": [1, 2]},
        }
    )
    copied = copy_usage(second)
    assert copied is not None
    extra = getattr(second, "__pydantic_extra__", None) or {}  # old SDKs: the details are extras too
    for name, key in (
        ("prompt_tokens_details", "cached_tokens"),
        ("completion_tokens_details", "reasoning_tokens"),
    ):
        details = getattr(second, name, None) or extra[name]
        if isinstance(details, dict):
            details[key] = 99
        else:
            setattr(details, key, 99)
    (getattr(second, "future_breakdown", None) or extra["future_breakdown"])["tool_tokens"].append(3)
    second.prompt_tokens += 100
    u = numbers(copied)
    assert u is not None
    assert (u.input_tokens, u.output_tokens, u.cached_input_tokens, u.reasoning_tokens) == (10, 5, 4, 2)
    assert copied["future_breakdown"] == {"tool_tokens": [1, 2]}
