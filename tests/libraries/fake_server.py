"""A fake OpenAI HTTP API on 127.0.0.1 for the real-library tests. Standard library only.

Why a separate fake from `tests/fake_openai.py`: the libraries under test build their own `openai` clients
(and litellm its own HTTP paths), so the only place to stand between them and OpenAI is a real socket; and
the tests need to know, per HTTP call, exactly which usage numbers and model name the server sent, so the
billed events can be compared with them one for one. Every answer therefore carries numbers unique to its
call (`usage_numbers(n)` for the n-th billable call), names a dated snapshot model (`snapshot(model)`), and is
recorded (`FakeOpenAIServer.exchanges`) with the request's path, headers and body.

Answers can be scripted per route (`server.script("/chat/completions", Answer(...))`), one per request, in
order; without a script each route answers a plain success. Chat and responses streams are Server-Sent
Events written event by event, with the usage chunk only when the request asked for it, as OpenAI does.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

CHAT = "/chat/completions"
RESPONSES = "/responses"
EMBEDDINGS = "/embeddings"
BILLABLE_ROUTES = {CHAT: "chat.completions", RESPONSES: "responses", EMBEDDINGS: "embeddings"}
SNAPSHOT_SUFFIX = "-2099-01-01"
CREATED = 1_700_000_000


def snapshot(model: str) -> str:
    """The dated name an answer gives for a requested alias (as OpenAI answers gpt-4o-mini-2024-07-18)."""
    return model if model.endswith(SNAPSHOT_SUFFIX) else model + SNAPSHOT_SUFFIX


def usage_numbers(n: int) -> tuple[int, int, int, int]:
    """(input, output, cached input, reasoning) for the n-th billable answer: unique per call, so an event
    billed with another call's numbers, a running total, or an estimate cannot pass for the right one."""
    return 100 + 17 * n, 10 + 5 * n, 2 * n, n


@dataclass
class Answer:
    """One scripted answer. `content` is the assistant text; `tool_call` a (name, arguments) pair answered as
    a tool call (chat) or function call (responses); `status` >= 400 answers an OpenAI-style JSON error."""

    content: Optional[str] = None
    tool_call: Optional[tuple[str, str]] = None
    status: int = 200
    error_code: str = "invalid_request_error"


