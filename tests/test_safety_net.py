"""Issue 15, defects 4-5: the safety net below the resource methods, with the real SDK.

Requests that never pass through a resource wrapper (the client's own `post`, methods and raw accessors
taken before `patch()`) are billed once, under the api the table gives their path; requests a resource
wrapper observes are not billed again; requests to paths the table does not name are not billed at all.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch import patching

from .endpoints import MESSAGES
from .fake_openai import OPENAI_VERSION, FakeOpenAI

CHAT_BODY = {"model": "gpt-4o", "messages": MESSAGES}


def test_client_post_is_billed_once_with_the_customer_from_context(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    client = fake.client()
    with cmdrdata.customer("litellm-co", plan="pro"):
        completion = client.post("/chat/completions", cast_to=ChatCompletion, body=CHAT_BODY)
    assert isinstance(completion, ChatCompletion) and completion.usage.total_tokens == 18
    [event] = memory.wire()
    assert (event["api"], event["customer_id"], event["metadata"]) == (
        "chat.completions",
        "litellm-co",
        {"plan": "pro"},
    )
    assert (event["input_tokens"], event["output_tokens"], event["usage_source"]) == (11, 7, "reported")
    assert (event["model"], event["provider"], event["streaming"]) == ("gpt-4o-2024-08-06", "openai", False)
    assert "stream_options" not in fake.requests[-1].json()  # the net observes; it never changes a request


def test_client_post_stream_is_billed_once(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.client()
    stream = client.post(
        "/chat/completions",
        cast_to=ChatCompletion,
        body={**CHAT_BODY, "stream": True},
        stream=True,
        stream_cls=openai.Stream[ChatCompletionChunk],
    )
    assert isinstance(stream, openai.Stream)
    chunks = list(stream)
    assert len(chunks) == 7
    [event] = memory.wire()
    assert (event["api"], event["streaming"], event["usage_source"]) == (
        "chat.completions",
        True,
        "estimated",
    )
    assert (event["input_tokens"], event["output_tokens"]) == (7, 5)
    assert event["request_id"] == "req_stream_123"


def test_client_post_embeddings_and_async(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    body = {"model": "text-embedding-3-small", "input": "hello"}
    fake.client().post("/embeddings", cast_to=CreateEmbeddingResponse, body=body)

    async def main() -> Any:
        with cmdrdata.customer("async-net"):
            return await fake.async_client().post("/embeddings", cast_to=CreateEmbeddingResponse, body=body)

    assert asyncio.run(main()).usage.prompt_tokens == 6
    events = memory.wire()
    assert [(e["api"], e["input_tokens"], e["customer_id"]) for e in events] == [
        ("embeddings", 6, None),
        ("embeddings", 6, "async-net"),
    ]


def test_async_client_post_stream(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    async def main() -> int:
        stream = await fake.async_client().post(
            "/chat/completions",
            cast_to=ChatCompletion,
            body={**CHAT_BODY, "stream": True},
            stream=True,
            stream_cls=openai.AsyncStream[ChatCompletionChunk],
        )
        return len([chunk async for chunk in stream])

    assert asyncio.run(main()) == 7
    [event] = memory.wire()
    assert (event["api"], event["streaming"], event["output_tokens"]) == ("chat.completions", True, 5)


def test_failed_low_level_call_is_recorded_and_reraised(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    fake.overrides["/chat/completions"] = (
        429,
        {"error": {"message": "slow down", "code": "rate_limit_exceeded"}},
    )
    with pytest.raises(openai.RateLimitError):
        fake.client().post("/chat/completions", cast_to=ChatCompletion, body=CHAT_BODY)
    [event] = memory.wire()
    assert (event["api"], event["error_occurred"], event["http_status"]) == ("chat.completions", True, 429)


def test_unbilled_paths_and_methods_are_not_billed(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.client()
    with pytest.raises(openai.NotFoundError):
        client.models.list()  # a GET
    with pytest.raises(openai.NotFoundError):
        client.post("/moderations", cast_to=ChatCompletion, body={"input": "x"})  # a path no row bills
    assert memory.events == []
    assert len(fake.requests) == 2


def test_resource_calls_are_not_billed_twice(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.client()
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, customer_id="kw-co")
    client.embeddings.create(model="text-embedding-3-small", input="x")
    list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert [e["customer_id"] for e in memory.wire()] == ["kw-co", None, None]


def test_track_usage_false_is_not_billed_by_the_net(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    fake.client().chat.completions.create(model="gpt-4o", messages=MESSAGES, track_usage=False)

    async def main() -> Any:
        return await fake.async_client().embeddings.create(
            model="text-embedding-3-small", input="x", track_usage=False
        )

    asyncio.run(main())
    assert memory.events == [] and len(fake.requests) == 2


def test_bound_create_saved_before_patch_is_billed(fake: FakeOpenAI) -> None:
    client = fake.client()
    create = client.chat.completions.create  # bound to the unwrapped method
    async_client = fake.async_client()
    async_create = async_client.embeddings.create
    exporter = cmdrdata.MemoryExporter()
    cmdrdata.patch(exporter=exporter)
    try:
        with cmdrdata.customer("early-bird"):
            create(model="gpt-4o", messages=MESSAGES)
            asyncio.run(async_create(model="text-embedding-3-small", input="x"))
    finally:
        cmdrdata.unpatch()
    assert [(e["api"], e["customer_id"], e["input_tokens"]) for e in exporter.wire()] == [
        ("chat.completions", "early-bird", 11),
        ("embeddings", "early-bird", 6),
    ]


def test_raw_accessors_cached_before_patch_are_billed(fake: FakeOpenAI) -> None:
    client = fake.client()  # on openai < 1.7 the raw accessors are built here, with today's create
    raw_create = client.chat.completions.with_raw_response.create  # cached by the SDK with today's create
    streaming = OPENAI_VERSION >= (1, 8, 0)  # with_streaming_response arrived in 1.8.0
    if streaming:
        client.chat.completions.with_streaming_response.create  # noqa: B018 - touched once before patch()
    exporter = cmdrdata.MemoryExporter()
    cmdrdata.patch(exporter=exporter)
    try:
        raw = raw_create(model="gpt-4o", messages=MESSAGES)
        assert exporter.events == []  # the body is the caller's to parse
        assert raw.parse().usage.total_tokens == 18
        if streaming:
            with client.chat.completions.with_streaming_response.create(
                model="gpt-4o", messages=MESSAGES
            ) as r:
                assert r.parse().usage.prompt_tokens == 11
        del raw
        gc.collect()
    finally:
        cmdrdata.unpatch()
    events = exporter.wire()
    assert [(e["api"], e["input_tokens"], e["request_id"]) for e in events] == [
        ("chat.completions", 11, "req_test_123"),
    ] * (2 if streaming else 1)


def test_the_net_is_installed_and_removed_with_the_rest() -> None:
    from openai import _base_client

    originals = {
        name: _base_client.__dict__[name].__dict__["request"] for name in ("SyncAPIClient", "AsyncAPIClient")
    }
    gc.collect()
    if len(patching._registry.owners):
        pytest.skip("an immortal drop-in client (openai 1.0.x lru_cache) keeps the wrappers installed")
    cmdrdata.patch(exporter="memory")
    try:
        for name, original in originals.items():
            wrapped = getattr(_base_client, name).__dict__["request"]
            assert wrapped is not original and wrapped.__wrapped__ is original
    finally:
        cmdrdata.unpatch()
    for name, original in originals.items():
        assert getattr(_base_client, name).__dict__["request"] is original


def test_dropin_client_post_goes_to_its_own_tracker_once(fake: FakeOpenAI) -> None:
    from cmdrdata_autopatch import MemoryExporter, TrackedOpenAI

    cmdrdata.patch(exporter="memory")
    global_events = cmdrdata.get_exporter()
    try:
        tracker = MemoryExporter()
        tracked = fake.client(cls=TrackedOpenAI, tracker=tracker)
        with cmdrdata.customer("dropin-co"):
            tracked.post("/chat/completions", cast_to=ChatCompletion, body=CHAT_BODY)
            fake.client().post("/chat/completions", cast_to=ChatCompletion, body=CHAT_BODY)
    finally:
        cmdrdata.unpatch()
    assert [(e.api, e.customer_id) for e in tracker.events] == [("chat.completions", "dropin-co")]
    assert [(e.api, e.customer_id) for e in global_events.events] == [("chat.completions", "dropin-co")]


def test_azure_low_level_post_is_billed(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    client = fake.client(
        openai.AzureOpenAI, azure_endpoint="https://myres.openai.azure.com", api_version="2024-10-21"
    )
    client.post("/deployments/my-deployment/chat/completions", cast_to=ChatCompletion, body=CHAT_BODY)
    [event] = memory.wire()
    assert (event["api"], event["provider"], event["input_tokens"]) == ("chat.completions", "azure", 11)
    assert fake.requests[-1].path.endswith("/deployments/my-deployment/chat/completions")


def test_async_stream_read_through_a_comprehension_is_billed_at_its_end(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    async def main() -> list[Any]:
        client = fake.async_client()
        # the proxy itself is dropped at once: only the comprehension holds its generator
        return [
            c
            async for c in await client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True
            )
        ]

    chunks = asyncio.run(main())
    gc.collect()
    [event] = memory.wire()
    assert len(chunks) == 7 and event["streaming"] is True
    if OPENAI_VERSION >= (1, 26, 0):
        assert (event["usage_source"], event["input_tokens"]) == ("reported", 11)
