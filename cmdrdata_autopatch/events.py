"""`UsageEvent`: one billable OpenAI call, and its wire form (DESIGN.md section 4).

An event is a plain record with explicit slots, filled on the caller's thread with facts copied from what
the SDK parsed (integers and short strings, never a reference to the response), so nothing the application
does to a response afterwards changes what is billed, and no response stays alive in a queue. Only the
formatting waits for the exporter's background thread: the id's text, the timestamp, and the JSON bytes
(`to_wire()` / `to_json()`, each computed once, so every retry and replay sends identical bytes). The id's
random bytes are drawn the first time the id is read, before the event is ever sent or spooled.
"""

from __future__ import annotations

import json
import operator
import os
import sys
import threading
import uuid
from datetime import datetime, timezone
from typing import Any

from ._version import __version__
from .diagnostics import redact
from .runtime import RUNTIME
from .usage import clean, numbers

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
    "service_tier",
    "source_id",
    "service",
    "environment",
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

# What a slot holds until something is known: the wire value for "absent" (DESIGN.md section 4).
_DEFAULTS: dict[str, Any] = {name: None for name in WIRE_FIELDS}
_DEFAULTS.update(
    input_tokens=0,
    output_tokens=0,
    total_tokens=0,
    cached_input_tokens=0,
    reasoning_tokens=0,
    usage_source="none",
    streaming=False,
    error_occurred=False,
)
_DERIVED = ("event_id", "timestamp", "request_start_time", "request_end_time", "latency_ms", "sdk")
_id_lock = threading.Lock()


def _new_id_lock_in_child() -> None:
    # a fork while another thread held the lock would leave the child's copy locked forever
    global _id_lock
    _id_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_new_id_lock_in_child)


def format_timestamp(unix_seconds: float) -> str:
    """ISO-8601 in UTC with milliseconds and an explicit offset, e.g. 2026-11-24T18:40:58.123+00:00."""
    return datetime.fromtimestamp(unix_seconds, timezone.utc).isoformat(timespec="milliseconds")


def _openai_version() -> str | None:
    module = sys.modules.get("openai")
    version = getattr(module, "__version__", None)
    return version if isinstance(version, str) else None


