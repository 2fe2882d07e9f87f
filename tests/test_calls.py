"""Every table row, sync and async, through the real openai client: one event each, with the right usage."""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any

import openai
import pytest
from openai.resources.chat.completions import Completions as ChatCompletions

import cmdrdata_autopatch as cmdrdata

from .endpoints import MESSAGES, available_endpoints
from .fake_openai import OPENAI_VERSION, FakeOpenAI

ENDPOINTS = available_endpoints()
# `metadata=` is OpenAI's own chat parameter (added in 1.4x): it must pass through untouched
OPENAI_HAS_METADATA = "metadata" in inspect.signature(ChatCompletions.create).parameters


def _check(event: dict[str, Any], expect: dict[str, Any], api: str) -> None:
    assert event["api"] == api
    for key, value in expect.items():
        assert event[key] == value, (key, event[key], value)
    assert event["error_occurred"] is False
    assert event["provider"] == "openai"
    assert event["latency_ms"] >= 0
    assert event["request_start_time"] <= event["request_end_time"]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
def test_sync_call_records_one_event(
    endpoint: Any, fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    client = fake.client()
    result = endpoint.call(client)
    assert result is not None
    events = memory.wire()
    assert len(events) == 1, events
    _check(events[0], endpoint.expect, endpoint.api)
    assert events[0]["customer_id"] is None


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
def test_async_call_records_one_event(
    endpoint: Any, fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    client = fake.async_client()

    async def main() -> Any:
        with cmdrdata.customer("async-co"):
            return await endpoint.call(client)

    result = asyncio.run(main())
    assert result is not None
    events = memory.wire()
    assert len(events) == 1, events
    _check(events[0], endpoint.expect, endpoint.api)
    assert events[0]["customer_id"] == "async-co"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
def test_unpatched_call_records_nothing_and_returns_the_same_type(endpoint: Any, fake: FakeOpenAI) -> None:
    bare = type(endpoint.call(fake.client()))
    exporter = cmdrdata.MemoryExporter()
    cmdrdata.patch(exporter=exporter)
    try:
        patched = type(endpoint.call(fake.client()))
    finally:
        cmdrdata.unpatch()
    assert patched is bare
    endpoint.call(fake.client())
    assert len(exporter.events) == 1


def test_our_keywords_never_reach_openai_and_metadata_does(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    client = fake.client()
    theirs = {"metadata": {"openai_side": "kept"}} if OPENAI_HAS_METADATA else {}
    client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        **theirs,
        customer_id="cust-1",
        cmdrdata_metadata={"feature": "summary"},
    )
    sent = fake.requests[-1].json()
    assert "customer_id" not in sent and "cmdrdata_metadata" not in sent and "track_usage" not in sent
    assert sent.get("metadata") == theirs.get("metadata")
    event = memory.wire()[0]
    assert event["customer_id"] == "cust-1"
    assert event["metadata"] == {"feature": "summary"}


def test_track_usage_false_skips_the_event_but_still_calls(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    client = fake.client()
    result = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, track_usage=False)
    assert result.usage.total_tokens == 18
    assert "track_usage" not in fake.requests[-1].json()
    assert memory.events == []


def test_customer_precedence(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.client()
    cmdrdata.patch(exporter=memory, customer_id="default-co")
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with cmdrdata.customer("context-co", plan="pro"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, customer_id="call-co")
    customers = [(e["customer_id"], e["metadata"]) for e in memory.wire()]
    assert customers == [("default-co", None), ("context-co", {"plan": "pro"}), ("call-co", {"plan": "pro"})]


def test_unattributed_calls_are_recorded_with_null_customer(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    fake.client().embeddings.create(model="text-embedding-3-small", input="x")
    assert memory.wire()[0]["customer_id"] is None


@pytest.mark.parametrize("bad", [123, "", "x" * 257, "bad\nid", None.__class__])
def test_bad_customer_id_fails_before_the_request(
    bad: Any, fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    client = fake.client()
    with pytest.raises(ValueError, match="customer_id"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, customer_id=bad)
    assert fake.requests == []
    assert memory.events == []


def test_bad_metadata_fails_before_the_request(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.client()
    with pytest.raises(ValueError, match="cmdrdata_metadata"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, cmdrdata_metadata={"x": object()})
    with pytest.raises(ValueError, match="cmdrdata_metadata"):
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, cmdrdata_metadata=["not", "a", "dict"]
        )
    assert fake.requests == []


def test_metadata_is_snapshotted_at_call_time(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    mine = {"tags": ["a"], "n": 1}
    fake.client().chat.completions.create(model="gpt-4o", messages=MESSAGES, cmdrdata_metadata=mine)
    mine["tags"].append("b")
    mine["n"] = 2
    assert memory.wire()[0]["metadata"] == {"tags": ["a"], "n": 1}


def test_api_error_is_reraised_untouched_and_recorded(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    fake.overrides["/chat/completions"] = (
        429,
        {
            "error": {
                "message": "Rate limit reached for sk-proj-abcdefgh12345678",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
        },
    )
    client = fake.client()
    bare_exc: Any = None
    cmdrdata.unpatch()
    try:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    except openai.RateLimitError as exc:
        bare_exc = exc
    cmdrdata.patch(exporter=memory)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, customer_id="c9")
    assert type(info.value) is type(bare_exc)
    assert str(info.value) == str(bare_exc)
    assert info.value.__traceback__ is not None
    event = memory.wire()[-1]
    assert event["error_occurred"] is True
    assert event["error_type"] == "RateLimitError"
    # every release: from `exc.code`, from the body (< 1.2), or from the read response (1.0.x keeps no body)
    assert event["error_code"] == "rate_limit_exceeded"
    assert event["http_status"] == 429
    assert event["customer_id"] == "c9"
    assert event["usage_source"] == "none" and event["input_tokens"] == 0
    if OPENAI_VERSION >= (1, 19, 0):
        assert event["request_id"] == "req_test_123"
    assert "abcdefgh12345678" not in json.dumps(event)


def test_same_exception_object_is_raised(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    """The very object the SDK raised reaches the caller (identity, not an equal copy)."""
    boom = RuntimeError("transport exploded")

    def explode(*args: Any) -> Any:
        raise boom

    fake.overrides["/embeddings"] = explode
    with pytest.raises(Exception) as info:
        fake.client().embeddings.create(model="text-embedding-3-small", input="x")
    chain = info.value
    seen = []
    while chain is not None:
        seen.append(chain)
        chain = chain.__cause__ or chain.__context__
    assert any(e is boom for e in seen)
    event = memory.wire()[-1]
    assert event["error_occurred"] is True and event["error_type"] == type(info.value).__name__


def test_async_error_recorded_and_reraised(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    fake.overrides["/chat/completions"] = (
        500,
        {"error": {"message": "boom", "type": "server_error", "code": None}},
    )
    client = fake.async_client()
    with pytest.raises(openai.InternalServerError):
        asyncio.run(client.chat.completions.create(model="gpt-4o", messages=MESSAGES))
    event = memory.wire()[-1]
    assert event["error_type"] == "InternalServerError" and event["http_status"] == 500


def test_raw_response_is_observed_through_parse(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.client()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, customer_id="raw-co"
    )
    assert memory.events == []  # nothing until the caller parses
    assert raw.headers.get("x-request-id") == "req_test_123"
    completion = raw.parse()
    assert completion.usage.total_tokens == 18
    assert raw.parse() is completion
    events = memory.wire()
    assert len(events) == 1
    assert events[0]["customer_id"] == "raw-co" and events[0]["input_tokens"] == 11
    assert events[0]["request_id"] == "req_test_123"


def test_raw_response_never_parsed_is_still_billed(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    import gc

    client = fake.client()
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="x")
    del raw
    gc.collect()
    events = memory.wire()
    assert len(events) == 1
    assert events[0]["input_tokens"] == 6  # the body had been read by the SDK: usage read from it


@pytest.mark.skipif(OPENAI_VERSION < (1, 8, 0), reason="with_streaming_response arrived in 1.8.0")
def test_streaming_response_not_read_until_caller_reads(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    client = fake.client()
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES
    ) as response:
        assert memory.events == []
        completion = response.parse()
    assert completion.usage.prompt_tokens == 11
    assert len(memory.wire()) == 1 and memory.wire()[0]["input_tokens"] == 11


def test_client_level_with_raw_response(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.client()
    raw = client.with_raw_response.embeddings.create(model="text-embedding-3-small", input="x")
    raw.parse()
    assert [e["api"] for e in memory.wire()] == ["embeddings"]


@pytest.mark.skipif(OPENAI_VERSION < (1, 40, 0), reason="parse arrived in 1.40.0")
def test_parse_is_billed_once(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    """beta parse calls the patched create on 1.40-1.49; either way the call is billed exactly once."""
    client = fake.client()
    if OPENAI_VERSION >= (1, 92, 0):
        client.chat.completions.parse(model="gpt-4o", messages=MESSAGES)
    else:
        client.beta.chat.completions.parse(model="gpt-4o", messages=MESSAGES)
    assert len(memory.events) == 1
    assert len(fake.requests) == 1


def test_azure_client_is_tracked(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.client(
        openai.AzureOpenAI,
        azure_endpoint="https://myres.openai.azure.com",
        api_version="2024-10-21",
    )
    client.chat.completions.create(model="my-deployment", messages=MESSAGES)
    event = memory.wire()[0]
    assert event["provider"] == "azure"
    assert event["input_tokens"] == 11


def test_loopback_server_end_to_end(fake: FakeOpenAI, loopback: Any, memory: cmdrdata.MemoryExporter) -> None:
    client = openai.OpenAI(api_key="sk-test", base_url=loopback.base_url, max_retries=0)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, customer_id="loop")
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    texts = [c.choices[0].delta.content for c in stream if c.choices]
    assert texts[1] == "word0 "
    events = memory.wire()
    assert [e["provider"] for e in events] == ["127.0.0.1", "127.0.0.1"]
    assert events[0]["input_tokens"] == 11 and events[0]["customer_id"] == "loop"
    # a non-OpenAI host gets no stream_options injected under the default "auto" policy
    assert "stream_options" not in fake.requests[-1].json()
    assert events[1]["usage_source"] == "estimated" and events[1]["streaming"] is True
