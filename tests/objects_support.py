"""What the server-side object tests share (`test_objects.py`, `test_objects_later.py`, and the child
processes they start): canned object bodies, the mock-transport answer that serves them, the sync/async
runner, the derived event id, and the two-process runner that proves "billed once whichever process sees
the object terminal first".

One copy each: the two test modules used to carry their own runner, `run` and derived-id helper.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

from cmdrdata_autopatch.derived import derived_event_id

from .apps.canned import response_object, sse
from .fake_openai import OPENAI_VERSION, FakeOpenAI
from .support import REPO, child_env

JSON = {"content-type": "application/json", "x-request-id": "req_obj"}
SSE = {"content-type": "text/event-stream", "x-request-id": "req_obj_stream"}

HAS_BATCHES = OPENAI_VERSION >= (1, 18, 0)
HAS_RUN_USAGE = OPENAI_VERSION >= (1, 9, 0)
HAS_BACKGROUND = OPENAI_VERSION >= (1, 80, 0)
HAS_RETRIEVE_STREAM = OPENAI_VERSION >= (1, 82, 0)

BG_ID = "resp_bg_1"
BG_USAGE = {
    "input_tokens": 1000,
    "input_tokens_details": {"cached_tokens": 200},
    "output_tokens": 20000,
    "output_tokens_details": {"reasoning_tokens": 5000},
    "total_tokens": 21000,
}
BATCH_USAGE = {
    "input_tokens": 3000,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 700,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 3700,
}
RUN_USAGE = {"prompt_tokens": 400, "completion_tokens": 60, "total_tokens": 460}


def background_response(status: str, usage: Any = None, rid: str = BG_ID) -> dict[str, Any]:
    """A `background=True` response in `status`; only a completed one carries output."""
    body = response_object(usage=usage)
    body.update(id=rid, status=status, background=True, service_tier="flex")
    if status != "completed":
        body["output"] = []
    return body


def batch(status: str, usage: Any = None, bid: str = "batch_1", metadata: Any = None) -> dict[str, Any]:
    """A batch in `status`; `usage=None` leaves the field out, as releases older than it did."""
    body: dict[str, Any] = {
        "id": bid,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-in",
        "completion_window": "24h",
        "status": status,
        "created_at": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "request_counts": {"completed": 10, "failed": 0, "total": 10},
        "metadata": metadata,
    }
    if usage is not None:
        body["usage"] = usage
    return body


def run_object(status: str, usage: Any = None) -> dict[str, Any]:
    """An assistants run in `status`; the API sets `usage` only once the run is terminal."""
    return {
        "id": "run_1",
        "object": "thread.run",
        "created_at": 1700000000,
        "assistant_id": "asst_1",
        "thread_id": "thread_1",
        "status": status,
        "model": "gpt-4o-2024-08-06",
        "instructions": "",
        "tools": [],
        "file_ids": [],
        "metadata": {},
        "usage": usage,
        "parallel_tool_calls": True,
    }


def reply(payload: Any, stream: bool = False) -> Callable[..., Any]:
    """A `FakeOpenAI` override that answers every request with `payload` (as JSON, or as named SSE events)."""

    def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        if stream:
            return 200, SSE, sse(payload, with_event_names=True)
        return 200, JSON, json.dumps(payload).encode()

    return answer


def terminal_events(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The created/completed event pair of a response stream that ends with `body`."""
    created = {**body, "status": "in_progress", "output": [], "usage": None}
    return [
        {"type": "response.created", "sequence_number": 5, "response": created},
        {"type": "response.completed", "sequence_number": 6, "response": body},
    ]


def run(use_async: bool, fake: FakeOpenAI, calls: Callable[[Any], Any]) -> Any:
    """Run `calls(client)` (a coroutine function for async) on a sync or async client."""
    if not use_async:
        return calls(fake.client())
    return asyncio.run(calls(fake.async_client()))


def derived(api: str, source: str, part: Any = None) -> str:
    """The event id an object's usage must carry in every process that bills it."""
    return str(derived_event_id("openai", api, source, part))


def events_of_two_processes(code: str, tmp_path: Path) -> list[list[dict[str, Any]]]:
    """Run `code` in two fresh Pythons, one after the other, each exporting to its own JSONL file.

    The child reads `sys.argv[1]` (its JSONL path) and `sys.argv[2]` (its index, "0" or "1"); nothing is
    shared between them but the fake server's canned answers, as with two hosts polling one object.
    """
    seen = []
    for n in range(2):
        out = tmp_path / f"p{n}.jsonl"
        subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), str(out), str(n)],
            check=True,
            env=child_env(),
            cwd=REPO,
            timeout=120,
        )
        seen.append([json.loads(line) for line in out.read_text().splitlines() if line.strip()])
    return seen
