"""A fake OpenAI API for the tests: canned responses in OpenAI's wire format, SSE streams included.

It is served two ways, both driving the real `openai` client: as an in-memory `MockTransport` (from
`httpx2` on openai >= 3, `httpx` before), and as a loopback HTTP server on 127.0.0.1 for end-to-end tests.
Every request is kept (`FakeOpenAI.requests`) so tests can assert what reached "OpenAI".
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import openai

from cmdrdata_autopatch.targets import parse_version

from .apps.canned import (  # noqa: F401 - re-exported: the tests import the bodies from here
    CHAT_USAGE,
    RESPONSES_USAGE,
    chat_chunks,
    chat_completion,
    completion_chunks,
    embeddings_response,
    image_events,
    response_events,
    response_object,
    sse,
    transcription_events,
)

OPENAI_VERSION = parse_version(openai.__version__)

if OPENAI_VERSION >= (3, 0, 0):
    import httpx2 as httpx_mod
else:
    import httpx as httpx_mod  # type: ignore[no-redef]

ROUTES = (  # longest first: "/images/edits" must not be taken for "/edits"
    "/chat/completions",
    "/images/generations",
    "/images/edits",
    "/images/variations",
    "/completions",
    "/edits",
    "/embeddings",
    "/responses",
    "/audio/transcriptions",
    "/audio/translations",
    "/audio/speech",
)


def _route(path: str) -> str:
    """The API route of a request path: OpenAI's `/v1/...` and Azure's `/openai/deployments/x/...` alike."""
    path = path.split("?", 1)[0]
    for route in ROUTES:
        if path.endswith(route):
            return route
    return path


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeOpenAI:
    """Routes by path; `overrides[path]` replaces the canned answer with (status, json) or a callable."""

    requests: list[Recorded] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    chat_usage: Any = field(default_factory=lambda: dict(CHAT_USAGE))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.requests.append(Recorded(method, path, headers, body))
        key = _route(path)
        json_headers = {"content-type": "application/json", "x-request-id": "req_test_123"}
        sse_headers = {"content-type": "text/event-stream", "x-request-id": "req_stream_123"}
        if key in self.overrides:
            override = self.overrides[key]
            if callable(override):
                return override(method, path, headers, body)  # type: ignore[no-any-return]
            status, payload = override
            return status, json_headers, json.dumps(payload).encode()
        req: dict[str, Any] = {}
        if headers.get("content-type", "").startswith("application/json") and body:
            req = json.loads(body)
        stream = bool(req.get("stream"))
        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
        if key == "/chat/completions":
            if stream:
                return 200, sse_headers, sse(chat_chunks(include_usage))
            return 200, json_headers, json.dumps(chat_completion(usage=self.chat_usage)).encode()
        if key == "/completions":
            if stream:
                return 200, sse_headers, sse(completion_chunks(include_usage))
            payload = {
                "id": "cmpl-1",
                "object": "text_completion",
                "created": 1700000000,
                "model": "gpt-3.5-turbo-instruct",
                "choices": [{"index": 0, "text": "done", "finish_reason": "stop", "logprobs": None}],
                "usage": CHAT_USAGE,
            }
            return 200, json_headers, json.dumps(payload).encode()
        if key == "/edits":
            payload = {
                "object": "edit",
                "created": 1700000000,
                "choices": [{"index": 0, "text": "fixed", "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
            }
            return 200, json_headers, json.dumps(payload).encode()
        if key == "/embeddings":
            return 200, json_headers, json.dumps(embeddings_response()).encode()
        if key == "/responses":
            if stream:
                return 200, sse_headers, sse(response_events(), with_event_names=True)
            return 200, json_headers, json.dumps(response_object()).encode()
        if key == "/images/generations" and stream:
            return 200, sse_headers, sse(image_events(), with_event_names=True)
        if key == "/audio/transcriptions" and b'name="stream"' in body and b"true" in body:
            return 200, sse_headers, sse(transcription_events(), with_event_names=True)
        if key.startswith("/images/"):
            payload = {
                "created": 1700000000,
                "data": [{"url": "https://example.invalid/a.png"}, {"url": "https://example.invalid/b.png"}],
                "usage": {
                    "input_tokens": 50,
                    "output_tokens": 4000,
                    "total_tokens": 4050,
                    "input_tokens_details": {"image_tokens": 40, "text_tokens": 10},
                },
            }
            if key == "/images/variations":
                payload.pop("usage")
            return 200, json_headers, json.dumps(payload).encode()
        if key == "/audio/transcriptions":
            payload = {"text": "hello world", "usage": {"type": "duration", "seconds": 7.5}}
            return 200, json_headers, json.dumps(payload).encode()
        if key == "/audio/translations":
            return 200, json_headers, json.dumps({"text": "hello world"}).encode()
        if key == "/audio/speech":
            return 200, {"content-type": "audio/mpeg", "x-request-id": "req_speech"}, b"ID3fakeaudio"
        return (
            404,
            json_headers,
            json.dumps({"error": {"message": f"no route {path}", "code": "not_found"}}).encode(),
        )

    # --- as an in-memory transport ---------------------------------------------------------------

    def handler(self, request: Any) -> Any:
        status, headers, body = self.answer(
            request.method,
            request.url.path,
            {k.lower(): v for k, v in request.headers.items()},
            request.read(),
        )
        return httpx_mod.Response(status, headers=headers, content=body)

    def client(self, cls: Callable[..., Any] = openai.OpenAI, **kwargs: Any) -> Any:
        kwargs.setdefault("api_key", "sk-test-0123456789abcdef")
        kwargs.setdefault("max_retries", 0)
        http_client = httpx_mod.Client(transport=httpx_mod.MockTransport(self.handler))
        return cls(http_client=http_client, **kwargs)

    def async_client(self, cls: Callable[..., Any] = openai.AsyncOpenAI, **kwargs: Any) -> Any:
        kwargs.setdefault("api_key", "sk-test-0123456789abcdef")
        kwargs.setdefault("max_retries", 0)
        http_client = httpx_mod.AsyncClient(transport=httpx_mod.MockTransport(self.handler))
        return cls(http_client=http_client, **kwargs)


class LoopbackOpenAI:
    """The same fake, served over real HTTP on 127.0.0.1 (SSE streamed as written)."""

    def __init__(self, fake: FakeOpenAI) -> None:
        self.fake = fake
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                status, headers, payload = outer.fake.answer(
                    "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
