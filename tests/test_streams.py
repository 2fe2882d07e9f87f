"""Streams: the proxy keeps the SDK's types and protocol, and every way a stream ends bills it once."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import openai
import pytest

import cmdrdata_autopatch as cmdrdata

from .endpoints import MESSAGES
from .fake_openai import OPENAI_VERSION, FakeOpenAI

needs_stream_options = pytest.mark.skipif(
    OPENAI_VERSION < (1, 26, 0), reason="stream_options arrived in 1.26.0"
)
needs_context_manager = pytest.mark.skipif(
    OPENAI_VERSION < (1, 6, 0), reason="Stream.__enter__ arrived in 1.6.0"
)


def chat_stream(client: Any, **kwargs: Any) -> Any:
    return client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, **kwargs)


def test_proxy_is_a_stream_and_yields_the_same_items(fake: FakeOpenAI) -> None:
    bare = [c.model_dump() if hasattr(c, "model_dump") else c.dict() for c in chat_stream(fake.client())]
    cmdrdata.patch(exporter="memory", stream_usage="off")
    try:
        stream = chat_stream(fake.client())
        assert isinstance(stream, openai.Stream)
        assert stream.response.status_code == 200
        seen = [c.model_dump() if hasattr(c, "model_dump") else c.dict() for c in stream]
    finally:
        cmdrdata.unpatch()
    assert seen == bare


@needs_stream_options
def test_injected_usage_chunk_is_hidden_and_read(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    stream = chat_stream(fake.client(), customer_id="s1")
    chunks = list(stream)
    assert all(chunk.choices for chunk in chunks)  # user code doing chunk.choices[0] keeps working
    assert fake.requests[-1].json()["stream_options"] == {"include_usage": True}
    event = memory.wire()[0]
    assert event["streaming"] is True and event["usage_source"] == "reported"
    assert (event["input_tokens"], event["output_tokens"], event["cached_input_tokens"]) == (11, 7, 3)
    assert event["customer_id"] == "s1"
    assert event["time_to_first_token_ms"] is not None and event["time_to_first_token_ms"] >= 0
    assert event["request_id"] == "req_stream_123"


@needs_stream_options
def test_callers_own_stream_options_are_respected(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    chunks = list(chat_stream(fake.client(), stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 18  # theirs: they see it
    assert memory.wire()[0]["usage_source"] == "reported"
    list(chat_stream(fake.client(), stream_options={"include_usage": False}))
    assert fake.requests[-1].json()["stream_options"] == {"include_usage": False}
    assert memory.wire()[1]["usage_source"] == "estimated"


def test_stream_without_usage_is_estimated_not_zero(fake: FakeOpenAI) -> None:
    exporter = cmdrdata.MemoryExporter()
    cmdrdata.patch(exporter=exporter, stream_usage="off")
    try:
        list(chat_stream(fake.client()))
    finally:
        cmdrdata.unpatch()
    assert "stream_options" not in fake.requests[-1].json()
    event = exporter.wire()[0]
    assert event["usage_source"] == "estimated"
    # input: "Say hello" = 9 chars -> 3 tokens + 4 framing; output: the 5 content chunks (one token each;
    # the role chunk and the finish chunk carry none)
    assert (event["input_tokens"], event["output_tokens"]) == (7, 5)


@pytest.mark.parametrize("how", ["break", "close", "exit", "gc", "next_then_drop"])
def test_every_early_end_emits_exactly_once(
    how: str, fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    if how == "exit" and OPENAI_VERSION < (1, 6, 0):
        pytest.skip("no context manager before 1.6.0")
    if how == "close" and OPENAI_VERSION < (1, 6, 0):
        pytest.skip("no close() before 1.6.0")
    client = fake.client()
    stream = chat_stream(client)
    if how == "break":
        for _ in stream:
            break
        # leaving a loop is not the end of a stream (it may be read on, as litellm does on every chunk):
        # it is billed once it is closed or dropped
        assert memory.wire() == []
    elif how == "close":
        next(stream)
        stream.close()
    elif how == "exit":
        with stream as s:
            assert s is stream
            next(s)
    elif how == "gc":
        next(stream)
    elif how == "next_then_drop":
        next(stream)
        next(stream)
    if how in ("break", "gc", "next_then_drop"):
        del stream
        gc.collect()
    events = memory.wire()
    assert len(events) == 1, (how, events)
    assert events[0]["streaming"] is True
    assert events[0]["usage_source"] == "estimated"
    assert events[0]["input_tokens"] > 0
    # role chunk, then "word0 " (and "word1 " for next_then_drop): the content seen is what is billed
    assert events[0]["output_tokens"] == (1 if how == "next_then_drop" else 0)


def test_exhausted_then_closed_still_one_event(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    stream = chat_stream(fake.client())
    list(stream)
    if OPENAI_VERSION >= (1, 6, 0):
        stream.close()
    del stream
    gc.collect()
    assert len(memory.events) == 1


@needs_context_manager
def test_with_binds_the_proxy(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    with chat_stream(fake.client()) as stream:
        assert type(stream).__name__ == "StreamProxy"
        items = [c for c in stream]
    assert items
    assert len(memory.events) == 1


def test_manual_next_protocol(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    stream = chat_stream(fake.client())
    items = []
    while True:
        try:
            items.append(next(stream))
        except StopIteration:
            break
    assert len(items) == 7
    assert len(memory.events) == 1


def test_error_mid_stream_is_recorded_and_reraised(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    def broken(method: str, path: str, headers: Any, body: bytes) -> Any:
        payload = (
            b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
            b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
            b'data: {"error": {"message": "server overloaded", "type": "server_error"}}\n\n'
        )
        return 200, {"content-type": "text/event-stream"}, payload

    fake.overrides["/chat/completions"] = broken
    stream = chat_stream(fake.client())
    with pytest.raises(openai.APIError, match=r"server overloaded|error ocurred during streaming"):
        for _ in stream:
            pass
    events = memory.wire()
    assert len(events) == 1
    assert events[0]["error_occurred"] is True and events[0]["error_type"] == "APIError"
    assert events[0]["time_to_first_token_ms"] is not None


@pytest.mark.skipif(OPENAI_VERSION < (1, 40, 0), reason=".stream() helper arrived in 1.40.0")
def test_stream_helper_is_billed_once(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.client()
    helper = (
        client.chat.completions.stream
        if OPENAI_VERSION >= (1, 92, 0)
        else client.beta.chat.completions.stream
    )
    with helper(model="gpt-4o", messages=MESSAGES, customer_id="helper-co") as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].message.content.startswith("word0")
    events = memory.wire()
    assert len(events) == 1
    assert events[0]["customer_id"] == "helper-co"
    assert "x-cmdrdata-attribution" not in fake.requests[-1].headers  # the hand-down token stays with us
    assert "customer_id" not in fake.requests[-1].json()
    if OPENAI_VERSION >= (1, 26, 0):
        assert events[0]["usage_source"] == "reported"


@pytest.mark.skipif(OPENAI_VERSION < (1, 66, 0), reason="Responses API arrived in 1.66.0")
def test_responses_stream_and_helper(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.client()
    events_seen = [e.type for e in client.responses.create(model="gpt-4.1", input="hi", stream=True)]
    assert events_seen[-1] == "response.completed"
    assert "stream_options" not in fake.requests[-1].json()  # responses always report usage
    with client.responses.stream(model="gpt-4.1", input="hi", customer_id="resp-co") as stream:
        for _ in stream:
            pass
        assert stream.get_final_response().usage.total_tokens == 30
    events = memory.wire()
    assert len(events) == 2
    for event in events:
        assert (event["input_tokens"], event["output_tokens"], event["usage_source"]) == (21, 9, "reported")
        assert event["model"] == "gpt-4.1-2025-04-14" and event["streaming"] is True
    assert [e["customer_id"] for e in events] == [None, "resp-co"]
    assert "x-cmdrdata-attribution" not in fake.requests[-1].headers


@needs_stream_options
def test_legacy_completions_stream(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    items = list(fake.client().completions.create(model="gpt-3.5-turbo-instruct", prompt="hi", stream=True))
    assert all(item.choices for item in items)
    assert memory.wire()[0]["usage_source"] == "reported"


@needs_stream_options
def test_raw_stream_observed_through_parse(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    raw = fake.client().chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    )
    stream = raw.parse()
    assert isinstance(stream, openai.Stream)
    assert raw.parse() is stream
    assert all(c.choices for c in stream)
    assert len(memory.events) == 1 and memory.wire()[0]["usage_source"] == "reported"


# --- async -------------------------------------------------------------------------------------------


def test_async_stream_protocol_and_single_event(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.async_client()

    async def main() -> list[Any]:
        stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        assert isinstance(stream, openai.AsyncStream)
        return [c async for c in stream]

    items = asyncio.run(main())
    assert items and all(c.choices for c in items)
    assert len(memory.events) == 1
    assert memory.wire()[0]["streaming"] is True


@pytest.mark.skipif(OPENAI_VERSION < (1, 6, 0), reason="AsyncStream context manager arrived in 1.6.0")
@pytest.mark.parametrize("how", ["break", "aexit", "close", "anext"])
def test_async_early_end(how: str, fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.async_client()

    async def main() -> None:
        stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        if how == "break":
            async for _ in stream:
                break
            del stream
        elif how == "aexit":
            async with stream as s:
                assert s is stream
                await s.__anext__()
        elif how == "close":
            await stream.__anext__()
            await stream.close()
        elif how == "anext":
            while True:
                try:
                    await stream.__anext__()
                except StopAsyncIteration:
                    break
        await asyncio.sleep(0)

    asyncio.run(main())
    gc.collect()
    assert len(memory.events) == 1


@pytest.mark.skipif(OPENAI_VERSION < (1, 97, 0), reason="image streaming arrived in 1.97.0")
def test_image_generation_stream(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    stream = fake.client().images.generate(
        prompt="a cat", model="gpt-image-1", stream=True, customer_id="img"
    )
    assert isinstance(stream, openai.Stream)
    kinds = [event.type for event in stream]
    assert kinds == ["image_generation.partial_image", "image_generation.completed"]
    event = memory.wire()[0]
    assert (event["api"], event["streaming"], event["customer_id"]) == ("images", True, "img")
    assert (event["input_tokens"], event["output_tokens"], event["usage_source"]) == (12, 272, "reported")


@pytest.mark.skipif(OPENAI_VERSION < (1, 91, 0), reason="streamed transcription usage arrived in 1.91.0")
def test_transcription_stream(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    from .endpoints import AUDIO

    stream = fake.client().audio.transcriptions.create(file=AUDIO, model="gpt-4o-transcribe", stream=True)
    texts = [getattr(event, "delta", None) or event.text for event in stream]
    assert texts == ["hello ", "world", "hello world"]
    event = memory.wire()[0]
    assert (event["api"], event["streaming"]) == ("audio.transcriptions", True)
    assert (event["input_tokens"], event["output_tokens"], event["usage_source"]) == (40, 5, "reported")
