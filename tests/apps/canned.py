"""Canned OpenAI bodies in OpenAI's wire format: one copy for the tests, the test apps and the benchmarks.

Standard library only, and no import of the test package or of cmdrdata_autopatch: `tests/fake_openai.py`
imports it as `tests.apps.canned`, the subprocess apps beside it as `canned` (their directory is on
`sys.path`), and `benchmarks/_common.py` after putting this directory on `sys.path`.
"""

from __future__ import annotations

import json
from typing import Any

CHAT_USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 7,
    "total_tokens": 18,
    "prompt_tokens_details": {"cached_tokens": 3},
    "completion_tokens_details": {"reasoning_tokens": 2},
}
EMBEDDINGS_USAGE = {"prompt_tokens": 6, "total_tokens": 6}
RESPONSES_USAGE = {
    "input_tokens": 21,
    "output_tokens": 9,
    "total_tokens": 30,
    "input_tokens_details": {"cached_tokens": 4},
    "output_tokens_details": {"reasoning_tokens": 5},
}


def chat_completion(
    model: str = "gpt-4o-2024-08-06", usage: Any = CHAT_USAGE, content: str = "Hello!"
) -> dict:
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage,
    }


def chat_chunks(include_usage: bool, n: int = 5, model: str = "gpt-4o-2024-08-06") -> list[dict]:
    base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000000, "model": model}
    chunks = [
        {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        }
    ]
    for i in range(n):
        chunks.append(
            {**base, "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}]}
        )
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        for c in chunks:
            c["usage"] = None
        chunks.append({**base, "choices": [], "usage": CHAT_USAGE})
    return chunks


def completion_chunks(include_usage: bool, n: int = 3) -> list[dict]:
    base = {
        "id": "cmpl-s",
        "object": "text_completion",
        "created": 1700000000,
        "model": "gpt-3.5-turbo-instruct",
    }
    chunks = [
        {**base, "choices": [{"index": 0, "text": f"t{i}", "finish_reason": None, "logprobs": None}]}
        for i in range(n)
    ]
    if include_usage:
        chunks.append({**base, "choices": [], "usage": CHAT_USAGE})
    return chunks


def response_object(usage: Any = RESPONSES_USAGE) -> dict:
    return {
        "id": "resp_123",
        "object": "response",
        "created_at": 1700000000,
        "model": "gpt-4.1-2025-04-14",
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Hi there", "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


def response_events() -> list[dict]:
    created = {**response_object(usage=None), "status": "in_progress", "output": []}
    return [
        {"type": "response.created", "sequence_number": 0, "response": created},
        {
            "type": "response.output_item.added",
            "sequence_number": 1,
            "output_index": 0,
            "item": {
                "type": "message",
                "id": "msg_1",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
        },
        {
            "type": "response.content_part.added",
            "sequence_number": 2,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
        {
            "type": "response.output_text.delta",
            "sequence_number": 3,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "Hi there",
            "logprobs": [],
        },
        {"type": "response.completed", "sequence_number": 4, "response": response_object()},
    ]


def image_events() -> list[dict]:
    common = {"background": "opaque", "created_at": 1700000000, "output_format": "png", "quality": "low"}
    return [
        {
            "type": "image_generation.partial_image",
            "b64_json": "AAAA",
            "partial_image_index": 0,
            **common,
            "size": "1024x1024",
        },
        {
            "type": "image_generation.completed",
            "b64_json": "AAAA",
            **common,
            "size": "1024x1024",
            "usage": {
                "input_tokens": 12,
                "output_tokens": 272,
                "total_tokens": 284,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": 12},
            },
        },
    ]


def transcription_events() -> list[dict]:
    return [
        {"type": "transcript.text.delta", "delta": "hello "},
        {"type": "transcript.text.delta", "delta": "world"},
        {
            "type": "transcript.text.done",
            "text": "hello world",
            "usage": {"type": "tokens", "input_tokens": 40, "output_tokens": 5, "total_tokens": 45},
        },
    ]


def sse(events: list[dict], with_event_names: bool = False) -> bytes:
    out = []
    for ev in events:
        if with_event_names:
            out.append(f"event: {ev['type']}\n")
        out.append(f"data: {json.dumps(ev)}\n\n")
    out.append("data: [DONE]\n\n")
    return "".join(out).encode()


def embeddings_response(embedding: Any = (0.1, 0.2, 0.3), model: str = "text-embedding-3-small") -> dict:
    return {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": 0,
                "embedding": list(embedding) if isinstance(embedding, tuple) else embedding,
            }
        ],
        "model": model,
        "usage": dict(EMBEDDINGS_USAGE),
    }


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