@dataclass
class Exchange:
    """One HTTP request as received, and the billable facts of the answer sent back."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    route: str
    status: int = 0
    stream: bool = False
    model: Optional[str] = None
    usage: Optional[dict[str, Any]] = None
    numbers: Optional[tuple[int, int, int, int]] = None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def route_of(path: str) -> str:
    path = path.split("?", 1)[0].rstrip("/")
    for route in (CHAT, RESPONSES, EMBEDDINGS):
        if path.endswith(route):
            return route
    return path


def _chat_usage(numbers: tuple[int, int, int, int]) -> dict[str, Any]:
    inp, out, cached, reasoning = numbers
    return {
        "prompt_tokens": inp,
        "completion_tokens": out,
        "total_tokens": inp + out,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
    }


def _responses_usage(numbers: tuple[int, int, int, int]) -> dict[str, Any]:
    inp, out, cached, reasoning = numbers
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "total_tokens": inp + out,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens_details": {"reasoning_tokens": reasoning},
    }


def _sse(events: list[tuple[Optional[str], Any]]) -> list[bytes]:
    out = []
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        out.append(f"{head}data: {json.dumps(data)}\n\n".encode())
    return out


class _Answers:
    """Builds answers in OpenAI's wire format. Holds no state but what the server gives it."""

    @staticmethod
    def chat(ex: Exchange, req: dict[str, Any], ans: Answer, n: int) -> tuple[dict[str, Any], bool]:
        message: dict[str, Any] = {"role": "assistant", "content": ans.content, "refusal": None}
        finish = "stop"
        if ans.tool_call is not None:
            name, args = ans.tool_call
            message["content"] = None
            message["tool_calls"] = [
                {"id": f"call_{n}", "type": "function", "function": {"name": name, "arguments": args}}
            ]
            finish = "tool_calls"
        elif ans.content is None:
            message["content"] = f"Answer number {n}."
        body = {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": CREATED + n,
            "model": ex.model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": ex.usage,
        }
        return body, False

    @staticmethod
    def chat_chunks(ex: Exchange, req: dict[str, Any], ans: Answer, n: int) -> list[bytes]:
        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
        base = {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": CREATED + n}
        base.update(model=ex.model, system_fingerprint="fp_fake")
        text = ans.content if ans.content is not None else f"Streamed answer number {n}."
        deltas: list[tuple[dict[str, Any], Optional[str]]] = [({"role": "assistant", "content": ""}, None)]
        deltas += [({"content": piece}, None) for piece in _pieces(text)]
        deltas.append(({}, "stop"))
        chunks: list[dict[str, Any]] = []
        for delta, finish in deltas:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            chunk = {**base, "choices": [choice]}
            if include_usage:
                chunk["usage"] = None
            chunks.append(chunk)
        if include_usage:
            chunks.append({**base, "choices": [], "usage": ex.usage})
        return [*_sse([(None, c) for c in chunks]), b"data: [DONE]\n\n"]

    @staticmethod
    def response(ex: Exchange, ans: Answer, n: int, usage: Any, status: str = "completed") -> dict[str, Any]:
        if ans.tool_call is not None:
            name, args = ans.tool_call
            item: dict[str, Any] = {
                "type": "function_call",
                "id": f"fc_{n}",
                "call_id": f"call_{n}",
                "name": name,
                "arguments": args,
                "status": "completed",
            }
        else:
            text = ans.content if ans.content is not None else f"Answer number {n}."
            item = {
                "type": "message",
                "id": f"msg_{n}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
            }
        return {
            "id": f"resp_{n}",
            "object": "response",
            "created_at": CREATED + n,
            "model": ex.model,
            "status": status,
            "output": [item] if status == "completed" else [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": usage,
        }

    @classmethod
    def response_events(cls, ex: Exchange, ans: Answer, n: int) -> list[bytes]:
        done = cls.response(ex, ans, n, ex.usage)
        item = done["output"][0]
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": cls.response(ex, ans, n, None, "in_progress")},
            {"type": "response.in_progress", "response": cls.response(ex, ans, n, None, "in_progress")},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "status": "in_progress"},
            },
        ]
        if item["type"] == "message":
            text = item["content"][0]["text"]
            ids = {"item_id": item["id"], "output_index": 0, "content_index": 0}
            empty = {"type": "output_text", "text": "", "annotations": []}
            events.append({"type": "response.content_part.added", **ids, "part": empty})
            for piece in _pieces(text):
                events.append({"type": "response.output_text.delta", **ids, "delta": piece, "logprobs": []})
            events.append({"type": "response.output_text.done", **ids, "text": text, "logprobs": []})
            events.append({"type": "response.content_part.done", **ids, "part": item["content"][0]})
        else:
            ids = {"item_id": item["id"], "output_index": 0}
            events.append(
                {"type": "response.function_call_arguments.delta", **ids, "delta": item["arguments"]}
            )
            events.append(
                {"type": "response.function_call_arguments.done", **ids, "arguments": item["arguments"]}
            )
        events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
        events.append({"type": "response.completed", "response": done})
        for seq, event in enumerate(events):
            event["sequence_number"] = seq
        return _sse([(e["type"], e) for e in events])

    @staticmethod
    def embeddings(ex: Exchange, req: dict[str, Any], n: int) -> dict[str, Any]:
        inputs = req.get("input")
        count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
        base64_wanted = req.get("encoding_format") == "base64"
        data = []
        for i in range(count):
            vector = [round(0.001 * (n + i + k), 6) for k in range(1, 5)]
            encoded: Any = vector
            if base64_wanted:
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        return {"object": "list", "data": data, "model": ex.model, "usage": ex.usage}


