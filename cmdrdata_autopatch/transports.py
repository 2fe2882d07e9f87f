"""Where serialized events go, one at a time: the CmdrData HTTP API, a JSONL file, the console, or memory.

A transport does one thing: try to deliver one event body and say what happened, as a `SendResult`. It never
sleeps, never retries and never keeps events: retry policy, the pipeline-wide pause and the spool live in the
exporter (`exporter.py`), which is the only caller. That split keeps each transport small enough to reason
about, and lets every transport share one retry/accounting path.

`HttpTransport` speaks DESIGN.md section 4: one event per `POST`, `Authorization: Bearer <key>`,
`Idempotency-Key: <event_id>`, the body exactly `event.to_json()`. Responses are classified here (`classify`)
because the mapping from status code to outcome is the billing contract and deserves one place:

    2xx, 409 (duplicate)                 -> DELIVERED
    408, 425, 429, 5xx, network errors   -> RETRY   (Retry-After, when given, is a floor for the pause)
    401, 403                             -> AUTH    (pause and keep the events: a key rotation can recover)
    any other 4xx                        -> REJECTED, reason "rejected_<code>" (never retried)
    anything else (1xx, 3xx)             -> RETRY   (keep the event: a redirect is a configuration problem,
                                                     not a reason to lose revenue)

The API key lives only in the client's default headers: it is not in `repr()`, not in any `SendResult`, and
every error text that leaves this module goes through `diagnostics.redact`.
"""

from __future__ import annotations

import codecs
import email.utils
import enum
import json
import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Optional, Protocol

if TYPE_CHECKING:
    import httpx


from ._version import __version__
from .config import DEFAULT_ENDPOINT
from .diagnostics import redact, report_internal_error

# `httpx` is imported when the first HttpTransport is made, not at import: the application's start-up
# (and openai >= 3, which uses httpx2 and never loads httpx) should not pay ~60 ms for a client that the
# local exporters never use.
_httpx: Any = None

USER_AGENT = f"cmdrdata-autopatch/{__version__}"
RETRYABLE_STATUSES = frozenset({408, 425, 429})
AUTH_STATUSES = frozenset({401, 403})
DUPLICATE_STATUSES = frozenset({409})


