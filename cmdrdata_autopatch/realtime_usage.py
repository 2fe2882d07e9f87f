"""Pure extraction of billable usage from WebSocket server events (Realtime, Responses, Live).

A WebSocket session bills per server event, not per call: Realtime per `response.done` (tokens, split by
text / audio / image, cached included) and per input-audio transcription (tokens, or seconds of audio);
the Responses WebSocket per terminal response event; Live by cumulative session seconds, plus the
Responses and Decisions work it delegates. This module turns one parsed server event (an SDK model, or a
plain dict for the nested events Live carries) into a `Billing`: plain numbers and short strings copied
out of the event, so nothing we keep references the application's objects.

Every read tolerates attributes and dict keys, absent fields and older shapes (the beta Realtime events of
1.58+ and the GA ones of 1.103+ differ only in optional fields). Nothing here imports `openai`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from .tool_units import response_units
from .usage import MAX_SANE_TOKENS as MAX_SANE
from .usage import count, get

_MAX_DEPTH = 8

# Server event types that can carry something we bill or need (everything else is skipped at once).
REALTIME_SESSION = frozenset(
    {"session.created", "session.updated", "transcription_session.created", "transcription_session.updated"}
)
REALTIME_RESPONSE_DONE = "response.done"
REALTIME_TRANSCRIPTION = "conversation.item.input_audio_transcription.completed"
RESPONSES_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
LIVE_SESSION = frozenset({"session.started", "session.updated"})
LIVE_USAGE = "session.usage.updated"
LIVE_CLOSED = "session.closed"
LIVE_RESPONSE = "response.event"
LIVE_DECISION = "decision.event"


@dataclass
class Billing:
    """What one billable server event reports, ready to become a usage event."""

    api: str
    source_id: Optional[str]
    part: Optional[str] = None
    model: Optional[str] = None
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    usage_details: Optional[dict[str, Any]] = None
    usage_source: str = "none"
    units: Optional[dict[str, Any]] = None
    service_tier: Optional[str] = None
    error_type: Optional[str] = None
    error_code: Optional[str] = None
    error_message: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)


def text(value: Any) -> Optional[str]:
    """A non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def seconds(value: Any) -> Optional[float]:
    """A sane non-negative duration in seconds, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and 0 <= number < MAX_SANE else None


def plain(obj: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of an SDK model / dict / list, without `None` values (copied now, kept by value)."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if depth >= _MAX_DEPTH:
        return None
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        return [plain(item, depth + 1) for item in obj]
    else:
        fields = getattr(obj, "__dict__", None)  # pydantic v1 and v2 models keep their fields here
        if not isinstance(fields, dict):
            return None
        extra = getattr(obj, "__pydantic_extra__", None)  # v2 keeps unknown fields apart
        items = {**fields, **extra}.items() if isinstance(extra, dict) else fields.items()
    out = {}
    for key, value in items:
        if isinstance(key, str) and not key.startswith("_"):
            cleaned = plain(value, depth + 1)
            if cleaned is not None:
                out[key] = cleaned
    return out


def _token_details(usage: Any, *names: str) -> Any:
    for name in names:
        found = get(usage, name)
        if found is not None:
            return found
    return None


# --- Realtime --------------------------------------------------------------------------------------


def realtime_session(event: Any) -> tuple[Optional[str], Optional[str], Optional[str]]:
    """(session id, model, transcription model) named by a Realtime `session.created`/`.updated`."""
    session = get(event, "session")
    model = text(get(session, "model"))
    transcription = get(get(get(get(session, "audio"), "input"), "transcription"), "model")  # GA
    if transcription is None:  # beta: session.input_audio_transcription.model
        transcription = get(get(session, "input_audio_transcription"), "model")
    return text(get(session, "id")), model, text(transcription)


def realtime_response(event: Any, model: Optional[str]) -> Billing:
    """One `response.done`: tokens with the text / audio / image / cached split kept in `usage_details`."""
    response = get(event, "response")
    usage = get(response, "usage")
    billing = Billing("realtime", text(get(response, "id")), model=model)
    if usage is not None:
        billing.usage_source = "reported"
        billing.input_tokens = count(get(usage, "input_tokens")) or 0
        billing.output_tokens = count(get(usage, "output_tokens")) or 0
        total = count(get(usage, "total_tokens"))
        billing.total_tokens = total if total is not None else billing.input_tokens + billing.output_tokens
        details = _token_details(usage, "input_token_details", "input_tokens_details")
        billing.cached_input_tokens = count(get(details, "cached_tokens")) or 0
        billing.usage_details = plain(usage)
    status = get(response, "status")
    if status == "failed":
        error = get(get(response, "status_details"), "error")
        billing.error_type = text(get(error, "type")) or "response.failed"
        billing.error_code = text(get(error, "code"))
    billing.extra["status"] = text(status)
    return billing


def realtime_transcription(event: Any, model: Optional[str]) -> Optional[Billing]:
    """One completed input-audio transcription that reports usage: tokens, or audio seconds."""
    usage = get(event, "usage")
    if usage is None:
        return None
    item = text(get(event, "item_id"))
    index = count(get(event, "content_index"))
    billing = Billing("realtime.transcription", item, part=None if index is None else str(index), model=model)
    billing.usage_details = plain(usage)
    duration = seconds(get(usage, "seconds"))
    if get(usage, "type") == "duration" or (duration is not None and get(usage, "input_tokens") is None):
        if duration is None:
            return None
        billing.units = {"audio_seconds": duration}
        billing.usage_source = "reported"
        return billing
    billing.input_tokens = count(get(usage, "input_tokens")) or 0
    billing.output_tokens = count(get(usage, "output_tokens")) or 0
    total = count(get(usage, "total_tokens"))
    billing.total_tokens = total if total is not None else billing.input_tokens + billing.output_tokens
    billing.usage_source = "reported"
    return billing


# --- Responses (over the WebSocket, and delegated by Live) -------------------------------------------


def responses_terminal(event: Any) -> Optional[Billing]:
    """One `response.completed` / `.incomplete` / `.failed`: the response's usage and its tool units."""
    response = get(event, "response")
    if response is None:
        return None
    billing = Billing("responses", text(get(response, "id")), model=text(get(response, "model")))
    billing.service_tier = text(get(response, "service_tier"))
    usage = get(response, "usage")
    if usage is not None:
        billing.usage_source = "reported"
        billing.input_tokens = count(get(usage, "input_tokens")) or 0
        billing.output_tokens = count(get(usage, "output_tokens")) or 0
        total = count(get(usage, "total_tokens"))
        billing.total_tokens = total if total is not None else billing.input_tokens + billing.output_tokens
        billing.cached_input_tokens = count(get(get(usage, "input_tokens_details"), "cached_tokens")) or 0
        billing.reasoning_tokens = count(get(get(usage, "output_tokens_details"), "reasoning_tokens")) or 0
        billing.usage_details = plain(usage)
    billing.units = response_units(response)
    if get(event, "type") == "response.failed":
        error = get(response, "error")
        billing.error_type = "response.failed"
        billing.error_code = text(get(error, "code"))
    return billing


