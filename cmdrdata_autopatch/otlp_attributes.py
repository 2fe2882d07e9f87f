"""A usage event as OpenTelemetry attributes: GenAI semantic-convention names where one exists, `cmdrdata.*`
for the rest (docs/otlp.md has the table).

Pure and free of the OpenTelemetry SDK, so the mapping is testable (and importable on any Python) without the
`otlp` extra. Every wire field of the event (DESIGN.md section 4) lands somewhere: in an attribute, or (the
`timestamp`) in the log record's own timestamp. Attribute values are str, bool, int or float only (what
every OTLP backend accepts); nested values (`usage_details`, a non-scalar metadata value) travel as compact
JSON text. A field without a value is left out: OpenTelemetry has no null attribute.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

# our `provider` field -> gen_ai.provider.name (semconv registry values). A base-URL host that is not one of
# these is an OpenAI-compatible server spoken to with the openai SDK: the provider stays "openai" and the
# host goes to server.address.
PROVIDER_NAMES = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "api.groq.com": "groq",
    "api.deepseek.com": "deepseek",
    "api.x.ai": "x_ai",
    "api.mistral.ai": "mistral_ai",
    "api.perplexity.ai": "perplexity",
    "generativelanguage.googleapis.com": "gcp.gemini",
}
SERVER_ADDRESSES = {"openai": "api.openai.com"}

# api prefix -> gen_ai.operation.name (well-known values of the semconv registry); other APIs keep their own
# name as a custom value, as the convention allows.
OPERATIONS = (
    ("chat.completions", "chat"),
    ("beta.chat.completions", "chat"),
    ("responses", "chat"),
    ("beta.responses", "chat"),
    ("realtime", "chat"),
    ("beta.realtime", "chat"),
    ("embeddings", "embeddings"),
    ("completions", "text_completion"),
    ("images", "generate_content"),
    ("audio.speech", "generate_content"),
)

# wire field -> attribute name, for the fields copied as they are (None values are left out)
PLAIN = (
    ("event_id", "cmdrdata.event.id"),
    ("customer_id", "cmdrdata.customer.id"),
    ("provider", "cmdrdata.provider"),
    ("api", "cmdrdata.api"),
    ("input_tokens", "gen_ai.usage.input_tokens"),
    ("output_tokens", "gen_ai.usage.output_tokens"),
    ("total_tokens", "cmdrdata.usage.total_tokens"),
    ("cached_input_tokens", "cmdrdata.usage.cached_input_tokens"),
    ("reasoning_tokens", "cmdrdata.usage.reasoning_tokens"),
    ("usage_source", "cmdrdata.usage.source"),
    ("service_tier", "cmdrdata.service_tier"),
    ("source_id", "cmdrdata.source.id"),
    ("service", "cmdrdata.service"),
    ("environment", "cmdrdata.environment"),
    ("streaming", "cmdrdata.streaming"),
    ("request_id", "cmdrdata.request.id"),
    ("request_start_time", "cmdrdata.request.start_time"),
    ("request_end_time", "cmdrdata.request.end_time"),
    ("latency_ms", "cmdrdata.latency_ms"),
    ("time_to_first_token_ms", "cmdrdata.time_to_first_token_ms"),
    ("error_occurred", "cmdrdata.error.occurred"),
    ("error_type", "error.type"),
    ("error_code", "cmdrdata.error.code"),
    ("http_status", "http.response.status_code"),
    ("error_message", "cmdrdata.error.message"),
)
# a second, standard name for a value that also has its cmdrdata.* one (dashboards built on semconv)
ALIASES = (
    ("cached_input_tokens", "gen_ai.usage.cache_read.input_tokens"),
    ("reasoning_tokens", "gen_ai.usage.reasoning.output_tokens"),
    ("service_tier", "gen_ai.openai.response.service_tier"),
    ("source_id", "gen_ai.response.id"),
)
EVENT_NAME = "cmdrdata.usage"


def provider_name(provider: Optional[str]) -> str:
    """gen_ai.provider.name for our `provider` field (see PROVIDER_NAMES)."""
    return PROVIDER_NAMES.get(provider or "openai", "openai")


def server_address(provider: Optional[str]) -> Optional[str]:
    """The API host when we know it: api.openai.com, or the host of an OpenAI-compatible server."""
    if provider is None or provider == "azure":
        return None  # an Azure client's resource host is not kept in the event
    return SERVER_ADDRESSES.get(provider, provider)


def operation_name(api: str) -> str:
    """gen_ai.operation.name for an API name (`chat.completions` -> `chat`); unknown APIs keep their name."""
    for prefix, name in OPERATIONS:
        if api == prefix or api.startswith(prefix + "."):
            return name
    return api


def scalar(value: Any) -> Any:
    """A value an OTLP attribute can hold: str/bool/int/finite float as is, anything else as JSON text."""
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str, sort_keys=True)


def attributes(wire: dict[str, Any]) -> dict[str, Any]:
    """The log record attributes for one event's wire form (`UsageEvent.to_wire()`)."""
    out: dict[str, Any] = {
        "gen_ai.provider.name": provider_name(wire.get("provider")),
        "gen_ai.operation.name": operation_name(str(wire.get("api") or "")),
    }
    out["gen_ai.system"] = out["gen_ai.provider.name"]  # the older name, still read by many backends
    address = server_address(wire.get("provider"))
    if address:
        out["server.address"] = address
    model = wire.get("model")
    if model is not None:
        # the event keeps one model: the one the response named, else the one asked for
        out["gen_ai.request.model"] = model
        out["gen_ai.response.model"] = model
    for field, name in PLAIN:
        value = wire.get(field)
        if value is not None:
            out[name] = scalar(value)
    for field, name in ALIASES:
        value = wire.get(field)
        if value is not None:
            out[name] = scalar(value)
    ttft = wire.get("time_to_first_token_ms")
    if isinstance(ttft, (int, float)) and not isinstance(ttft, bool):
        out["gen_ai.response.time_to_first_chunk"] = ttft / 1000.0
    details = wire.get("usage_details")
    if details is not None:
        out["cmdrdata.usage.details"] = scalar(details)
    for key, value in (wire.get("units") or {}).items():
        if value is not None:
            out[f"cmdrdata.units.{key}"] = scalar(value)
    for key, value in (wire.get("metadata") or {}).items():
        if value is not None:
            out[f"cmdrdata.metadata.{key}"] = scalar(value)
    sdk = wire.get("sdk") or {}
    for key in ("name", "version", "openai_version"):
        if sdk.get(key) is not None:
            out[f"cmdrdata.sdk.{key}"] = scalar(sdk[key])
    return out


