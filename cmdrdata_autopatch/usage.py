"""Pure usage extraction: an OpenAI result (or what a stream left behind) -> normalized `Usage`.

Tolerant by construction: every read works on attributes and on dict keys (older SDKs hand newer fields
back as plain dicts), accepts every field-name variant across releases and endpoints (`prompt_tokens` vs
`input_tokens`, `prompt_tokens_details` vs `input_tokens_details` vs `input_token_details`, transcription
`seconds` vs `duration`), and treats anything that is not a sane non-negative integer as absent.

`usage_source` says how much to trust the numbers:
- `reported`: read from the usage object OpenAI returned.
- `estimated`: derived by us because OpenAI reported none. Input tokens are estimated as
  ceil(characters / 4) of the text sent, plus 4 tokens of framing per chat message (the rule of thumb
  OpenAI documents for English text); output tokens as ceil(characters / 4) of a response's text, or,
  for a stream, as the number of content chunks / text deltas it showed (OpenAI streams one token per
  chunk). Speech input is counted in characters (`units.characters`, which is how text-to-speech is
  billed); images are counted (`units.images`); audio length comes from the
  response's `duration` where the response format carries it (`units.audio_seconds`).
- `none`: nothing could be measured or estimated. Token fields are then 0 and must not be read as
  "this call was free".

Nothing here imports `openai`, `httpx` or `httpx2`; this module runs in the exporter's background thread.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .events import UsageEvent

MAX_SANE_TOKENS = 1 << 40  # anything larger is garbage, not usage


class Usage(NamedTuple):
    """Normalized usage of one call."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    details: dict[str, Any] | None = None
    source: str = "none"
    units: dict[str, Any] | None = None


def get(obj: Any, name: str) -> Any:
    """`obj.name` or `obj[name]`, or None; never raises."""
    if obj is None:
        return None
    try:
        if isinstance(obj, dict):
            return obj.get(name)
        return getattr(obj, name, None)
    except Exception:
        return None


def _count(value: Any) -> int | None:
    """A token count if `value` is a sane non-negative integer (or an integral float), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < MAX_SANE_TOKENS else None
    if isinstance(value, float) and value.is_integer() and 0 <= value < MAX_SANE_TOKENS:
        return int(value)
    return None


def _first_count(obj: Any, *names: str) -> int | None:
    for name in names:
        value = _count(get(obj, name))
        if value is not None:
            return value
    return None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value < 0 or value > 10**9:
        return None
    return float(value)


def to_plain(obj: Any, depth: int = 0) -> Any:
    """A JSON-friendly copy of a usage object (pydantic v1/v2 model, dict, list, scalar)."""
    if depth > 8:
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and (obj != obj or obj in (math.inf, -math.inf)):
            return None
        return obj
    if isinstance(obj, dict):
        return {str(k): to_plain(v, depth + 1) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, depth + 1) for v in obj]
    for dump in ("model_dump", "dict"):  # pydantic v2, then v1
        method = getattr(obj, dump, None)
        if callable(method):
            try:
                if dump == "model_dump":
                    try:  # a malformed payload must not make pydantic print warnings in the user's app
                        dumped = method(exclude_none=True, warnings=False)
                    except TypeError:
                        dumped = method(exclude_none=True)
                else:
                    dumped = method()
                if isinstance(dumped, dict):
                    return to_plain(dumped, depth + 1)
            except Exception:
                pass
    try:
        attrs = vars(obj)
    except TypeError:
        return str(obj)
    return {k: to_plain(v, depth + 1) for k, v in attrs.items() if not k.startswith("_")}


def normalize(usage: Any) -> Usage | None:
    """Normalize any usage object OpenAI returns; None when it carries no usable number."""
    if usage is None or isinstance(usage, (bool, int, float, str, bytes)):
        return None
    details = to_plain(usage)
    if not isinstance(details, dict):
        details = None
    inp = _first_count(usage, "prompt_tokens", "input_tokens")
    out = _first_count(usage, "completion_tokens", "output_tokens")
    total = _first_count(usage, "total_tokens")
    in_details = get(usage, "prompt_tokens_details") or get(usage, "input_tokens_details")
    in_details = in_details or get(usage, "input_token_details")
    out_details = get(usage, "completion_tokens_details") or get(usage, "output_tokens_details")
    out_details = out_details or get(usage, "output_token_details")
    cached = _first_count(in_details, "cached_tokens")
    reasoning = _first_count(out_details, "reasoning_tokens")
    units: dict[str, Any] | None = None
    if get(usage, "type") == "duration" or (inp is None and out is None):
        secs = _seconds(get(usage, "seconds"))
        if secs is None:
            secs = _seconds(get(usage, "duration"))  # the field's name in openai 1.91.0-1.94.0
        if secs is not None:
            units = {"audio_seconds": secs}
    if inp is None and out is None and total is None and units is None:
        return None
    inp = inp or 0
    out = out or 0
    if total is None:
        total = inp + out
    return Usage(inp, out, total, cached or 0, reasoning or 0, details, "reported", units)


# --- estimates ------------------------------------------------------------------------------------


def estimate_tokens(chars: int) -> int:
    """ceil(characters / 4): OpenAI's rule of thumb for English text."""
    return (chars + 3) // 4


def _text_chars(value: Any, depth: int = 0) -> int:
    """Characters of text in a prompt-like value: a string, a list of strings or of content parts."""
    if depth > 6 or value is None:
        return 0
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        total = 0
        for key in ("text", "content", "input_text", "output_text", "arguments"):
            total += _text_chars(value.get(key), depth + 1)
        return total
    if isinstance(value, (list, tuple)):
        return sum(_text_chars(v, depth + 1) for v in value)
    # a pydantic message object, or anything with a text-like attribute
    return sum(_text_chars(get(value, key), depth + 1) for key in ("text", "content"))


