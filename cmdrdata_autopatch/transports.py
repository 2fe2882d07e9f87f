"""Where serialized events go, one at a time: the CmdrData HTTP API, a JSONL file, the console, or memory.

A transport does one thing: try to deliver one event body and say what happened, as a `SendResult`. It never
sleeps, never retries and never keeps events: retry policy, the pipeline-wide pause and the spool live in the
delivery pipeline (`sender.py`, `retry.py`), the only caller. That split keeps each transport small enough to
reason about, and lets every transport share one retry/accounting path. A transport may be called from
several sender threads at once (`HttpTransport` is; the local ones get one sender, which keeps file order).

`HttpTransport` (in `httptransport.py`, loaded on first use) speaks DESIGN.md section 4: one event per `POST`,
`Authorization: Bearer <key>`, `Idempotency-Key: <event_id>`, the body exactly `event.to_json()`. Responses
are classified here (`classify`) because the mapping from status code to outcome is the billing contract and
deserves one place:

    2xx, 409 (duplicate)                 -> DELIVERED
    408, 425, 429, 5xx, network errors   -> RETRY   (Retry-After, when given, is a floor for the pause)
    401, 403                             -> AUTH    (pause and keep the events: a key rotation can recover)
    any other 4xx                        -> REJECTED, reason "rejected_<code>" (never retried)
    anything else (1xx, 3xx)             -> RETRY   (keep the event: a redirect is a configuration problem,
                                                     not a reason to lose revenue)

The API key lives only in the prebuilt request headers: it is not in `repr()`, not in any `SendResult`, and
every error text that leaves this module goes through `diagnostics.redact`.
"""

from __future__ import annotations

import email.utils
import enum
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Optional, Protocol

from ._version import __version__
from .diagnostics import redact
from .totals import UsageTotals

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


_DELIVERED_BY_STATUS: dict[int, SendResult] = {}  # results are immutable: one per status, not per event


def result_for(status: int, retry_after_header: Optional[str]) -> SendResult:
    """The `SendResult` for an HTTP answer (the classification table in the module docstring)."""
    done = _DELIVERED_BY_STATUS.get(status)
    if done is not None:
        return done
    outcome = classify(status)
    if outcome is Outcome.DELIVERED:
        return _DELIVERED_BY_STATUS.setdefault(status, SendResult(outcome, status=status))
    retry_after = parse_retry_after(retry_after_header)
    reason = f"rejected_{status}" if outcome is Outcome.REJECTED else f"http_{status}"
    return SendResult(outcome, status=status, retry_after=retry_after, reason=reason, detail=f"HTTP {status}")


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
        self.summary: Optional[UsageTotals] = UsageTotals() if summarize else None

    def __repr__(self) -> str:
        return f"<JsonlTransport path={self.path!r}>"

    def send(self, event_id: str, body: bytes, timeout: Optional[float] = None) -> SendResult:
        try:
            with self._lock:
                if self._fd is None:  # its directory must exist: never created (config.check_jsonl_path)
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                data = body + b"\n"
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
        except OSError as exc:
            from ._cmdline import describe_path_error  # only on this failure: argparse stays off the path

            detail = redact(f"{self.path}: {describe_path_error(self.path, exc)}")
            return SendResult(Outcome.RETRY, reason="file_error", detail=detail)
        if self.summary is not None:
            self.summary.add_wire(body)
        return DELIVERED

    def exit_summary(self) -> Optional[str]:
        """The one line printed at exit in local mode, or None when nothing was written."""
        summary = self.summary
        if summary is None or summary.calls == 0:
            return None
        customers = len(summary.customers)
        return (
            f"cmdrdata-autopatch: {summary.calls:,} OpenAI call(s), {summary.total_tokens:,} tokens, "
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


def __getattr__(name: str) -> Any:
    """`HttpTransport` lives in `httptransport.py` and loads on first use: `http.client` and `ssl` cost
    start-up time that the local exporters (and an application that never sends) should not pay."""
    if name == "HttpTransport":
        from .httptransport import HttpTransport

        return HttpTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