class UsageEvent:
    """One usage event. Slots named like the wire fields hold their values; an unset slot reads as the
    wire's default (0 tokens, `null`...), so creating one on the hot path assigns only what is known."""

    __slots__ = (
        "__weakref__",
        "_id_bytes",
        "_json",
        "_wire",
        "api",
        "cached_input_tokens",
        "customer_id",
        "environment",
        "error_code",
        "error_message",
        "error_occurred",
        "error_type",
        "http_status",
        "input_tokens",
        "latency_s",
        "metadata",
        "model",
        "output_tokens",
        "provider",
        "reasoning_tokens",
        "request_id",
        "request_start_time",
        "service",
        "service_tier",
        "source_id",
        "streaming",
        "time_to_first_token_ms",
        "total_tokens",
        "units",
        "usage_details",
        "usage_source",
    )
    customer_id: str | None
    provider: str | None
    model: str | None
    api: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    usage_details: dict[str, Any] | None  # the usage copy taken at call time (made JSON-safe on send)
    usage_source: str
    units: dict[str, Any] | None
    service_tier: str | None
    source_id: str | None
    service: str | None
    environment: str | None
    streaming: bool
    request_id: str | None
    time_to_first_token_ms: float | None
    error_occurred: bool
    error_type: str | None
    error_code: str | None
    http_status: int | None
    error_message: str | None
    metadata: dict[str, Any] | None
    request_start_time: float
    latency_s: float
    _id_bytes: bytes
    _wire: dict[str, Any]
    _json: bytes

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
        self.api = api
        self.request_start_time = start_time
        self.latency_s = latency_s
        self.streaming = streaming
        self.customer_id = customer_id
        self.metadata = metadata
        self.model = model
        deployment = RUNTIME.deployment  # (service, environment) set by patch(); None: both stay null
        if deployment is not None:
            self.service, self.environment = deployment

    def __getattr__(self, name: str) -> Any:
        """An unset wire slot reads as its default (called only when the slot was never assigned)."""
        try:
            return _DEFAULTS[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def event_id(self) -> str:
        """The event's UUID (version 4), identical on every retry and replay."""
        try:
            raw: bytes = object.__getattribute__(self, "_id_bytes")
        except AttributeError:
            with _id_lock:  # two threads asking at once still agree on one id
                try:
                    raw = object.__getattribute__(self, "_id_bytes")
                except AttributeError:
                    raw = self._id_bytes = os.urandom(16)
        return str(uuid.UUID(bytes=raw, version=4))

    def set_error(self, exc: BaseException) -> None:
        """Fill the error fields from an exception raised by the OpenAI call (no secret leaves)."""
        self.error_occurred = True
        self.error_type = type(exc).__name__
        code = getattr(exc, "code", None)
        if code is None:
            code = _error_code_from_body(exc)
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

    def _settle(self) -> None:
        """Read the billed numbers from the usage copy taken at call time (ours alone: nothing the
        application does can change it), unless the numbers were set already (an estimate)."""
        details = self.usage_details
        try:
            object.__getattribute__(self, "usage_source")
            return  # already set: an estimate, or numbers settled before
        except AttributeError:
            pass
        usage = numbers(details) if details is not None else None
        if usage is None:
            return
        self.input_tokens = usage.input_tokens
        self.output_tokens = usage.output_tokens
        self.total_tokens = usage.total_tokens
        self.cached_input_tokens = usage.cached_input_tokens
        self.reasoning_tokens = usage.reasoning_tokens
        self.usage_source = usage.source
        if usage.units:
            self.units = {**usage.units, **(self.units or {})}

    def to_wire(self) -> dict[str, Any]:
        """The event as the CmdrData events API expects it (computed once, then cached).

        Built from `_WIRE_PLAN` (runs of plain slots read by one C-level `attrgetter` each, and the derived
        fields computed here) and zipped with `WIRE_FIELDS`: the exporter's background thread runs this for
        every event, and each µs of it is taken from the application through the GIL."""
        try:
            return object.__getattribute__(self, "_wire")  # type: ignore[no-any-return]
        except AttributeError:
            pass
        self._settle()
        start = self.request_start_time
        values: list[Any] = []
        for getter, derived in _WIRE_PLAN:
            if getter is not None:
                values += getter(self)
            elif derived == "event_id":
                values.append(self.event_id)
            elif derived == "timestamp":
                values.append(format_timestamp(start))
            elif derived == "request_end_time":
                values.append(round(start + self.latency_s, 6))
            elif derived == "request_start_time":
                values.append(round(start, 6))
            elif derived == "latency_ms":
                values.append(round(self.latency_s * 1000.0, 3))
            elif derived == "usage_details":
                # the copy taken at call time, made JSON-safe here (None / private keys / NaN dropped)
                values.append(clean(self.usage_details))
            elif derived == "sdk":
                values.append({"name": SDK_NAME, "version": __version__, "openai_version": _openai_version()})
            else:  # a field named derived here but not computed above: read like a plain one
                values.append(getattr(self, derived))
        wire = dict(zip(WIRE_FIELDS, values))
        self._wire = wire
        return wire

    def to_json(self) -> bytes:
        """The wire form as compact UTF-8 JSON, serialized once so every retry sends identical bytes."""
        try:
            return object.__getattribute__(self, "_json")  # type: ignore[no-any-return]
        except AttributeError:
            pass
        # allow_nan=False: NaN / Infinity are not JSON; the exporter counts the ValueError as invalid
        self._json = _ENCODER.encode(self.to_wire()).encode("utf-8")
        return self._json

    def __repr__(self) -> str:
        return f"<UsageEvent {self.event_id} api={self.api} customer={self.customer_id!r}>"


def _error_code_from_body(exc: BaseException) -> Any:
    """The error's `code` from its body, for the releases that do not set `exc.code`: openai < 1.2 kept the
    whole `{"error": {...}}` body on the exception, and 1.0.x kept no body at all (only the response, already
    read; a response not read yet, a streamed one, is left alone)."""
    body = getattr(exc, "body", None)
    if body is None:
        response = getattr(exc, "response", None)
        try:
            body = response.json() if response is not None and getattr(response, "is_closed", False) else None
        except Exception:
            return None
    if not isinstance(body, dict):
        return None
    inner = body.get("error")
    return inner.get("code") if isinstance(inner, dict) else body.get("code")


def _wire_plan() -> tuple[tuple[Any, str], ...]:
    """`WIRE_FIELDS` as runs of plain slots (one `attrgetter` each, returning a tuple) and derived fields."""
    derived = (*_DERIVED, "usage_details")
    plan: list[tuple[Any, str]] = []
    run: list[str] = []
    for name in (*WIRE_FIELDS, None):
        if name is not None and name not in derived:
            run.append(name)
            continue
        if run:
            getter = operator.attrgetter(*run)
            plan.append(((lambda obj, g=getter: (g(obj),)) if len(run) == 1 else getter, ""))
            run = []
        if name is not None:
            plan.append((None, name))
    return tuple(plan)


_WIRE_PLAN = _wire_plan()
# One encoder for every event (`json.dumps` with options builds a new one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str, allow_nan=False)


def assign_ids(events: list[Any]) -> None:
    """Draw the random bytes of every id still undrawn in `events` with one `os.urandom` call.

    The exporter's intake thread calls this once per batch: `os.urandom` releases the GIL, and each
    release costs an application busy on the CPU a thread switch; one per batch instead of one per event."""
    todo = [event for event in events if isinstance(event, UsageEvent)]
    if not todo:
        return
    raw = os.urandom(16 * len(todo))
    with _id_lock:  # an id read concurrently (event_id) is drawn once either way
        for i, event in enumerate(todo):
            try:
                object.__getattribute__(event, "_id_bytes")
            except AttributeError:
                event._id_bytes = raw[16 * i : 16 * i + 16]
