"""`HttpTransport`: one event per POST to the CmdrData events API (DESIGN.md section 4).

Split from `transports.py` so that `http.client`, `ssl` and (with HTTP/2) `httpx` load only when an HTTP
exporter is built: never at `import cmdrdata_autopatch`, never on the application's call path.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx

from .config import DEFAULT_ENDPOINT
from .diagnostics import logger, redact, report_internal_error
from .http1 import Exchanged, Stalled, exchange, exchange_many
from .transports import USER_AGENT, Outcome, SendResult, result_for

__all__ = ["HttpTransport"]


class HttpTransport:
    """POST one event to the CmdrData events API over a pool of keep-alive connections.

    Up to `max_connections` requests run at once (one per sender thread), each on a connection taken from a
    LIFO pool and put back after a complete response. HTTP/1.1: `http.client` opens the connection (TLS,
    proxy tunnel); each POST then writes a request head built once and reads the answer with `http1.py`'s
    minimal reader: measured on loopback ~15 µs of CPU per POST, against ~40 µs with `http.client`
    parsing the answer and ~230 µs through `httpx.Client` (docs/performance.md); every µs here is taken
    from the application through the GIL. When the `h2` package is installed (the `h2` extra) and
    the endpoint is https, requests go through one `httpx.Client(http2=True)` instead: with a server that
    offers HTTP/2 (ALPN), all senders share one multiplexed connection; without it httpx falls back to
    HTTP/1.1. The trade-off: the httpx path costs httpx's per-request CPU (~250-300 µs of CPU
    per POST measured over HTTP/1.1, against ~15 µs here), so `http2=False` (or not installing `h2`)
    is the cheaper choice when the backend is near; HTTP/2 pays off when it is far and many events are in
    flight on one connection. `HTTPS_PROXY`/`NO_PROXY` are honoured (CONNECT tunnel). Connections are
    opened lazily, and forgotten (never closed under the parent's feet) in a forked child.
    """

    def __init__(
        self,
        api_key: str,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        user_agent: str = USER_AGENT,
        verify: bool = True,
        max_connections: int = 16,
        http2: Optional[bool] = None,
    ) -> None:
        if not api_key:
            raise ValueError("HttpTransport needs a CmdrData API key")
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_connections = max(1, int(max_connections))
        parts = urlsplit(endpoint)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = self._host if parts.port is None else f"{self._host}:{parts.port}"
        self._headers = {
            "Host": host_header,
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "User-Agent": user_agent,
            "Accept-Encoding": "identity",
        }
        if any(_unsafe_header(value) for value in self._headers.values()):
            raise ValueError("HttpTransport: the API key, endpoint or user agent holds control characters")
        # The request head is built once: only the id and the length change per event (see send()).
        head = "".join(f"{name}: {value}\r\n" for name, value in self._headers.items())
        self._prefix = f"POST {self._path} HTTP/1.1\r\n{head}Idempotency-Key: ".encode("latin-1")
        self._verify = verify
        self._ssl: Optional[ssl.SSLContext] = None
        self._proxy = _proxy_for(parts.scheme, self._host) if self._https else None
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._strikes = 0  # pipelines the server broke part-way (see send_many)
        self._first_answer: Optional[float] = None  # seconds from a write to its first answer (average)
        self._answer_gap: Optional[float] = None  # seconds between a pipeline's answers (average)
        self._h2: Optional[_HttpxBackend] = None
        if http2 is None:
            http2 = self._https and _h2_installed()
        self.http2 = bool(http2)
        if self.http2:
            self._h2 = _HttpxBackend(
                self._headers, connect_timeout, read_timeout, verify, self.max_connections
            )
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _call(ref, "after_fork"))

    def __repr__(self) -> str:
        return f"<HttpTransport endpoint={self.endpoint!r}>"

    @property
    def protocol(self) -> str:
        """`http/1.1`, or `h2-capable` when requests go through httpx with HTTP/2 enabled."""
        return "h2-capable" if self.http2 else "http/1.1"

    def _new_connection(self, timeout: float) -> http.client.HTTPConnection:
        if not self._https:
            return http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        if self._ssl is None:
            context = ssl.create_default_context()
            if not self._verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._ssl = context
        if self._proxy is not None:
            conn = http.client.HTTPSConnection(
                self._proxy[0], self._proxy[1], timeout=timeout, context=self._ssl
            )
            conn.set_tunnel(self._host, self._port)
            return conn
        return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl)

    def _timeouts(self, timeout: Optional[float]) -> tuple[float, float]:
        connect, read = self.connect_timeout, self.read_timeout
        if timeout is not None:
            budget = max(0.05, timeout)
            connect, read = min(connect, budget), min(read, budget)
        return connect, read

    def _request(self, event_id: str, body: bytes) -> bytes:
        length = b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        return b"".join((self._prefix, event_id.encode("latin-1"), length, body))

    def _checkout(self, connect: float) -> tuple[http.client.HTTPConnection, bool]:
        """An idle kept-alive connection (reused=True), else a new one, connected."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is not None:
            return conn, True
        conn = self._new_connection(connect)
        try:
            conn.connect()
            if conn.sock is not None:
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            _close(conn)
            raise
        return conn, False

    def send(self, event_id: str, body: bytes, timeout: Optional[float] = None) -> SendResult:
        """One attempt. Never raises: every failure becomes a `SendResult`."""
        if self._h2 is not None:
            return self._h2.send(self.endpoint, event_id, body, timeout)
        if _unsafe_header(event_id):
            return _INVALID_ID
        connect, read = self._timeouts(timeout)
        request = self._request(event_id, body)
        for attempt in (0, 1):
            conn: Optional[http.client.HTTPConnection] = None
            reused = False
            try:
                conn, reused = self._checkout(connect)
                started = _monotonic()
                answer = exchange(_socket_of(conn), request, read)
                self._timed(_monotonic() - started, None)
            except _STALE as exc:
                _close(conn)
                if reused and attempt == 0:  # the server closed an idle keep-alive connection: once more
                    continue
                return _network_failure(exc)
            except (OSError, http.client.HTTPException) as exc:
                _close(conn)
                return _network_failure(exc)
            except Exception as exc:  # a bug or an unexpected library error: keep the event, say so once
                _close(conn)
                return _internal_failure(exc)
            self._release(conn, answer.will_close)
            return result_for(answer.status, answer.retry_after)
        return SendResult(Outcome.RETRY, reason="network", detail="connection closed")  # pragma: no cover

    @property
    def pipelining(self) -> bool:
        """Whether `send_many` pipelines (HTTP/1.1, and the server has not shown it mishandles pipelines)."""
        return self._h2 is None and self._strikes < PIPELINE_STRIKES

    def send_many(
        self, batch: Sequence[tuple[str, bytes]], timeout: Optional[float] = None
    ) -> list[SendResult]:
        """One attempt for each (event id, body), pipelined on one connection; results in the same order.

        Still one event per POST (DESIGN.md section 4): the requests are written together and the answers
        read in order (`http1.exchange_many`). When the server ends the connection after some answers, the
        rest go on a fresh connection (it processed none of them: RFC 9112 section 9.6). A network error
        or timeout part-way leaves the unanswered events to the retry path, like any failed POST: the
        server may have stored some of them, and their idempotency keys make the re-send harmless. A
        server that answers only the first request of each pipeline, or breaks part-way, `PIPELINE_STRIKES`
        times, is sent one event per exchange from then on. Never raises.
        """
        if not self.pipelining or len(batch) < 2:
            return [self.send(event_id, body, timeout) for event_id, body in batch]
        results: list[SendResult] = [_INVALID_ID] * len(batch)
        todo = [
            (i, self._request(eid, body)) for i, (eid, body) in enumerate(batch) if not _unsafe_header(eid)
        ]
        connect, read = self._timeouts(timeout)
        stale_retry = True
        while todo:
            conn: Optional[http.client.HTTPConnection] = None
            try:
                conn, reused = self._checkout(connect)
                got = exchange_many(_socket_of(conn), [request for _, request in todo], read, *self._stalls())
            except (OSError, http.client.HTTPException) as exc:  # could not connect
                _close(conn)
                return _fill(results, todo, _network_failure(exc))
            except Exception as exc:
                _close(conn)
                return _fill(results, todo, _internal_failure(exc))
            done, error = self._take_answers(got, todo, results)
            if error is None and done == len(todo):
                self._release(conn, got.answers[-1].will_close)
                return results
            _close(conn)
            todo = todo[done:]
            if isinstance(error, Stalled):
                # the request at the head hangs: it fails like any attempt without an answer, and the
                # ones queued behind it go out again at once on a fresh connection (the server may have
                # stored some of them: their idempotency keys make the re-send harmless)
                results[todo[0][0]] = _network_failure(error)
                todo = todo[1:]
                continue
            if error is not None:
                if done == 0 and reused and stale_retry and isinstance(error, _STALE):
                    stale_retry = False  # an idle keep-alive connection the server had closed: once more
                    continue
                if done:
                    self._strike()
                return _fill(results, todo, _network_failure(error))
            if done == 1:
                self._strike()
        return results

    def _take_answers(
        self, got: Exchanged, todo: list[tuple[int, bytes]], results: list[SendResult]
    ) -> tuple[int, Optional[BaseException]]:
        """Record one exchange's timings and answers; how many were answered, and the error, if any."""
        self._timed(got.first, got.gap)
        for (i, _), answer in zip(todo, got.answers):
            results[i] = result_for(answer.status, answer.retry_after)
        return len(got.answers), got.error

    def _stalls(self) -> tuple[Optional[float], Optional[float]]:
        """How long a pipeline waits for its first answer, then for each next one, before it gives the
        connection up: `STALL_FACTOR` times the measured times plus `STALL_MARGIN` (None before any)."""
        first, gap = self._first_answer, self._answer_gap
        return (
            None if first is None else STALL_FACTOR * first + STALL_MARGIN,
            None if gap is None else STALL_FACTOR * max(gap, first or 0.0) + STALL_MARGIN,
        )

    def _timed(self, first: Optional[float], gap: Optional[float]) -> None:
        """Fold one exchange's timings into the moving averages (benign races between senders)."""
        if first is not None:
            old = self._first_answer
            self._first_answer = first if old is None else old + (first - old) * 0.2
        if gap is not None:
            old = self._answer_gap
            self._answer_gap = gap if old is None else old + (gap - old) * 0.2

    def _strike(self) -> None:
        self._strikes += 1
        if self._strikes == PIPELINE_STRIKES:
            logger.info(
                "cmdrdata-autopatch: the CmdrData endpoint does not keep HTTP/1.1 pipelines; "
                "sending one event per exchange from now on"
            )

    def _release(self, conn: http.client.HTTPConnection, will_close: bool) -> None:
        if will_close:
            _close(conn)
            return
        with self._lock:
            if len(self._idle) < self.max_connections:
                self._idle.append(conn)
                return
        _close(conn)

    def after_fork(self) -> None:
        """Forget (do not close) the parent's connections: closing them could disturb the parent's TLS."""
        self._idle = []
        self._lock = threading.Lock()
        if self._h2 is not None:
            self._h2.after_fork()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)
        if self._h2 is not None:
            self._h2.close()


