"""A loopback fake of the CmdrData events API that injects faults, for delivery tests.

    with FakeCmdrData() as server:                 # binds 127.0.0.1 on a free port
        server.script(Reply(503), Reply(503))      # the next two requests fail, then the default (200)
        exporter = BackgroundExporter(HttpTransport("tk-test", server.url))
        ...
        server.wait_for_stored(n, timeout=10)
        assert server.stored_count(event_id) == 1

Each request consumes the next scripted `Reply` (first in, first out), or the default reply when the script
is empty. A reply can answer with any status and a `Retry-After`, wait before answering (`delay`), never
answer (`hang`, until `release()` or `stop()`), or *store the event and then drop the connection without
answering* (`drop=True`), which is the case that makes idempotency keys necessary.

`latency` adds a fixed delay to every answer (the delivery tests use 50 ms: a hosted API's round trip).

What the server saw is in `received` (every request: event id, body bytes, headers, arrival time, pid of the
sender if the event's metadata carries one) and in `stored` (event id -> how many times it was committed).
With `dedup=True` a second commit of the same id answers `duplicate_status` (409) and is not counted again,
as the real server is asked to do; with `dedup=False` (the default) every commit counts, so a test can prove
"exactly once" on the client side alone.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

PATH = "/api/events"


@dataclass(frozen=True)
class Reply:
    """What to do with one request."""

    status: int = 200
    retry_after: Optional[str] = None
    delay: float = 0.0
    hang: bool = False
    drop: bool = False  # store (if `store`) and close the connection without a response
    store: Optional[bool] = None  # default: store on 2xx and on drop
    body: bytes = b'{"ok":true}'

    def stores(self) -> bool:
        if self.store is not None:
            return self.store
        return self.drop or 200 <= self.status < 300


@dataclass(frozen=True)
class Received:
    """One request as the server saw it."""

    event_id: Optional[str]
    body: bytes
    headers: dict[str, str]
    time: float  # time.monotonic() at arrival (same clock as the test process)
    wall_time: float  # time.time() at arrival (comparable across processes)
    reply: Reply
    outcome: str = ""  # "stored", "duplicate", "status", "hang", "dropped"
    peer_port: int = 0  # the client's port: one per connection (keep-alive shows as one port)

    @property
    def wire(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)
    script: deque[Reply] = field(default_factory=deque)
    default: Reply = field(default_factory=Reply)
    received: list[Received] = field(default_factory=list)
    stored: Counter[str] = field(default_factory=Counter)
    release: threading.Event = field(default_factory=threading.Event)
    dedup: bool = False
    duplicate_status: int = 409
    latency: float = 0.0  # added to every answer: a backend that is a round trip away

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    disable_nagle_algorithm = True  # with split writes, Nagle + delayed ACK would add 40 ms per request
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        now, wall = time.monotonic(), time.time()
        event_id: Optional[str] = None
        try:
            parsed = json.loads(body)
            if isinstance(parsed, dict) and isinstance(parsed.get("event_id"), str):
                event_id = parsed["event_id"]
        except ValueError:
            pass
        if event_id is None:
            event_id = self.headers.get("Idempotency-Key")
        with state.lock:
            reply = state.script.popleft() if state.script else state.default
        if reply.delay or state.latency:
            time.sleep(reply.delay + state.latency)
        if reply.hang:
            self._record(event_id, body, now, wall, reply, "hang")
            state.release.wait()
            self.close_connection = True
            return
        outcome = "status"
        status = reply.status
        with state.lock:
            if reply.stores() and event_id is not None:
                if state.dedup and state.stored[event_id]:
                    outcome = "duplicate"
                    status = state.duplicate_status
                else:
                    state.stored[event_id] += 1
                    outcome = "stored"
        if reply.drop:
            self._record(event_id, body, now, wall, reply, "dropped")
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._record(event_id, body, now, wall, reply, outcome)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.body)))
        if reply.retry_after is not None:
            self.send_header("Retry-After", reply.retry_after)
        self._headers_buffer.append(b"\r\n")  # end_headers() without its own flush: one write below
        self._headers_buffer.append(reply.body)
        self.flush_headers()

    def _record(
        self, event_id: Optional[str], body: bytes, now: float, wall: float, reply: Reply, outcome: str
    ) -> None:
        state = self.server.state
        headers = {key: value for key, value in self.headers.items()}
        with state.lock:
            peer = int(self.client_address[1])
            state.received.append(Received(event_id, body, headers, now, wall, reply, outcome, peer))
            state.changed.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, state: _State) -> None:
        self.state = state
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away (timeouts, killed processes) is part of the tests, not noise


class FakeCmdrData:
    """The fake server. Start/stop explicitly or use it as a context manager."""

    def __init__(
        self,
        *,
        dedup: bool = False,
        duplicate_status: int = 409,
        default: Reply = Reply(),
        latency: float = 0.0,
    ) -> None:
        """`latency`: seconds added to every answer (a backend that is a round trip away)."""
        self._state = _State(default=default, dedup=dedup, duplicate_status=duplicate_status, latency=latency)
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # lifecycle
    def start(self) -> FakeCmdrData:
        self._server = _Server(self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._state.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeCmdrData:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    # scripting
    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order."""
        with self._state.lock:
            self._state.script.extend(replies)

    def set_default(self, reply: Reply) -> None:
        """The reply used when the script is empty (e.g. `Reply(hang=True)` for a hanging backend)."""
        with self._state.lock:
            self._state.default = reply
        if not reply.hang:
            self.release()

    def release(self) -> None:
        """Let hanging requests finish (their connections are closed without an answer)."""
        self._state.release.set()
        self._state.release = threading.Event()

    # observations
    @property
    def received(self) -> list[Received]:
        with self._state.lock:
            return list(self._state.received)

    @property
    def stored(self) -> Counter[str]:
        with self._state.lock:
            return Counter(self._state.stored)

    def stored_count(self, event_id: str) -> int:
        with self._state.lock:
            return self._state.stored[event_id]

    def wait_for(self, predicate: Callable[[FakeCmdrData], bool], timeout: float = 10.0) -> bool:
        """Wait until `predicate(server)` holds (re-checked on every request); False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._state.lock:
                self._state.changed.wait(min(remaining, 0.1))

    def wait_for_stored(self, n: int, timeout: float = 10.0) -> bool:
        """Wait until at least `n` distinct event ids were stored."""
        return self.wait_for(lambda s: len(s.stored) >= n, timeout)

    def set_latency(self, latency: float) -> None:
        with self._state.lock:
            self._state.latency = latency

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> bool:
        return self.wait_for(lambda s: len(s.received) >= n, timeout)


@contextmanager
def running(**kwargs: Any) -> Iterator[FakeCmdrData]:
    """`with running() as server:` — a started server, stopped afterwards."""
    server = FakeCmdrData(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class FakeCmdrDataH2:
    """The same fake over HTTP/2 with TLS (ALPN `h2`), for the HTTP/2 multiplexing test.

    Answers every request with 200 after `latency`, records what it saw in `received` (event id, headers,
    client port), and tracks how many streams it held open at once, in all (`max_concurrent_streams`) and on
    one connection (`max_streams_per_connection`). Each connection's TLS handshake runs in its own thread, so
    a slow handshake (a loaded CI machine) never holds up the others. The certificate is self-signed
    (clients use `verify=False`; loopback only). Needs the `h2` package.
    """

    def __init__(self, certfile: str, keyfile: str, latency: float = 0.05) -> None:
        import ssl

        self.latency = latency
        self.received: list[Received] = []
        self.max_concurrent_streams = 0
        self.max_streams_per_connection = 0
        self.protocols: list[str] = []
        self._open = 0
        self._open_on: dict[int, int] = {}  # client port -> streams open on that connection now
        self._lock = threading.Lock()
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(certfile, keyfile)
        self._context.set_alpn_protocols(["h2"])
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._sock.getsockname()[1]}{PATH}"

    def close(self) -> None:
        self._sock.close()

    def _accept(self) -> None:
        while True:
            try:
                raw, address = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw, int(address[1])), daemon=True).start()

    def _serve(self, raw: socket.socket, port: int) -> None:
        import h2.config
        import h2.connection
        import h2.events

        try:
            sock = self._context.wrap_socket(raw, server_side=True)
        except OSError:
            raw.close()
            return
        with self._lock:
            self.protocols.append(str(sock.selected_alpn_protocol()))
        h2conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
        write = threading.Lock()
        h2conn.initiate_connection()
        sock.sendall(h2conn.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        while True:
            try:
                data = sock.recv(65535)
            except OSError:
                return
            if not data:
                return
            with write:
                events = h2conn.receive_data(data)
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        headers = {_text(k): _text(v) for k, v in event.headers}
                        streams[event.stream_id] = (headers, bytearray())
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        h2conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        self._opened(port)
                        args = (sock, h2conn, write, event.stream_id, headers, bytes(body), port)
                        threading.Thread(target=self._answer, args=args, daemon=True).start()
                sock.sendall(h2conn.data_to_send())

    def _opened(self, port: int) -> None:
        with self._lock:
            self._open += 1
            self.max_concurrent_streams = max(self.max_concurrent_streams, self._open)
            here = self._open_on[port] = self._open_on.get(port, 0) + 1
            self.max_streams_per_connection = max(self.max_streams_per_connection, here)

    def _answer(
        self,
        sock: Any,
        h2conn: Any,
        write: threading.Lock,
        stream: int,
        headers: dict[str, str],
        body: bytes,
        port: int,
    ) -> None:
        time.sleep(self.latency)
        now = time.monotonic()
        event_id = headers.get("idempotency-key")
        with self._lock:
            self.received.append(Received(event_id, body, headers, now, time.time(), Reply(), "stored", port))
            self._open -= 1
            self._open_on[port] -= 1
        reply = b'{"ok":true}'
        with write:
            try:
                h2conn.send_headers(stream, [(":status", "200"), ("content-length", str(len(reply)))])
                h2conn.send_data(stream, reply, end_stream=True)
                sock.sendall(h2conn.data_to_send())
            except Exception:  # the client closed the connection meanwhile (shutdown): nothing to answer
                pass


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