# --- Live ------------------------------------------------------------------------------------------


def live_session(event: Any) -> tuple[Optional[str], Optional[str]]:
    """(session id, model) of a Live `session.started` / `.updated` / `.closed`."""
    session = get(event, "session")
    return text(get(session, "id")), text(get(session, "model"))


def live_usage(event: Any) -> Optional[dict[str, Any]]:
    """The cumulative session usage a Live event carries, copied (`seconds`, maybe active / paused)."""
    usage = get(event, "usage")
    if seconds(get(usage, "seconds")) is None:
        return None
    copied = plain(usage)
    return copied if isinstance(copied, dict) else None


def live_billing(
    session_id: Optional[str], model: Optional[str], usage: dict[str, Any], final: bool
) -> Billing:
    """The session's seconds: the final `session.closed` usage, or the last cumulative value (estimated)."""
    billing = Billing("live", session_id, model=model, usage_details=dict(usage))
    billing.units = {"session_seconds": seconds(usage.get("seconds")) or 0.0}
    billing.usage_source = "reported" if final else "estimated"
    return billing


def live_decision(event: Any) -> Optional[Billing]:
    """A Live `decision.event` whose nested Decision reports usage."""
    decision = get(get(event, "event"), "decision")
    usage = get(decision, "usage")
    if usage is None:
        return None
    source = (
        text(get(event, "delegation_id")) or text(get(event, "trigger_id")) or text(get(event, "event_id"))
    )
    billing = Billing("decisions", source, model=text(get(decision, "model")), usage_source="reported")
    billing.input_tokens = count(get(usage, "input_tokens")) or 0
    billing.output_tokens = count(get(usage, "output_tokens")) or 0
    total = count(get(usage, "total_tokens"))
    billing.total_tokens = total if total is not None else billing.input_tokens + billing.output_tokens
    billing.cached_input_tokens = count(get(get(usage, "input_tokens_details"), "cached_tokens")) or 0
    billing.reasoning_tokens = count(get(get(usage, "output_tokens_details"), "reasoning_tokens")) or 0
    billing.usage_details = plain(usage)
    return billing