_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
PIPELINE_STRIKES = 3  # pipelines broken part-way before the transport stops pipelining
STALL_FACTOR = 4.0  # a pipeline's answer later than this many times the usual wait, plus the margin, ...
STALL_MARGIN = 0.05  # seconds: ... and the request it waits for is taken as hanging (see _stalls)
_monotonic = time.monotonic
_INVALID_ID = SendResult(Outcome.REJECTED, reason="invalid_event_id", detail="event id is not a header")


def _socket_of(conn: http.client.HTTPConnection) -> socket.socket:
    sock = conn.sock
    if sock is None:
        raise http.client.NotConnected("no socket")
    return sock


def _fill(results: list[SendResult], todo: list[tuple[int, bytes]], result: SendResult) -> list[SendResult]:
    for i, _ in todo:
        results[i] = result
    return results


def _internal_failure(exc: BaseException) -> SendResult:
    """A bug or an unexpected library error: keep the event, say so once."""
    report_internal_error("http transport", exc)
    return SendResult(Outcome.RETRY, reason="internal", detail=redact(type(exc).__name__))


_HEADER_SAFE = re.compile("[^\r\n\0\u0100-\U0010ffff]*")


def _unsafe_header(value: str) -> bool:
    """True when `value` cannot go into a header line verbatim (control characters, non-Latin-1)."""
    return _HEADER_SAFE.fullmatch(value) is None


