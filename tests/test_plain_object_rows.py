"""`responses.compact` and `decisions.create` (issue 12): plain rows, one event each with the reported usage,
sync and async, through the real openai client and a mock transport."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import pytest

import cmdrdata_autopatch as cmdrdata

from .apps.canned import RESPONSES_USAGE
from .fake_openai import OPENAI_VERSION, FakeOpenAI

JSON = {"content-type": "application/json", "x-request-id": "req_plain_obj"}
DECISION_USAGE = {
    "input_tokens": 120,
    "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 0},
    "output_tokens": 9,
    "output_tokens_details": {"reasoning_tokens": 4},
    "total_tokens": 129,
}


def reply(payload: Any) -> Callable[..., Any]:
    return lambda *a: (200, JSON, json.dumps(payload).encode())


def call(use_async: bool, fake: FakeOpenAI, fn: Callable[[Any], Any]) -> Any:
    if not use_async:
        return fn(fake.client())

    async def main() -> Any:
        return await fn(fake.async_client())

    return asyncio.run(main())


@pytest.mark.skipif(OPENAI_VERSION < (2, 9, 0), reason="responses.compact needs openai>=2.9")
@pytest.mark.parametrize("use_async", [False, True])
def test_compact_is_one_event(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool) -> None:
    body = {
        "id": "cmp_1",
        "created_at": 1700000000,
        "object": "response.compaction",
        "output": [],
        "usage": RESPONSES_USAGE,
    }
    fake.overrides["/v1/responses/compact"] = reply(body)
    result = call(use_async, fake, lambda c: c.responses.compact(model="gpt-5", input="a long chat"))
    assert result.id == "cmp_1"
    (event,) = memory.wire()
    assert event["api"] == "responses.compact"
    assert event["model"] == "gpt-5"  # the compaction names none: the requested one
    assert event["input_tokens"] == RESPONSES_USAGE["input_tokens"]
    assert event["output_tokens"] == RESPONSES_USAGE["output_tokens"]
    assert event["usage_source"] == "reported"
    assert event["request_id"] == "req_plain_obj"


@pytest.mark.skipif(OPENAI_VERSION < (3, 26, 0), reason="decisions need openai>=3.26")
@pytest.mark.parametrize("use_async", [False, True])
def test_decision_is_one_event(fake: FakeOpenAI, memory: cmdrdata.MemoryExporter, use_async: bool) -> None:
    body = {"answers": [], "model": "gpt-5-mini-2025-08-07", "usage": DECISION_USAGE}
    fake.overrides["/v1/decisions"] = reply(body)
    questions = [{"type": "boolean", "question": "spam?"}]
    with cmdrdata.customer("decider"):
        call(
            use_async,
            fake,
            lambda c: c.decisions.create(model="gpt-5-mini", input="buy now", questions=questions),
        )
    (event,) = memory.wire()
    assert event["api"] == "decisions"
    assert event["customer_id"] == "decider"
    assert event["model"] == "gpt-5-mini-2025-08-07"
    assert (event["input_tokens"], event["output_tokens"], event["total_tokens"]) == (120, 9, 129)
    assert (event["cached_input_tokens"], event["reasoning_tokens"]) == (100, 4)