def _token_list_len(value: Any) -> int | None:
    """Embeddings and completions accept token ids directly; then the count is exact."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
        return len(value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple)) for v in value):
        lengths = [_token_list_len(v) for v in value]
        if all(n is not None for n in lengths):
            return sum(n for n in lengths if n is not None)
    return None


def estimate_input_tokens(api: str, kwargs: dict[str, Any]) -> int:
    """Estimate prompt tokens from the request keywords."""
    if api == "chat.completions":
        messages = kwargs.get("messages")
        if isinstance(messages, (list, tuple)):
            return sum(4 + estimate_tokens(_text_chars(get(m, "content"))) for m in messages)
        return 0
    for key in ("input", "prompt", "instructions"):
        value = kwargs.get(key)
        exact = _token_list_len(value)
        if exact is not None:
            return exact
    chars = sum(_text_chars(kwargs.get(key)) for key in ("input", "prompt", "instructions"))
    return estimate_tokens(chars)


def _output_chars_from_result(result: Any) -> int:
    chars = 0
    choices = get(result, "choices")
    if isinstance(choices, (list, tuple)):
        for choice in choices:
            chars += _text_chars(get(get(choice, "message"), "content"))
            chars += _text_chars(get(choice, "text"))
    output_text = get(result, "output_text")
    if isinstance(output_text, str):
        chars += len(output_text)
    return chars


TEXT_APIS = ("chat.completions", "completions", "responses", "edits")


def estimate(api: str, kwargs: dict[str, Any], result: Any, stream_tokens: int | None = None) -> Usage:
    """The best estimate for a call that reported no usage (see the module docstring for the method)."""
    if api in TEXT_APIS:
        inp = estimate_input_tokens(api, kwargs)
        out = stream_tokens or 0
        if result is not None:
            out += estimate_tokens(_output_chars_from_result(result))
        if inp == 0 and out == 0:
            return Usage()
        return Usage(inp, out, inp + out, source="estimated")
    if api == "embeddings":
        inp = estimate_input_tokens(api, kwargs)
        return Usage(inp, 0, inp, source="estimated") if inp else Usage()
    if api == "audio.speech":
        text = kwargs.get("input")
        if isinstance(text, str):
            inp = estimate_tokens(len(text))
            return Usage(inp, 0, inp, source="estimated", units={"characters": len(text)})
        return Usage()
    if api == "images":
        data = get(result, "data")
        if isinstance(data, (list, tuple)):
            return Usage(source="estimated", units={"images": len(data)})
        return Usage()
    if api in ("audio.transcriptions", "audio.translations"):
        seconds = _seconds(get(result, "duration"))
        if seconds is not None:
            return Usage(source="estimated", units={"audio_seconds": seconds})
    return Usage()


def extract(api: str, kwargs: dict[str, Any], result: Any, stream_tokens: int | None = None) -> Usage:
    """Usage for one call: reported where OpenAI gave it, otherwise the estimate."""
    usage = normalize(get(result, "usage")) if result is not None else None
    if usage is None:
        return estimate(api, kwargs, result, stream_tokens)
    if api == "images":
        data = get(result, "data")
        if isinstance(data, (list, tuple)):
            usage = usage._replace(units={**(usage.units or {}), "images": len(data)})
    return usage


# --- the resolver the wrappers attach to every event -----------------------------------------------


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
    """`provider_of`, remembered per base-URL object (the streaming hot path asks on every call; the SDK
    makes a new URL object whenever `base_url` is set, so a changed URL is never served stale)."""
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


def _request_id(result: Any, extra: Any) -> str | None:
    rid = get(result, "_request_id")
    if isinstance(rid, str):
        return rid
    holder = get(extra, "headers_from")
    headers = get(holder, "headers")
    if headers is not None:
        try:
            value = headers.get("x-request-id")
        except Exception:
            value = None
        if isinstance(value, str):
            return value
    return None


def resolve_event(event: UsageEvent) -> None:
    """Fill an event's usage, model, provider and request id from the raw references it carries.

    `raw_extra` (optional, a dict) may hold `stream_tokens` (content chunks a stream showed, for the
    estimate) and `headers_from`
    (an object with `.headers`, for the request id).
    """
    kwargs = event.raw_kwargs or {}
    result = event.raw_result
    extra = event.raw_extra
    if event.provider is None:
        owner = event.raw_client  # the client, or the resource instance that holds it
        client = owner if get(owner, "base_url") is not None else get(owner, "_client")
        event.provider = provider_of(client)
    model = get(result, "model")
    if not isinstance(model, str):
        model = get(get(result, "response"), "model")
    if isinstance(model, str) and model:
        event.model = model
    elif event.model is None:
        requested = kwargs.get("model")
        if isinstance(requested, str):
            event.model = requested
    if event.request_id is None:
        event.request_id = _request_id(result, extra)
    if event.error_occurred and result is None:
        return
    stream_tokens = get(extra, "stream_tokens")
    usage = extract(event.api, kwargs, result, stream_tokens if isinstance(stream_tokens, int) else None)
    event.input_tokens = usage.input_tokens
    event.output_tokens = usage.output_tokens
    event.total_tokens = usage.total_tokens
    event.cached_input_tokens = usage.cached_input_tokens
    event.reasoning_tokens = usage.reasoning_tokens
    event.usage_details = usage.details
    event.usage_source = usage.source
    event.units = usage.units
