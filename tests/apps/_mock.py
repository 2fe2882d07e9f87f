"""A canned OpenAI for the subprocess test apps: a real `openai` client over an in-memory transport.

Self-contained on purpose (no import of the test package or of cmdrdata_autopatch; the bodies come from
`canned.py` beside it, which imports only the standard library), so an app run under
`cmdrdata-run` or the `.pth` route shows exactly what a user's unmodified program would see. openai >= 3
uses `httpx2`, older releases `httpx`; nothing here touches the network.
"""

from __future__ import annotations

import json
from typing import Any

import canned  # beside this file: the one copy of the canned bodies (standard library only)
import openai

if int(openai.__version__.split(".")[0]) >= 3:
    import httpx2 as httpx_mod
else:  # pragma: no cover - depends on the installed openai
    import httpx as httpx_mod  # type: ignore[no-redef]


def _handler(request: Any) -> Any:
    body = json.loads(request.content or b"{}")
    if request.url.path.endswith("/chat/completions"):
        return httpx_mod.Response(
            200, json=canned.chat_completion(model=body.get("model", "gpt-4o-mini"), content="ok")
        )
    return httpx_mod.Response(404, json={"error": {"message": "not canned", "type": "invalid_request_error"}})


def client() -> openai.OpenAI:
    """An `openai.OpenAI` answered by the canned handler above."""
    return openai.OpenAI(
        api_key="sk-test-app", http_client=httpx_mod.Client(transport=httpx_mod.MockTransport(_handler))
    )