def _network_failure(exc: BaseException) -> SendResult:
    return SendResult(Outcome.RETRY, reason="network", detail=redact(f"{type(exc).__name__}: {exc}"))


def _close(conn: Optional[http.client.HTTPConnection]) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:
            pass


def _h2_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("h2") is not None


def _proxy_for(scheme: str, host: str) -> Optional[tuple[str, int]]:
    """The (host, port) of the proxy the environment names for this endpoint, if any."""
    import urllib.request

    try:
        if urllib.request.proxy_bypass(host):
            return None
        url = urllib.request.getproxies().get(scheme)
    except Exception:
        return None
    if not url:
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or 8080


class _HttpxBackend:
    """HTTP/2-capable sending through `httpx` (imported here only: never on the application's call path)."""

    def __init__(
        self, headers: dict[str, str], connect: float, read: float, verify: bool, max_connections: int
    ) -> None:
        import httpx

        self._httpx = httpx
        self._headers = {k: v for k, v in headers.items() if k != "Host"}
        self._connect, self._read, self._verify = connect, read, verify
        self._max = max_connections
        self._client: Optional[httpx.Client] = None
        self._lock = threading.Lock()

    def _get_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                httpx = self._httpx
                self._client = httpx.Client(
                    headers=self._headers,
                    timeout=httpx.Timeout(self._read, connect=self._connect),
                    limits=httpx.Limits(max_connections=self._max, max_keepalive_connections=self._max),
                    follow_redirects=False,
                    verify=self._verify,
                    http2=True,
                )
            return self._client

    def send(self, url: str, event_id: str, body: bytes, timeout: Optional[float]) -> SendResult:
        httpx = self._httpx
        try:
            client = self._get_client()
            request_timeout: Any = httpx.USE_CLIENT_DEFAULT
            if timeout is not None:
                budget = max(0.05, timeout)
                request_timeout = httpx.Timeout(min(self._read, budget), connect=min(self._connect, budget))
            response = client.post(
                url, content=body, headers={"Idempotency-Key": event_id}, timeout=request_timeout
            )
            response.close()
        except httpx.TransportError as exc:
            return _network_failure(exc)
        except Exception as exc:
            report_internal_error("http transport", exc)
            return SendResult(Outcome.RETRY, reason="internal", detail=redact(type(exc).__name__))
        return result_for(response.status_code, response.headers.get("Retry-After"))

    def after_fork(self) -> None:
        self._client = None
        self._lock = threading.Lock()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass


def _call(ref: weakref.ReferenceType[Any], method: str) -> None:
    target = ref()
    if target is not None:
        try:
            getattr(target, method)()
        except Exception as exc:
            report_internal_error(f"transport fork hook {method}", exc)
