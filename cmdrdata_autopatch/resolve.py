"""Fill an event from what the SDK parsed: model, service tier, request id, provider, usage.

Runs on the caller's thread at the moment the result is handed over (or a stream ends), and copies the
few strings and integers it needs, so the event never refers to the response afterwards. Pure apart from
the small provider cache; knows nothing about wrappers, streams or delivery.
"""

from __future__ import annotations

from typing import Any

from .events import UsageEvent
from .tool_units import chat_search_units, merge_units, response_units
from .usage import MAX_SANE_TOKENS, Usage, copy_usage, estimate, get, usable


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
    """Copy normalized (estimated) usage into the event's slots."""
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


def set_usage(
    event: UsageEvent,
    copied: dict[str, Any] | None,
    usage_kind: str,
    kwargs: dict[str, Any],
    result: Any,
    items: int | None = None,
) -> None:
    """The event's usage: the copy OpenAI reported (its numbers are read from our copy when the event is
    first serialized), or, when there is none worth billing, the estimate, made now."""
    if usable(copied):
        event.usage_details = copied
        if usage_kind == "images":  # images are billed per image besides the tokens
            data = get(result, "data")
            if isinstance(data, (list, tuple)):
                event.units = {"images": len(data)}
        return
    apply_usage(event, estimate(usage_kind, kwargs, result, items))


def _request_id(result: Any) -> str | None:
    """`_request_id` kept in pydantic's private storage (where a model declares it private)."""
    private = getattr(result, "__pydantic_private__", None)
    return _text(private.get("_request_id")) if type(private) is dict else None


def fill_from_result(
    event: UsageEvent, usage_kind: str, kwargs: dict[str, Any], result: Any, http_response: Any = None
) -> None:
    """Everything billed about a finished, non-streamed call, read from its parsed result now."""
    fields = getattr(result, "__dict__", None)
    if type(fields) is not dict:  # not a model: a raw body the SDK had read, or an unexpected result
        fields = result if isinstance(result, dict) else {}
    else:
        extra = getattr(result, "__pydantic_extra__", None)  # fields the installed SDK does not know yet
        if extra:  # (`usage` on images before openai 1.76, `service_tier` before it was declared...)
            fields = {**fields, **extra}
    # a pydantic model (v1 or v2) keeps its fields, and the SDK its `_request_id`, in `__dict__`: one
    # dict read each, instead of attribute lookups (a missing `_request_id` costs ~1.5 us through pydantic)
    get_ = fields.get
    model = get_("model")
    if type(model) is str and model:
        event.model = model
    else:
        nested = model_of(result) if model is None and result is not None else None  # a wrapped response
        if nested is not None:
            event.model = nested
        elif event.model is None:  # the response names none: the requested model
            event.model = requested_model(kwargs)
    tier = get_("service_tier")
    if tier and type(tier) is str:
        event.service_tier = tier
    request_id = get_("_request_id")
    if request_id is None:
        request_id = _request_id(result) if http_response is None else header_request_id(http_response)
    if type(request_id) is str:
        event.request_id = request_id
    usage = get_("usage")
    copied = copy_usage(usage) if usage is not None else None
    # the hot path's shortcut for `usable`: a sane input count (chat's or the Responses' field name)
    tokens = None if copied is None else copied.get("prompt_tokens", copied.get("input_tokens"))
    if type(tokens) is int and 0 <= tokens < MAX_SANE_TOKENS and usage_kind != "images":
        event.usage_details = copied  # the common case, inline: the numbers settle from it when sent
    else:
        set_usage(event, copied, usage_kind, kwargs, result)
    if "output" in fields:  # a Responses `Response`: hosted tools bill apart from the tokens
        add_units(event, response_units(fields))
    elif usage_kind == "chat" and (
        "web_search_options" in kwargs
        or "-search-" in str(event.model)
        or "-search-" in str(kwargs.get("model"))
    ):  # a cheap superset of `chat_search_units`'s test, so an ordinary chat call skips it
        add_units(event, chat_search_units(kwargs, event.model))


def add_units(event: UsageEvent, units: dict[str, Any] | None) -> None:
    """Add billed quantities (hosted tools, images) to what the event already carries."""
    if units:
        event.units = merge_units(event.units, units)


def requested_model(kwargs: dict[str, Any]) -> str | None:
    """The model the caller asked for (the event's model until the response names one)."""
    return _text(kwargs.get("model"))
