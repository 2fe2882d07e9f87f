"""Hosted tools, service tiers, image-stream units, stream models and error request ids (issue 12, part 1),
through the real openai client and a mock transport, sync and async, stream and not."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import openai
import pytest

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.tool_units import chat_search_units, response_units

from .apps.canned import chat_chunks, chat_completion, image_events, response_object, sse
from .fake_openai import OPENAI_VERSION, FakeOpenAI

HAS_RESPONSES = OPENAI_VERSION >= (1, 66, 0)
JSON = {"content-type": "application/json", "x-request-id": "req_tools"}
SSE = {"content-type": "text/event-stream", "x-request-id": "req_tools_stream"}

TOOL_OUTPUT = [
    {
        "type": "web_search_call",
        "id": "ws_1",
        "status": "completed",
        "action": {"type": "search", "query": "q"},
    },
    {
        "type": "web_search_call",
        "id": "ws_2",
        "status": "completed",
        "action": {"type": "search", "query": "r"},
    },
    {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": ["a"]},
    {"type": "file_search_call", "id": "fs_2", "status": "completed", "queries": ["b"]},
    {
        "type": "code_interpreter_call",
        "id": "ci_1",
        "status": "completed",
        "container_id": "cntr_1",
        "code": "1",
        "outputs": [],
    },
    {
        "type": "code_interpreter_call",
        "id": "ci_2",
        "status": "completed",
        "container_id": "cntr_1",
        "code": "2",
        "outputs": [],
    },
]


def tool_response(tool_usage: bool = True) -> dict[str, Any]:
    body = response_object()
    body["output"] = TOOL_OUTPUT + body["output"]
    body["service_tier"] = "flex"
    if tool_usage:
        body["tool_usage"] = {
            "web_search": {"num_requests": 5},
            "image_gen": {
                "input_tokens": 40,
                "output_tokens": 1056,
                "total_tokens": 1096,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": 40},
            },
        }
    return body


def tool_events(body: dict[str, Any]) -> list[dict[str, Any]]:
    created = {**body, "status": "in_progress", "output": [], "usage": None}
    created.pop("tool_usage", None)
    return [
        {"type": "response.created", "sequence_number": 0, "response": created},
        {"type": "response.completed", "sequence_number": 1, "response": body},
    ]


def answer(payload: Any, stream: bool = False) -> Callable[..., Any]:
    def reply(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        if stream:
            return 200, SSE, sse(payload, with_event_names=True)
        return 200, JSON, json.dumps(payload).encode()

    return reply


def run(client_async: bool, fake: FakeOpenAI, call: Callable[[Any], Any]) -> Any:
    if not client_async:
        return call(fake.client())

    async def main() -> Any:
        result = await call(fake.async_client())
        if hasattr(result, "__aiter__"):
            return [item async for item in result]
        return result

    return asyncio.run(main())


EXPECTED_TOOLS = {
    "web_searches": 5,
    "file_searches": 2,
    "code_interpreter_sessions": 1,
    "image_gen_input_tokens": 40,
    "image_gen_output_tokens": 1056,
}


@pytest.mark.skipif(not HAS_RESPONSES, reason="responses API needs openai>=1.66")
@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("stream", [False, True])
def test_responses_tool_units_and_tier(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool, stream: bool
) -> None:
    body = tool_response()
    fake.overrides["/responses"] = answer(tool_events(body) if stream else body, stream)
    result = run(use_async, fake, lambda c: c.responses.create(model="gpt-4.1", input="hi", stream=stream))
    if stream and not use_async:
        list(result)
    (event,) = memory.wire()
    assert event["units"] == EXPECTED_TOOLS
    assert event["service_tier"] == "flex"
    assert event["input_tokens"] == body["usage"]["input_tokens"]
    assert event["streaming"] is stream


def test_without_tool_usage_web_search_items_are_counted() -> None:
    """Before openai 3.41 (or when the server omits `tool_usage`), each `web_search_call` is one search."""
    units = response_units(tool_response(tool_usage=False))
    assert units == {"web_searches": 2, "file_searches": 2, "code_interpreter_sessions": 1}
    assert response_units(response_object()) is None
    # tool_usage wins over the item count: discounted searches are not billed
    body = tool_response()
    body["tool_usage"]["web_search"]["num_requests"] = 1
    assert response_units(body)["web_searches"] == 1  # type: ignore[index]


@pytest.mark.skipif(not HAS_RESPONSES, reason="responses API needs openai>=1.66")
def test_responses_without_tool_usage_through_the_sdk(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    fake.overrides["/responses"] = answer(tool_response(tool_usage=False))
    fake.client().responses.create(model="gpt-4.1", input="hi")
    (event,) = memory.wire()
    assert event["units"] == {"web_searches": 2, "file_searches": 2, "code_interpreter_sessions": 1}


def test_chat_search_units_rule() -> None:
    assert chat_search_units({"web_search_options": {}}, "gpt-4o") == {"web_searches": 1}
    assert chat_search_units({}, "gpt-4o-mini-search-preview-2025-03-11") == {"web_searches": 1}
    assert chat_search_units({"model": "gpt-5-search-api"}, None) == {"web_searches": 1}
    assert chat_search_units({"web_search_options": None}, "gpt-4o") is None
    assert chat_search_units({}, "gpt-4o") is None


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("stream", [False, True])
def test_chat_web_search_fee_and_tier(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool, stream: bool
) -> None:
    model = "gpt-4o-search-preview-2025-03-11"
    if stream:
        chunks = chat_chunks(include_usage=True, model=model)
        for chunk in chunks:
            chunk["service_tier"] = "priority"
        fake.overrides["/chat/completions"] = lambda *a: (200, SSE, sse(chunks))
    else:
        body = {**chat_completion(model=model), "service_tier": "priority"}
        fake.overrides["/chat/completions"] = answer(body)
    messages = [{"role": "user", "content": "news?"}]
    result = run(
        use_async,
        fake,
        lambda c: c.chat.completions.create(model="gpt-4o-search-preview", messages=messages, stream=stream),
    )
    if stream and not use_async:
        list(result)
    (event,) = memory.wire()
    assert event["units"] == {"web_searches": 1}
    assert event["service_tier"] == "priority"
    assert event["model"] == model
    assert event["input_tokens"] > 0


def test_chat_without_search_has_no_units(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter) -> None:
    fake.client().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    (event,) = memory.wire()
    assert event["units"] is None


def test_chat_stream_without_usage_names_the_chunks_model(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter
) -> None:
    chunks = chat_chunks(include_usage=False, model="gpt-4o-2024-08-06")
    fake.overrides["/chat/completions"] = lambda *a: (200, SSE, sse(chunks))
    stream = fake.client().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True
    )
    list(stream)
    (event,) = memory.wire()
    assert event["model"] == "gpt-4o-2024-08-06"
    assert event["usage_source"] == "estimated"


HAS_IMAGE_STREAM = OPENAI_VERSION >= (1, 98, 0)


@pytest.mark.skipif(not HAS_IMAGE_STREAM, reason="image streams need a newer openai")
@pytest.mark.parametrize("use_async", [False, True])
def test_image_stream_counts_images(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    result = run(
        use_async,
        fake,
        lambda c: c.images.generate(model="gpt-image-1", prompt="a cat", stream=True, partial_images=1),
    )
    if not use_async:
        list(result)
    (event,) = memory.wire()
    assert event["units"] == {"images": 1}
    assert event["output_tokens"] == image_events()[-1]["usage"]["output_tokens"]


@pytest.mark.parametrize("use_async", [False, True])
def test_error_carries_the_request_id_from_the_response(
    fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool
) -> None:
    error = {"error": {"message": "bad", "type": "invalid_request_error", "code": "bad_thing"}}
    fake.overrides["/chat/completions"] = lambda *a: (
        400,
        {"content-type": "application/json", "x-request-id": "req_failed_42"},
        json.dumps(error).encode(),
    )
    with pytest.raises(openai.BadRequestError):
        run(use_async, fake, lambda c: c.chat.completions.create(model="gpt-4o", messages=[]))
    (event,) = memory.wire()
    assert event["error_occurred"] is True
    assert event["request_id"] == "req_failed_42"
