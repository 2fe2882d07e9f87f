"""Fill an event from what the SDK parsed: model, service tier, request id, provider, usage.

Runs on the caller's thread at the moment the result is handed over (or a stream ends), and copies the
few strings and integers it needs, so the event never refers to the response afterwards. Pure apart from
the small provider cache; knows nothing about wrappers, streams or delivery.
"""

from __future__ import annotations

from typing import Any

from .events import UsageEvent
from .usage import Usage, finish, get, normalize


def provider_of(client: Any) -> str | None:
    """`azure` for Azure clients, `openai` for api.openai.com, else the base URL's host."""
    if client is None:
        return None
    if "Azure" in type(client).__name__:
        return "azure"
    host = get(get(client, "base_url"), "host")
    if not isinstance(host, str) or not host:
        return None
    if host == "api.openai.com":
        return "openai"
    if host.endswith(".openai.azure.com") or host.endswith(".cognitiveservices.azure.com"):
        return "azure"
    return host


_provider_cache: dict[int, tuple[Any, str | None]] = {}


def cached_provider_of(client: Any) -> str | None:
    """`provider_of`, remembered per base-URL object (asked on every call; the SDK makes a new URL object
    whenever `base_url` is set, so a changed URL is never served stale)."""
    url = getattr(client, "_base_url", None)
    if url is None:
        return provider_of(client)
    hit = _provider_cache.get(id(url))
    if hit is not None and hit[0] is url:
        return hit[1]
    provider = provider_of(client)
    if len(_provider_cache) >= 256:
        _provider_cache.clear()
    _provider_cache[id(url)] = (url, provider)
    return provider


def header_request_id(http_response: Any) -> str | None:
    """`x-request-id` from an HTTP response's headers (already received: no I/O), or None."""
    headers = getattr(http_response, "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("x-request-id")
    except Exception:
        return None
    return value if isinstance(value, str) else None


def _text(value: Any) -> str | None:
    return value if type(value) is str and value else None


def model_of(item: Any) -> str | None:
    """The model a result, chunk or typed stream event names (`.model`, or `.response.model`)."""
    model = _text(get(item, "model"))
    if model is None:
        model = _text(get(get(item, "response"), "model"))
    return model


def apply_usage(event: UsageEvent, usage: Usage) -> None:
    """Copy normalized usage into the event's slots."""
    if usage.source == "none" and usage.units is None:
        return  # the slots' defaults already say "none"
    event.input_tokens = usage.input_tokens
    event.output_tokens = usage.output_tokens
    event.total_tokens = usage.total_tokens
    event.cached_input_tokens = usage.cached_input_tokens
    event.reasoning_tokens = usage.reasoning_tokens
    event.usage_details = usage.details
    event.usage_source = usage.source
    event.units = usage.units


def fill_from_result(
    event: UsageEvent, usage_kind: str, kwargs: dict[str, Any], result: Any, http_response: Any = None
) -> None:
    """Everything billed about a finished, non-streamed call, read from its parsed result now."""
    model = model_of(result)
    if model is not None:
        event.model = model
    tier = _text(get(result, "service_tier"))
    if tier is not None:
        event.service_tier = tier
    request_id = _text(get(result, "_request_id"))
    if request_id is None and http_response is not None:
        request_id = header_request_id(http_response)
    if request_id is not None:
        event.request_id = request_id
    usage = normalize(get(result, "usage")) if result is not None else None
    apply_usage(event, finish(usage, usage_kind, kwargs, result))


def requested_model(kwargs: dict[str, Any]) -> str | None:
    """The model the caller asked for (the event's model until the response names one)."""
    return _text(kwargs.get("model"))