class Outcome(enum.Enum):
    """What the exporter should do with the event after one attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"
    AUTH = "auth"
    REJECTED = "rejected"


@dataclass(frozen=True)
class SendResult:
    """The outcome of one attempt. `detail` is safe to log (redacted, no key)."""

    outcome: Outcome
    status: Optional[int] = None
    retry_after: Optional[float] = None
    reason: Optional[str] = None
    detail: str = ""


DELIVERED = SendResult(Outcome.DELIVERED)


class Transport(Protocol):
    """What the exporter needs from a transport. `send` must not raise; `timeout` bounds one attempt."""

    def send(self, event_id: str, body: bytes, timeout: Optional[float] = None) -> SendResult: ...

    def close(self) -> None: ...


def classify(status: int) -> Outcome:
    """Map an HTTP status code to an outcome (the table in the module docstring)."""
    if 200 <= status < 300 or status in DUPLICATE_STATUSES:
        return Outcome.DELIVERED
    if status in AUTH_STATUSES:
        return Outcome.AUTH
    if status in RETRYABLE_STATUSES or status >= 500:
        return Outcome.RETRY
    if 400 <= status < 500:
        return Outcome.REJECTED
    return Outcome.RETRY


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date); None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class HttpTransport:
    """POST one event to the CmdrData events API over one keep-alive `httpx.Client`.

    The client is created lazily (so constructing the exporter at `patch()` time opens no socket) and
    re-created after a fork: a child must never write into the parent's pooled connections.
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
    ) -> None:
        if not api_key:
            raise ValueError("HttpTransport needs a CmdrData API key")
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "User-Agent": user_agent,
        }
        self._verify = verify
        self._client: Optional[httpx.Client] = None
        self._client_lock = threading.Lock()
        # Import httpx now, on the caller's thread: not at module import (the local and memory exporters
        # never need it), and not at the first send, which may happen inside the exit hook, where an import
        # that registers an atexit callback (as httpx's dependencies do on some Pythons) raises.
        global _httpx
        if _httpx is None:
            import httpx

            _httpx = httpx
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            os.register_at_fork(
                before=lambda: _call(ref, "_before_fork"),
                after_in_parent=lambda: _call(ref, "_after_fork_in_parent"),
                after_in_child=lambda: _call(ref, "after_fork"),
            )

    def __repr__(self) -> str:
        return f"<HttpTransport endpoint={self.endpoint!r}>"

    def _before_fork(self) -> None:
        # Building the client imports httpcore/ssl/certifi lazily, in our sender thread. A fork in the middle
        # of that would leave the child a held import lock and a deadlock on its first request, so a fork
        # waits for the (short, local) construction to finish. Never held across network I/O.
        self._client_lock.acquire()

    def _after_fork_in_parent(self) -> None:
        self._client_lock.release()

    def _get_client(self) -> httpx.Client:
        client = self._client
        if client is None:
            with self._client_lock:
                client = self._client
                if client is None:
                    # imported lazily by the first connect (socket.getaddrinfo): do it here, under the lock
                    # that a fork waits for, so no fork can catch our thread holding an import lock
                    codecs.lookup("idna")
                    httpx = _httpx
                    client = httpx.Client(
                        headers=self._headers,
                        timeout=httpx.Timeout(self.read_timeout, connect=self.connect_timeout),
                        limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
                        follow_redirects=False,
                        verify=self._verify,
                    )
                    self._client = client
        return client

    def send(self, event_id: str, body: bytes, timeout: Optional[float] = None) -> SendResult:
        """One attempt. Never raises: every failure becomes a `SendResult`."""
        try:
            client = self._get_client()
        except Exception as exc:  # e.g. an unusable TLS setup: keep the event, say so once
            report_internal_error("http transport", exc)
            return SendResult(Outcome.RETRY, reason="internal", detail=redact(type(exc).__name__))
        httpx = _httpx
        try:
            request_timeout: Any = httpx.USE_CLIENT_DEFAULT
            if timeout is not None:
                budget = max(0.05, timeout)
                request_timeout = httpx.Timeout(
                    min(self.read_timeout, budget), connect=min(self.connect_timeout, budget)
                )
            response = client.post(
                self.endpoint,
                content=body,
                headers={"Idempotency-Key": event_id},
                timeout=request_timeout,
            )
            response.close()
        except httpx.TransportError as exc:  # connect/read/write errors, timeouts, dropped connections
            return SendResult(Outcome.RETRY, reason="network", detail=redact(f"{type(exc).__name__}: {exc}"))
        except Exception as exc:  # a bug or an unexpected library error: keep the event, say so once
            report_internal_error("http transport", exc)
            return SendResult(Outcome.RETRY, reason="internal", detail=redact(type(exc).__name__))
        status = response.status_code
        outcome = classify(status)
        if outcome is Outcome.DELIVERED:
            return SendResult(outcome, status=status)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        reason = f"rejected_{status}" if outcome is Outcome.REJECTED else f"http_{status}"
        return SendResult(
            outcome, status=status, retry_after=retry_after, reason=reason, detail=f"HTTP {status}"
        )

    def after_fork(self) -> None:
        """Forget (do not close) the parent's client: closing it could touch sockets the parent uses."""
        self._client = None
        self._client_lock = threading.Lock()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def describe(self) -> str:
        """Where events go, for messages (no secret)."""
        return self.endpoint


def _call(ref: weakref.ReferenceType[Any], method: str) -> None:
    target = ref()
    if target is not None:
        try:
            getattr(target, method)()
        except Exception as exc:
            report_internal_error(f"transport fork hook {method}", exc)


@dataclass
class UsageSummary:
    """Running totals for the local-mode exit line: calls, tokens and distinct customers."""

    calls: int = 0
    tokens: int = 0
    errors: int = 0

    def __post_init__(self) -> None:
        self.customers: set[str] = set()

    def add(self, body: bytes) -> None:
        try:
            wire = json.loads(body)
        except ValueError:
            return
        self.calls += 1
        total = wire.get("total_tokens")
        if isinstance(total, int):
            self.tokens += total
        if wire.get("error_occurred"):
            self.errors += 1
        customer = wire.get("customer_id")
        if isinstance(customer, str):
            self.customers.add(customer)


