"""`UsageEvent`: one billable OpenAI call, and its wire form (DESIGN.md section 4).

An event is created on the caller's thread with only what is cheap to take there: a random id, the
start time, the latency, the customer, a snapshot of the metadata, and references to the objects that hold
the usage (the response, or what a stream left behind). Turning those references into numbers, formatting
the id and the timestamp, and serializing to JSON happen later, once, in the exporter's background thread
(`to_wire()` / `to_json()`), so the wrapped OpenAI call pays for none of it. The id is fixed at creation:
the same bytes are sent on every retry and replay.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from ._version import __version__
from .diagnostics import redact, report_internal_error

SDK_NAME = "cmdrdata-autopatch"

# The wire fields, in the order they are written. DESIGN.md section 4, plus `units` (billable quantities
# that are not tokens: images, audio seconds, characters) and `http_status` (of a failed call).
WIRE_FIELDS = (
    "event_id",
    "timestamp",
    "customer_id",
    "provider",
    "model",
    "api",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "usage_details",
    "usage_source",
    "units",
    "streaming",
    "request_id",
    "request_start_time",
    "request_end_time",
    "latency_ms",
    "time_to_first_token_ms",
    "error_occurred",
    "error_type",
    "error_code",
    "http_status",
    "error_message",
    "metadata",
    "sdk",
)

MAX_ERROR_MESSAGE = 1000

Resolver = Callable[["UsageEvent"], None]


def format_timestamp(unix_seconds: float) -> str:
    """ISO-8601 in UTC with milliseconds and an explicit offset, e.g. 2026-11-24T18:40:58.123+00:00."""
    return datetime.fromtimestamp(unix_seconds, timezone.utc).isoformat(timespec="milliseconds")


def _openai_version() -> str | None:
    module = sys.modules.get("openai")
    version = getattr(module, "__version__", None)
    return version if isinstance(version, str) else None


class UsageEvent:
    """One usage event. Attributes named like the wire fields hold their values once resolved."""

    # Wire defaults: instances assign only what they know, so creating one on the hot path is cheap.
    customer_id: Optional[str] = None
    provider: Optional[str] = None
    model: Optional[str] = None
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    usage_details: Optional[dict[str, Any]] = None
    usage_source: str = "none"
    units: Optional[dict[str, Any]] = None
    request_id: Optional[str] = None
    time_to_first_token_ms: Optional[float] = None
    error_occurred: bool = False
    error_type: Optional[str] = None
    error_code: Optional[str] = None
    http_status: Optional[int] = None
    error_message: Optional[str] = None
    metadata: Optional[dict[str, Any]] = None

    # Raw material for the resolver (references, not copies; resolved in the background).
    raw_result: Any = None
    raw_kwargs: Optional[dict[str, Any]] = None
    raw_client: Any = None
    raw_extra: Any = None
    resolver: Optional[Resolver] = None

    def __init__(
        self,
        api: str,
        start_time: float,
        latency_s: float,
        customer_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        streaming: bool = False,
        model: str | None = None,
    ) -> None:
        self._id_bytes = os.urandom(16)
        self._wire: dict[str, Any] | None = None
        self._json: bytes | None = None
        self.api = api
        self.request_start_time = start_time
        self.latency_s = latency_s
        self.streaming = streaming
        if customer_id is not None:
            self.customer_id = customer_id
        if metadata is not None:
            self.metadata = metadata
        if model is not None:
            self.model = model

    @classmethod
    def capture(
        cls,
        api: str,
        start_time: float,
        latency_s: float,
        customer_id: str | None,
        metadata: dict[str, Any] | None,
        result: Any,
        kwargs: dict[str, Any],
        owner: Any,
        resolver: Resolver,
    ) -> UsageEvent:
        """The hot-path constructor: references only, one dict store. The id's random bytes are drawn
        when the event is first read (in the exporter thread), before it is ever sent or spooled."""
        event = cls.__new__(cls)
        event.__dict__ = {
            "_wire": None,
            "_json": None,
            "api": api,
            "request_start_time": start_time,
            "latency_s": latency_s,
            "streaming": False,
            "customer_id": customer_id,
            "metadata": metadata,
            "raw_result": result,
            "raw_kwargs": kwargs,
            "raw_client": owner,
            "resolver": resolver,
        }
        return event

    @property
    def event_id(self) -> str:
        """The event's UUID (version 4), identical on every retry and replay."""
        raw = self.__dict__.get("_id_bytes")
        if raw is None:  # setdefault: two threads asking at once still agree on one id
            raw = self.__dict__.setdefault("_id_bytes", os.urandom(16))
        return str(uuid.UUID(bytes=raw, version=4))

    def set_error(self, exc: BaseException) -> None:
        """Fill the error fields from an exception raised by the OpenAI call (no secret leaves)."""
        self.error_occurred = True
        self.error_type = type(exc).__name__
        code = getattr(exc, "code", None)
        if code is None:  # openai < 1.2 kept the whole {"error": {...}} body on the exception
            body = getattr(exc, "body", None)
            inner = body.get("error") if isinstance(body, dict) else None
            code = inner.get("code") if isinstance(inner, dict) else None
        self.error_code = None if code is None else str(code)
        status = getattr(exc, "status_code", None)
        self.http_status = status if isinstance(status, int) else None
        request_id = getattr(exc, "request_id", None)
        if isinstance(request_id, str):
            self.request_id = request_id
        try:
            self.error_message = redact(str(exc))[:MAX_ERROR_MESSAGE]
        except Exception:
            self.error_message = None

    def resolve(self) -> None:
        """Run the deferred extraction once (usage, model, request id), then drop the raw references."""
        resolver = self.resolver
        if resolver is None:
            return
        self.resolver = None
        try:
            resolver(self)
        except Exception as exc:  # a malformed response must not cost us the event itself
            report_internal_error("usage extraction", exc)
        self.raw_result = self.raw_kwargs = self.raw_client = self.raw_extra = None

    def to_wire(self) -> dict[str, Any]:
        """The event as the CmdrData events API expects it (computed once, then cached)."""
        if self._wire is not None:
            return self._wire
        self.resolve()
        start = self.request_start_time
        end = start + self.latency_s
        wire: dict[str, Any] = {}
        for name in WIRE_FIELDS:
            if name == "event_id":
                wire[name] = self.event_id
            elif name == "timestamp":
                wire[name] = format_timestamp(start)
            elif name == "request_end_time":
                wire[name] = round(end, 6)
            elif name == "request_start_time":
                wire[name] = round(start, 6)
            elif name == "latency_ms":
                wire[name] = round(self.latency_s * 1000.0, 3)
            elif name == "sdk":
                wire[name] = {"name": SDK_NAME, "version": __version__, "openai_version": _openai_version()}
            else:
                wire[name] = getattr(self, name)
        self._wire = wire
        return wire

    def to_json(self) -> bytes:
        """The wire form as compact UTF-8 JSON, serialized once so every retry sends identical bytes."""
        if self._json is None:
            self._json = json.dumps(
                self.to_wire(), separators=(",", ":"), ensure_ascii=False, default=str
            ).encode("utf-8")
        return self._json

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> UsageEvent:
        """Rebuild an event from its wire form (spool replay); `to_json()` returns the same content."""
        event = cls.__new__(cls)
        event._id_bytes = uuid.UUID(str(wire["event_id"])).bytes
        event._wire = dict(wire)
        event._json = None
        event.api = str(wire.get("api") or "")
        event.request_start_time = float(wire.get("request_start_time") or 0.0)
        event.latency_s = float(wire.get("latency_ms") or 0.0) / 1000.0
        event.streaming = bool(wire.get("streaming"))
        for name in WIRE_FIELDS:
            if name in wire and name not in ("event_id", "timestamp", "sdk"):
                try:
                    setattr(event, name, wire[name])
                except AttributeError:
                    pass
        return event

    def __repr__(self) -> str:
        return f"<UsageEvent {self.event_id} api={self.api} customer={self.customer_id!r}>"
