"""A loopback WebSocket server (the `websockets` package, as the SDK itself uses) speaking the server-event
shapes of Realtime (beta and GA), the Responses WebSocket and Live, driven by a per-test script.

It binds 127.0.0.1 on port 0 and records every message clients send, so tests can prove our code never
sends anything on the socket. The builders below produce the events the SDK parses; only the fields the
SDK models declare are used, with the numbers from issue 11.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from typing import Any, Callable, Optional

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve


class Peer:
    """One accepted client connection, as the script sees it."""

    def __init__(self, conn: ServerConnection, index: int, server: WsServer) -> None:
        self.conn = conn
        self.index = index
        self.server = server
        self.path = conn.request.path if conn.request is not None else ""

    def send(self, *events: dict[str, Any]) -> None:
        for event in events:
            self.conn.send(json.dumps(event))

    def recv(self, timeout: float = 30.0) -> Optional[dict[str, Any]]:
        """The next client message (recorded), or None when the client closed."""
        try:
            message = self.conn.recv(timeout=timeout)
        except (ConnectionClosed, TimeoutError):
            return None
        data: dict[str, Any] = json.loads(message)
        with self.server.lock:
            self.server.received.append((self.index, data))
        return data

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.conn.close(code=code, reason=reason)

    def drop(self) -> None:
        """Kill the TCP connection without a close frame (the client sees close code 1006)."""
        try:
            self.conn.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.socket.close()

    def drain(self, timeout: float = 30.0) -> None:
        """Record what the client still sends until it closes."""
        while self.recv(timeout) is not None:
            pass


Script = Callable[[Peer], None]


class WsServer:
    """`with WsServer(script) as server:` then point the client's base_url at `server.base_url`."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.lock = threading.Lock()
        self.received: list[tuple[int, dict[str, Any]]] = []
        self.paths: list[str] = []
        self.errors: list[BaseException] = []
        self._server = serve(self._handle, "127.0.0.1", 0)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    def _handle(self, conn: ServerConnection) -> None:
        with self.lock:
            index = len(self.paths)
            self.paths.append(conn.request.path if conn.request is not None else "")
        try:
            self.script(Peer(conn, index, self))
        except ConnectionClosed:
            pass
        except BaseException as exc:  # surfaced by the test through `errors`
            self.errors.append(exc)

    def sent_by_clients(self) -> list[dict[str, Any]]:
        with self.lock:
            return [message for _, message in self.received]

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)

    def __enter__(self) -> WsServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def _eid() -> str:
    return new_id("event")


# --- Realtime ----------------------------------------------------------------------------------------

REALTIME_USAGE = {
    "total_tokens": 541,
    "input_tokens": 521,
    "output_tokens": 20,
    "input_token_details": {
        "text_tokens": 292,
        "audio_tokens": 229,
        "cached_tokens": 128,
        "cached_tokens_details": {"text_tokens": 128, "audio_tokens": 0},
    },
    "output_token_details": {"text_tokens": 5, "audio_tokens": 15},
}


def rt_session_created(
    session_id: str, model: str, transcription_model: Optional[str] = None
) -> dict[str, Any]:
    session: dict[str, Any] = {"id": session_id, "object": "realtime.session", "model": model}
    if transcription_model is not None:
        session["input_audio_transcription"] = {"model": transcription_model}  # beta shape
        session["audio"] = {"input": {"transcription": {"model": transcription_model}}}  # GA shape
    return {"type": "session.created", "event_id": _eid(), "session": session}


def rt_session_updated(session_id: str, model: str) -> dict[str, Any]:
    event = rt_session_created(session_id, model)
    event["type"] = "session.updated"
    return event


def rt_response_created(response_id: str) -> dict[str, Any]:
    response = {"id": response_id, "object": "realtime.response", "status": "in_progress", "output": []}
    return {"type": "response.created", "event_id": _eid(), "response": response}


def rt_text_delta(response_id: str, delta: str = "hi") -> dict[str, Any]:
    return {
        "type": "response.output_text.delta",
        "event_id": _eid(),
        "response_id": response_id,
        "item_id": "item_x",
        "output_index": 0,
        "content_index": 0,
        "delta": delta,
    }


def rt_response_done(
    response_id: str, usage: Optional[dict[str, Any]] = None, status: str = "completed"
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "output": [],
    }
    if usage is not None:
        response["usage"] = usage
    if status == "failed":
        response["status_details"] = {"type": "failed", "error": {"type": "server_error", "code": "boom"}}
    return {"type": "response.done", "event_id": _eid(), "response": response}


def rt_transcription_completed(item_id: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "conversation.item.input_audio_transcription.completed",
        "event_id": _eid(),
        "item_id": item_id,
        "content_index": 0,
        "transcript": "hello there",
        "usage": usage,
    }


# --- Responses over the WebSocket ---------------------------------------------------------------------

RESPONSES_USAGE = {
    "input_tokens": 812,
    "input_tokens_details": {"cached_tokens": 512},
    "output_tokens": 97,
    "output_tokens_details": {"reasoning_tokens": 64},
    "total_tokens": 909,
}