class JsonlTransport:
    """Append each event as one line to a local file (the offline default).

    Each event is written with a single `os.write` on an `O_APPEND` descriptor: the line reaches the kernel
    before `send` returns (nothing sits in a Python buffer at a crash), and lines from several processes
    sharing the file never interleave mid-line.
    """

    def __init__(self, path: str | os.PathLike[str], *, summarize: bool = False) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self._fd: Optional[int] = None
        self._lock = threading.Lock()
        self.summary: Optional[UsageSummary] = UsageSummary() if summarize else None

    def __repr__(self) -> str:
        return f"<JsonlTransport path={self.path!r}>"

    def send(self, event_id: str, body: bytes, timeout: Optional[float] = None) -> SendResult:
        try:
            with self._lock:
                if self._fd is None:
                    directory = os.path.dirname(self.path)
                    if directory:
                        os.makedirs(directory, exist_ok=True)
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                data = body + b"\n"
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
        except OSError as exc:
            return SendResult(
                Outcome.RETRY, reason="file_error", detail=redact(f"{self.path}: {exc.strerror}")
            )
        if self.summary is not None:
            self.summary.add(body)
        return DELIVERED

    def exit_summary(self) -> Optional[str]:
        """The one line printed at exit in local mode, or None when nothing was written."""
        summary = self.summary
        if summary is None or summary.calls == 0:
            return None
        customers = len(summary.customers)
        return (
            f"cmdrdata-autopatch: {summary.calls:,} OpenAI call(s), {summary.tokens:,} tokens, "
            f"{customers} customer(s) recorded locally in {self.path} "
            "(set CMDRDATA_API_KEY to send usage to CmdrData)"
        )

    def after_fork(self) -> None:
        """Keep the inherited descriptor: O_APPEND writes from parent and child do not clobber each other."""
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def describe(self) -> str:
        return self.path


def format_console_line(body: bytes) -> str:
    """A readable one-line rendering of an event body, e.g. for `CMDRDATA_EXPORTER=console`."""
    try:
        wire = json.loads(body)
    except ValueError:
        return "cmdrdata: <unreadable event>"
    parts = [
        "cmdrdata:",
        str(wire.get("timestamp")),
        f"customer={wire.get('customer_id')}",
        f"api={wire.get('api')}",
        f"model={wire.get('model')}",
        f"tokens={wire.get('input_tokens')}+{wire.get('output_tokens')}={wire.get('total_tokens')}",
        f"latency={wire.get('latency_ms')}ms",
    ]
    if wire.get("usage_source") == "estimated":
        parts.append("(estimated)")
    if wire.get("error_occurred"):
        parts.append(f"error={wire.get('error_type')}")
    parts.append(f"id={wire.get('event_id')}")
    return " ".join(parts)


class ConsoleTransport:
    """Print one readable line per event (default: stderr, so it never mixes with a program's output)."""

    def __init__(self, stream: Optional[IO[str]] = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, event_id: str, body: bytes, timeout: Optional[float] = None) -> SendResult:
        stream = self._stream if self._stream is not None else sys.stderr
        try:
            line = format_console_line(body)
            with self._lock:
                stream.write(line + "\n")
                stream.flush()
        except Exception as exc:  # a closed or broken stream: the event is not worth the app's stability
            return SendResult(Outcome.REJECTED, reason="console_error", detail=redact(type(exc).__name__))
        return DELIVERED

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "the console"


class MemoryTransport:
    """Keep every delivered body in memory, in order (tests, benchmarks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: list[tuple[str, bytes]] = []

    def send(self, event_id: str, body: bytes, timeout: Optional[float] = None) -> SendResult:
        with self._lock:
            self._sent.append((event_id, body))
        return DELIVERED

    @property
    def bodies(self) -> list[bytes]:
        with self._lock:
            return [body for _, body in self._sent]

    @property
    def event_ids(self) -> list[str]:
        with self._lock:
            return [event_id for event_id, _ in self._sent]

    def wire(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self.bodies]

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "memory"