def _pieces(text: str) -> list[str]:
    """Split text into stream deltas of one word each (keeping the spaces)."""
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


@dataclass
class FakeOpenAIServer:
    """Serves OpenAI's chat, responses and embeddings routes on 127.0.0.1 (a free port) and records all."""

    exchanges: list[Exchange] = field(default_factory=list)
    _scripts: dict[str, deque[Answer]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _billable: int = 0
    server_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                outer._handle_safely(self)

            def do_GET(self) -> None:
                outer._handle_safely(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def script(self, route: str, *answers: Answer) -> None:
        """Queue answers for the next requests to `route`, one each, in order."""
        with self._lock:
            self._scripts.setdefault(route, deque()).extend(answers)

    def calls(self, route: Optional[str] = None) -> list[Exchange]:
        with self._lock:
            return [e for e in self.exchanges if route is None or e.route == route]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- serving ------------------------------------------------------------------------------------

    def _handle_safely(self, handler: BaseHTTPRequestHandler) -> None:
        """A bug in this fake must not pass for a client problem: it is kept and the tests fail on it."""
        try:
            self._handle(handler)
        except Exception as exc:
            self.server_errors.append(f"{handler.command} {handler.path}: {exc!r}")
            raise

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        ex = Exchange(handler.command, handler.path, headers, body, route_of(handler.path))
        try:
            req = json.loads(body) if body else {}
        except ValueError:
            req = {}
        with self._lock:
            self.exchanges.append(ex)
            queue = self._scripts.get(ex.route)
            ans = queue.popleft() if queue else Answer()
            n = 0
            if ex.route in BILLABLE_ROUTES and ans.status < 400:
                self._billable += 1
                n = self._billable
        if ex.route not in BILLABLE_ROUTES:
            self._send_json(handler, ex, 404, _error(f"Unknown route {ex.path}", "not_found"))
            return
        if ans.status >= 400:
            self._send_json(handler, ex, ans.status, _error(f"Scripted failure {ans.status}", ans.error_code))
            return
        ex.stream = bool(req.get("stream"))
        requested = str(req.get("model") or "unknown-model")
        ex.model = requested if ex.route == EMBEDDINGS else snapshot(requested)
        ex.numbers = usage_numbers(n)
        if ex.route == EMBEDDINGS:
            inp = ex.numbers[0]
            ex.numbers = (inp, 0, 0, 0)
            ex.usage = {"prompt_tokens": inp, "total_tokens": inp}
            self._send_json(handler, ex, 200, _Answers.embeddings(ex, req, n))
        elif ex.route == CHAT:
            include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
            ex.usage = _chat_usage(ex.numbers) if include_usage or not ex.stream else None
            if ex.usage is None:  # set before the answer is sent: the client may look as soon as it has it
                ex.numbers = None
            if ex.stream:
                self._send_sse(handler, ex, _Answers.chat_chunks(ex, req, ans, n))
            else:
                self._send_json(handler, ex, 200, _Answers.chat(ex, req, ans, n)[0])
        else:
            ex.usage = _responses_usage(ex.numbers)
            if ex.stream:
                self._send_sse(handler, ex, _Answers.response_events(ex, ans, n))
            else:
                self._send_json(handler, ex, 200, _Answers.response(ex, ans, n, ex.usage))

    @staticmethod
    def _send_json(handler: BaseHTTPRequestHandler, ex: Exchange, status: int, payload: Any) -> None:
        ex.status = status
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("x-request-id", f"req_{id(ex)}")
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _send_sse(handler: BaseHTTPRequestHandler, ex: Exchange, events: list[bytes]) -> None:
        """Written one event at a time (flushed), so a client reading lazily sees a real stream."""
        ex.status = 200
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("x-request-id", f"req_{id(ex)}")
        handler.send_header("content-length", str(sum(len(e) for e in events)))
        handler.end_headers()
        for event in events:
            handler.wfile.write(event)
            handler.wfile.flush()


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
