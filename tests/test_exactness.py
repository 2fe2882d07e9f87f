"""Issue 15, defects 1-3, with the real SDK: billed once, as OpenAI reported it, whatever the app does after.

1. a stream without reported usage is billed under the model its chunks name, not the one requested;
2. a stream whose iteration is left and re-entered (litellm's `for chunk in stream: return chunk` on every
   one of its own `__next__`) is billed once, when it ends, with the usage it reported;
3. what the app does to the response after the call (instructor adds running totals into
   `response.usage`) changes nothing that is billed, and the event keeps no response alive.
"""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from typing import Any

import openai
import pytest

import cmdrdata_autopatch as cmdrdata

from .endpoints import MESSAGES
from .fake_openai import CHAT_USAGE, OPENAI_VERSION, FakeOpenAI, chat_chunks, sse

needs_stream_options = pytest.mark.skipif(OPENAI_VERSION < (1, 26, 0), reason="stream_options: 1.26.0")

SERVED_MODEL = "gpt-4o-mini-2024-07-18"


def _serve_stream(fake: FakeOpenAI, chunks: list[dict[str, Any]]) -> None:
    body = sse(chunks)
    fake.overrides["/chat/completions"] = lambda *a: (200, {"content-type": "text/event-stream"}, body)


def test_stream_without_usage_is_billed_under_the_model_its_chunks_name(fake: FakeOpenAI) -> None:
    _serve_stream(fake, chat_chunks(include_usage=False, model=SERVED_MODEL))
    exporter = cmdrdata.MemoryExporter()
    cmdrdata.patch(exporter=exporter, stream_usage="off")
    try:
        list(fake.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    finally:
        cmdrdata.unpatch()
    [event] = exporter.wire()
    assert event["usage_source"] == "estimated"
    assert event["model"] == SERVED_MODEL


def test_azure_stream_is_billed_under_the_model_not_the_deployment(fake: FakeOpenAI) -> None:
    # Azure's first chunk names no model (it carries the prompt filter results): the next one does
    first = {"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": []}
    _serve_stream(fake, [first, *chat_chunks(include_usage=False, model=SERVED_MODEL)])
    client = fake.client(
        openai.AzureOpenAI, azure_endpoint="https://myres.openai.azure.com", api_version="2024-10-21"
    )
    exporter = cmdrdata.MemoryExporter()
    cmdrdata.patch(exporter=exporter)
    try:
        list(client.chat.completions.create(model="my-deployment", messages=MESSAGES, stream=True))
    finally:
        cmdrdata.unpatch()
    [event] = exporter.wire()
    assert (event["provider"], event["model"]) == ("azure", SERVED_MODEL)


class LitellmLikeStream:
    """litellm's stream wrapper: each of its own `__next__` starts a new `for` over the SDK stream."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __iter__(self) -> LitellmLikeStream:
        return self

    def __next__(self) -> Any:
        for chunk in self.stream:
            return chunk
        raise StopIteration


class AsyncLitellmLikeStream:
    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __aiter__(self) -> AsyncLitellmLikeStream:
        return self

    async def __anext__(self) -> Any:
        async for chunk in self.stream:
            return chunk
        raise StopAsyncIteration


@needs_stream_options
def test_reentered_iteration_bills_once_with_the_reported_usage(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    stream = fake.client().chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    seen = list(LitellmLikeStream(stream))
    assert seen[-1].usage.total_tokens == 18  # the app read the usage chunk...
    [event] = memory.wire()  # ...and so did we, once
    assert (event["usage_source"], event["input_tokens"], event["output_tokens"]) == ("reported", 11, 7)
    del stream
    gc.collect()
    assert len(memory.events) == 1


@needs_stream_options
def test_async_reentered_iteration_bills_once_with_the_reported_usage(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    async def main() -> list[Any]:
        stream = await fake.async_client().chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        return [chunk async for chunk in AsyncLitellmLikeStream(stream)]

    seen = asyncio.run(main())
    assert len(seen) == 8 and seen[-1].usage.total_tokens == 18
    gc.collect()
    [event] = memory.wire()
    assert (event["usage_source"], event["input_tokens"], event["output_tokens"]) == ("reported", 11, 7)


def test_changing_the_response_after_the_call_changes_nothing_billed(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    client = fake.client()
    for attempt in range(3):  # instructor's retries: running totals written into the last response
        response = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        response.usage.prompt_tokens += 100 * (attempt + 1)
        response.usage.total_tokens += 100 * (attempt + 1)
        details = response.usage.prompt_tokens_details
        if details is not None and not isinstance(details, dict):  # a dict on SDKs older than the field
            details.cached_tokens = 99
        response.model = "changed-by-the-app"
    events = memory.wire()
    assert [(e["input_tokens"], e["total_tokens"], e["cached_input_tokens"]) for e in events] == [
        (11, 18, 3)
    ] * 3
    assert {e["model"] for e in events} == {"gpt-4o-2024-08-06"}
    assert all(e["usage_details"]["prompt_tokens"] == 11 for e in events)


@needs_stream_options
def test_changing_the_usage_chunk_after_reading_it_changes_nothing_billed(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    stream = fake.client().chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        if chunk.usage is not None:
            chunk.usage.prompt_tokens += 1000
    [event] = memory.wire()
    assert event["input_tokens"] == CHAT_USAGE["prompt_tokens"]


@pytest.mark.parametrize("api", ["chat", "embeddings"])
def test_no_response_object_outlives_the_call(
    api: str, fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    client = fake.client()
    if api == "chat":
        response: Any = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    else:
        response = client.embeddings.create(model="text-embedding-3-small", input="hi")
    alive = weakref.ref(response)
    usage = weakref.ref(response.usage)
    del response
    gc.collect()
    assert alive() is None and usage() is None  # the recorded event holds copies, not the response
    [event] = memory.wire()
    assert event["input_tokens"] > 0 and event["usage_source"] == "reported"
    json.dumps(event)


def test_service_tier_is_billed_when_the_response_names_one(fake: FakeOpenAI) -> None:
    from .fake_openai import chat_completion

    body = {**chat_completion(), "service_tier": "flex"}
    fake.overrides["/chat/completions"] = (200, body)
    exporter = cmdrdata.MemoryExporter()
    cmdrdata.patch(exporter=exporter)
    try:
        fake.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
        fake.overrides.pop("/chat/completions")
        fake.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    finally:
        cmdrdata.unpatch()
    tiers = [e["service_tier"] for e in exporter.wire()]
    assert tiers == ["flex", None]
    assert all(e["source_id"] is None for e in exporter.wire())  # plain calls bill no server-side object
