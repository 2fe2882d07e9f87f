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
import weakref
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx

from .config import DEFAULT_ENDPOINT
from .diagnostics import redact, report_internal_error
from .http1 import exchange
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

    def send(self, event_id: str, body: bytes, timeout: Optional[float] = None) -> SendResult:
        """One attempt. Never raises: every failure becomes a `SendResult`."""
        if self._h2 is not None:
            return self._h2.send(self.endpoint, event_id, body, timeout)
        connect, read = self.connect_timeout, self.read_timeout
        if timeout is not None:
            budget = max(0.05, timeout)
            connect, read = min(connect, budget), min(read, budget)
        if _unsafe_header(event_id):
            return SendResult(Outcome.REJECTED, reason="invalid_event_id", detail="event id is not a header")
        length = b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        request = b"".join((self._prefix, event_id.encode("latin-1"), length, body))
        for attempt in (0, 1):
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            try:
                if conn is None:
                    conn = self._new_connection(connect)
                    conn.connect()
                    if conn.sock is not None:
                        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock = conn.sock
                if sock is None:
                    raise http.client.NotConnected("no socket")
                answer = exchange(sock, request, read)
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
                report_internal_error("http transport", exc)
                return SendResult(Outcome.RETRY, reason="internal", detail=redact(type(exc).__name__))
            self._release(conn, answer.will_close)
            return result_for(answer.status, answer.retry_after)
        return SendResult(Outcome.RETRY, reason="network", detail="connection closed")  # pragma: no cover

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