def _response(response_id: str, model: str, status: str, usage: Optional[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": 1764556800,
        "model": model,
        "status": status,
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "service_tier": "default",
    }
    if usage is not None:
        body["usage"] = usage
    return body


def resp_created(response_id: str, model: str = "gpt-5.1") -> dict[str, Any]:
    return {
        "type": "response.created",
        "sequence_number": 0,
        "response": _response(response_id, model, "in_progress", None),
    }


def resp_terminal(
    response_id: str,
    model: str = "gpt-5.1",
    usage: Optional[dict[str, Any]] = None,
    kind: str = "response.completed",
    web_searches: Optional[int] = None,
    output: Optional[list[dict[str, Any]]] = None,
) -> dict[str, Any]:
    status = {"response.completed": "completed", "response.incomplete": "incomplete"}.get(kind, "failed")
    body = _response(response_id, model, status, usage if usage is not None else RESPONSES_USAGE)
    if web_searches is not None:
        body["tool_usage"] = {
            "web_search": {"num_requests": web_searches},
            "image_gen": {
                "input_tokens": 0,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
                "output_tokens": 0,
                "total_tokens": 0,
            },
        }
    if output is not None:
        body["output"] = output
    if kind == "response.failed":
        body["error"] = {"code": "server_error", "message": "The model failed."}
    return {"type": kind, "sequence_number": 9, "response": body}


# --- Live --------------------------------------------------------------------------------------------


def _live_session(session_id: str, model: str) -> dict[str, Any]:
    return {"id": session_id, "expires_at": 1764560400, "model": model, "status": "active"}


def live_started(session_id: str, model: str = "gpt-live-1") -> dict[str, Any]:
    return {"type": "session.started", "event_id": _eid(), "session": _live_session(session_id, model)}


def live_usage(seconds: float) -> dict[str, Any]:
    return {"type": "session.usage.updated", "event_id": _eid(), "usage": {"seconds": seconds}}


def live_closed(session_id: str, seconds: float, model: str = "gpt-live-1", **more: Any) -> dict[str, Any]:
    return {
        "type": "session.closed",
        "event_id": _eid(),
        "reason": "close_requested",
        "session": _live_session(session_id, model),
        "usage": {"seconds": seconds, **more},
    }


def live_response_event(nested: dict[str, Any], delegation_id: str) -> dict[str, Any]:
    return {"type": "response.event", "event_id": _eid(), "event": nested, "delegation_id": delegation_id}


def live_decision_event(delegation_id: str, model: str = "gpt-decide-1") -> dict[str, Any]:
    usage = {
        "input_tokens": 64,
        "input_tokens_details": {"cache_write_tokens": 0, "cached_tokens": 32},
        "output_tokens": 8,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 72,
    }
    return {
        "type": "decision.event",
        "event_id": _eid(),
        "delegation_id": delegation_id,
        "event": {"type": "decision.completed", "decision": {"answers": [], "model": model, "usage": usage}},
    }


# --- the SDK side -------------------------------------------------------------------------------------


def has_surface(name: str) -> bool:
    """Whether the installed `openai` has this WebSocket surface (the tests of the others are skipped)."""
    import importlib

    module, cls = SURFACES[name]
    try:
        return hasattr(getattr(importlib.import_module(module), cls), "connect")
    except (ImportError, AttributeError):
        return False


SURFACES = {
    "realtime": ("openai.resources.realtime.realtime", "Realtime"),
    "beta.realtime": ("openai.resources.beta.realtime.realtime", "Realtime"),
    "responses": ("openai.resources.responses.responses", "Responses"),
    "beta.responses": ("openai.resources.beta.responses.responses", "Responses"),
    "live": ("openai.resources.live.live", "Live"),
    "live.sideband": ("openai.resources.live.sideband", "Sideband"),
    "live.forks": ("openai.resources.live.forks", "Forks"),
}


def resource(client: Any, name: str) -> Any:
    """`client.realtime`, `client.beta.realtime`, `client.live.sideband`, ... by surface name."""
    target = client
    for part in name.split("."):
        target = getattr(target, part)
    return target


def _client(cls: Any, server: WsServer) -> Any:
    # beta Realtime always dials wss:// unless websocket_base_url says otherwise
    return cls(api_key="sk-test-not-a-secret", base_url=server.base_url, websocket_base_url=server.ws_url)


def sync_client(server: WsServer) -> Any:
    import openai

    return _client(openai.OpenAI, server)


def async_client(server: WsServer) -> Any:
    import openai

    return _client(openai.AsyncOpenAI, server)


def read_session(server: WsServer, surface: str, *send: dict[str, Any], **connect: Any) -> list[Any]:
    """Open a sync session on `surface`, send `send`, and read every server event until the server closes."""
    with resource(sync_client(server), surface).connect(**connect) as conn:
        for message in send:
            conn.send(message)
        return list(conn)
