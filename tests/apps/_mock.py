"""A canned OpenAI for the subprocess test apps: a real `openai` client over an in-memory transport.

Self-contained on purpose (no import of the test package or of cmdrdata_autopatch), so an app run under
`cmdrdata-run` or the `.pth` route shows exactly what a user's unmodified program would see. openai >= 3
uses `httpx2`, older releases `httpx`; nothing here touches the network.
"""

from __future__ import annotations

import json
from typing import Any

import openai

USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 7,
    "total_tokens": 18,
    "prompt_tokens_details": {"cached_tokens": 3},
    "completion_tokens_details": {"reasoning_tokens": 2},
}

if int(openai.__version__.split(".")[0]) >= 3:
    import httpx2 as httpx_mod
else:  # pragma: no cover - depends on the installed openai
    import httpx as httpx_mod  # type: ignore[no-redef]


def _chat(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-app",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": USAGE,
    }


def _handler(request: Any) -> Any:
    body = json.loads(request.content or b"{}")
    if request.url.path.endswith("/chat/completions"):
        return httpx_mod.Response(200, json=_chat(body.get("model", "gpt-4o-mini")))
    return httpx_mod.Response(404, json={"error": {"message": "not canned", "type": "invalid_request_error"}})


def client() -> openai.OpenAI:
    """An `openai.OpenAI` answered by the canned handler above."""
    return openai.OpenAI(
        api_key="sk-test-app", http_client=httpx_mod.Client(transport=httpx_mod.MockTransport(_handler))
    )