def body(wire: dict[str, Any]) -> str:
    """A short human line for the log record's body (the attributes carry the data)."""
    parts = [f"{wire.get('api')}", str(wire.get("model") or "?")]
    if wire.get("customer_id"):
        parts.append(f"customer={wire['customer_id']}")
    parts.append(f"input={wire.get('input_tokens', 0)} output={wire.get('output_tokens', 0)}")
    for key, value in (wire.get("units") or {}).items():
        parts.append(f"{key}={value}")
    if wire.get("error_occurred"):
        parts.append(f"error={wire.get('error_type') or 'unknown'}")
    return "usage " + " ".join(parts)


def token_points(wire: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """The `gen_ai.client.token.usage` histogram points of one event: (tokens, attributes) for input and
    output, with the semconv attributes and the customer. Failed calls with no tokens record nothing."""
    common: dict[str, Any] = {
        "gen_ai.provider.name": provider_name(wire.get("provider")),
        "gen_ai.system": provider_name(wire.get("provider")),
        "gen_ai.operation.name": operation_name(str(wire.get("api") or "")),
    }
    model = wire.get("model")
    if model is not None:
        common["gen_ai.request.model"] = model
        common["gen_ai.response.model"] = model
    address = server_address(wire.get("provider"))
    if address:
        common["server.address"] = address
    if wire.get("customer_id"):
        common["cmdrdata.customer.id"] = wire["customer_id"]
    if wire.get("error_type"):
        common["error.type"] = wire["error_type"]
    points: list[tuple[int, dict[str, Any]]] = []
    for kind in ("input", "output"):
        tokens = wire.get(f"{kind}_tokens") or 0
        if isinstance(tokens, int) and tokens > 0:
            points.append((tokens, {**common, "gen_ai.token.type": kind}))
    return points
