"""Pure usage extraction: what OpenAI reported (or what a call showed) -> normalized `Usage`.

Two steps. The first runs on the caller's thread at the moment the SDK hands the result over, so nothing
the application does to the response afterwards (instructor adds running totals into `response.usage`
during retries) changes what is billed, and no response object is kept alive for the exporter:

1. `copy_usage(usage)`: a copy of the usage object made of plain dicts, read straight from the pydantic
   model's `__dict__` (plus the extra fields the installed SDK did not know), nested details included.
   A few C-level dict copies: far cheaper than `model_dump()` or reading the fields one by one.
2. `normalize(copy)`: the billed integers, tolerant of every field-name variant across releases and
   endpoints (`prompt_tokens` vs `input_tokens`, `prompt_tokens_details` vs `input_tokens_details` vs
   `input_token_details`, transcription `seconds` vs `duration`); anything that is not a sane
   non-negative integer counts as absent. It works on our own copy, so it may run later (when the event
   is first serialized) without any risk of reading what the application changed.

`usage_source` says how much to trust the numbers:
- `reported`: read from the usage object OpenAI returned.
- `estimated`: derived by us because OpenAI reported none. Input tokens are estimated as
  ceil(characters / 4) of the text sent, plus 4 tokens of framing per chat message (the rule of thumb
  OpenAI documents for English text); output tokens as ceil(characters / 4) of a response's text, or,
  for a stream, as the number of content chunks / text deltas it showed (OpenAI streams one token per
  chunk). Speech input is counted in characters (`units.characters`, how text-to-speech is billed);
  images are counted (`units.images`); audio length comes from the response's `duration` where the
  response format carries it (`units.audio_seconds`).
- `none`: nothing could be measured or estimated. Token fields are then 0 and must not be read as
  "this call was free".

Which rule applies is the table row's `usage_kind` ("chat", "text", "embeddings", "speech", "images",
"audio"); nothing here names an API. Nothing here imports `openai`, `httpx`, `httpx2` or our events.
"""

from __future__ import annotations

import types
from typing import Any, Literal, NamedTuple, Union, get_args, get_origin

MAX_SANE_TOKENS = 1 << 40  # anything larger is garbage, not usage
_MAX_DEPTH = 5
_PLAIN = (int, str, bool)
_SCALARS = frozenset((int, str, bool, float, type(None)))
_UnionType = getattr(types, "UnionType", None)  # `int | None` annotations (Python 3.10+)


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


NO_USAGE = Usage()


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


def get_field(obj: Any, name: str) -> Any:
    """`get`, plus a field newer than the installed SDK (pydantic keeps it in `__pydantic_extra__`)."""
    value = get(obj, name)
    if value is None and obj is not None and not isinstance(obj, dict):
        extra = getattr(obj, "__pydantic_extra__", None)
        if isinstance(extra, dict):
            value = extra.get(name)
    return value


def _plain(value: Any, depth: int) -> Any:
    """A JSON-safe copy of one value of a usage object (None when it holds nothing usable)."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is float:
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if depth >= _MAX_DEPTH:
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    return clean(value, depth + 1)


def _scalar_annotation(annotation: Any) -> bool:
    """True when a declared field can only hold a scalar (int, float, str, bool, None, a Literal)."""
    if annotation in _SCALARS:
        return True
    origin = get_origin(annotation)
    if origin is Literal:
        return True
    if origin is Union or (_UnionType is not None and origin is _UnionType):
        return all(_scalar_annotation(arg) for arg in get_args(annotation))
    return False


def _object_fields(cls: type) -> tuple[str, ...] | None:
    """The declared fields of a pydantic-v2 model class that may hold objects (details models, lists),
    or None when the class has no such plan (a dict, a pydantic-v1 model): then every value is looked at.

    Read once per class from its declared annotations, never from one instance's values: a field that is
    None in the first response seen and a details model in the next is still copied."""
    fields = getattr(cls, "__pydantic_fields__", None)
    if type(fields) is not dict or not hasattr(cls, "__pydantic_extra__"):
        return None
    try:
        names = tuple(
            n for n, info in fields.items() if not _scalar_annotation(getattr(info, "annotation", 0))
        )
    except Exception:
        return None
    return names or FLAT


FLAT: tuple[str, ...] = ()  # the plan of a model of scalars only (a details model)
# usage model class -> its object fields (None: no plan). A handful of classes per SDK release.
_plans: dict[type, tuple[str, ...] | None] = {}


def copy_usage(obj: Any, depth: int = 0) -> dict[str, Any] | None:
    """A copy of a usage object made of dicts (values as they are: `clean` makes them JSON-safe later).

    The details objects inside are copied too (and dicts and lists, recursively), so every billed number
    is the one OpenAI reported whatever the application does to the response afterwards. On the hot path
    (a pydantic-v2 usage model) the class's plan names the few fields that hold objects, so the copy is
    one C-level `dict.copy()` per model and no look at the integer fields.
    """
    cls = type(obj)
    try:
        plan = _plans[cls]
    except KeyError:
        if len(_plans) >= 512:  # generated classes must not grow it without bound
            _plans.clear()
        plan = _plans[cls] = _object_fields(cls)
    if plan is not None:
        out: dict[str, Any] = obj.__dict__.copy()
        for key in plan:
            value = out.get(key)
            if value is None:
                continue
            if _plans.get(type(value)) is FLAT and not value.__pydantic_extra__:
                out[key] = value.__dict__.copy()  # a details model of scalars (the common case), inline
            else:
                out[key] = _copy_nested(value, depth + 1)
        extra = obj.__pydantic_extra__  # fields the installed SDK does not know: plain JSON values
        if extra:
            for key, value in extra.items():
                out[key] = value if type(value) in _SCALARS else _copy_nested(value, depth + 1)
        return out
    source = getattr(obj, "__dict__", None)
    if type(source) is dict:  # a pydantic-v1 model: its extras live in __dict__ too
        out = source.copy()
    elif isinstance(obj, dict):
        out = dict(obj)
    else:
        return None
    for key, value in out.items():
        if type(value) not in _SCALARS:
            out[key] = _copy_nested(value, depth + 1)
    return out


def _copy_nested(value: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, (list, tuple)):
        return [v if type(v) in _SCALARS else _copy_nested(v, depth + 1) for v in value]
    return copy_usage(value, depth)


_TOKEN_KEYS = ("prompt_tokens", "input_tokens", "completion_tokens", "output_tokens", "total_tokens")


def usable(details: dict[str, Any] | None) -> bool:
    """True when a usage copy carries a number `numbers` will bill (cheap: the hot path asks it)."""
    if not details:
        return False
    get_ = details.get
    for key in _TOKEN_KEYS:
        value = get_(key)
        if type(value) is int:
            if 0 <= value < MAX_SANE_TOKENS:
                return True
        elif value is not None and count(value) is not None:
            return True
    return _seconds(get_("seconds")) is not None or _seconds(get_("duration")) is not None


def clean(obj: Any, depth: int = 0) -> dict[str, Any] | None:
    """A JSON-safe plain dict of a usage object or copy (`None`s, private keys and NaN dropped)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        source: Any = obj
    else:
        source = getattr(obj, "__dict__", None)
        if not isinstance(source, dict):
            return None
        extra = getattr(obj, "__pydantic_extra__", None)  # fields newer than the installed SDK
        if extra:
            source = {**source, **extra}
    out: dict[str, Any] = {}
    for key, value in source.items():
        if value is None or type(key) is not str or key[:1] == "_":
            continue
        if type(value) in _PLAIN:
            out[key] = value
        else:
            value = _plain(value, depth)
            if value is not None:
                out[key] = value
    return out


def count(value: Any) -> int | None:
    """A count (tokens, searches...): a sane non-negative integer (an integral float counts), else None."""
    if type(value) is int:
        return value if 0 <= value < MAX_SANE_TOKENS else None
    if isinstance(value, float) and value.is_integer() and 0 <= value < MAX_SANE_TOKENS:
        return int(value)
    return None


def _first_count(obj: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = count(obj.get(name))
        if value is not None:
            return value
    return None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value < 0 or value > 10**9:
        return None
    return float(value)


def _sub(details: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        value = details.get(name)
        if value:
            return value if isinstance(value, dict) else {}
    return {}


def normalize(usage: Any) -> Usage | None:
    """The billed numbers of a usage object (copied first); None when it carries no usable number."""
    return numbers(copy_usage(usage))


def numbers(details: dict[str, Any] | None) -> Usage | None:
    """The billed numbers of a usage copy (`copy_usage`); `details` is kept as is (`clean` it to send)."""
    if not details:
        return None
    inp = _first_count(details, "prompt_tokens", "input_tokens")
    out = _first_count(details, "completion_tokens", "output_tokens")
    total = _first_count(details, "total_tokens")
    cached = count(
        _sub(details, "prompt_tokens_details", "input_tokens_details", "input_token_details").get(
            "cached_tokens"
        )
    )
    reasoning = count(
        _sub(details, "completion_tokens_details", "output_tokens_details", "output_token_details").get(
            "reasoning_tokens"
        )
    )
    units: dict[str, Any] | None = None
    if details.get("type") == "duration" or (inp is None and out is None):
        secs = _seconds(details.get("seconds"))
        if secs is None:
            secs = _seconds(details.get("duration"))  # the field's name in openai 1.91.0-1.94.0
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


def estimate_input_tokens(usage_kind: str, kwargs: dict[str, Any]) -> int:
    """Estimate prompt tokens from the request keywords (or the request body)."""
    if usage_kind == "chat":
        messages = kwargs.get("messages")
        if isinstance(messages, (list, tuple)):
            return sum(4 + estimate_tokens(_text_chars(get(m, "content"))) for m in messages)
        return 0
    for key in ("input", "prompt", "instructions"):
        exact = _token_list_len(kwargs.get(key))
        if exact is not None:
            return exact
    chars = sum(_text_chars(kwargs.get(key)) for key in ("input", "prompt", "instructions"))
    return estimate_tokens(chars)


def output_chars(result: Any) -> int:
    """Characters of generated text in a (non-streamed) result."""
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


def estimate(usage_kind: str, kwargs: dict[str, Any], result: Any, stream_tokens: int | None = None) -> Usage:
    """The best estimate for a call that reported no usage (see the module docstring for the method)."""
    if usage_kind in ("chat", "text"):
        inp = estimate_input_tokens(usage_kind, kwargs)
        out = stream_tokens or 0
        if result is not None:
            out += estimate_tokens(output_chars(result))
        if inp == 0 and out == 0:
            return NO_USAGE
        return Usage(inp, out, inp + out, source="estimated")
    if usage_kind == "embeddings":
        inp = estimate_input_tokens(usage_kind, kwargs)
        return Usage(inp, 0, inp, source="estimated") if inp else NO_USAGE
    if usage_kind == "speech":
        text = kwargs.get("input")
        if isinstance(text, str):
            inp = estimate_tokens(len(text))
            return Usage(inp, 0, inp, source="estimated", units={"characters": len(text)})
        return NO_USAGE
    if usage_kind == "images":
        data = get(result, "data")
        if isinstance(data, (list, tuple)):
            return Usage(source="estimated", units={"images": len(data)})
        return NO_USAGE
    if usage_kind == "audio":
        seconds = _seconds(get(result, "duration"))
        if seconds is not None:
            return Usage(source="estimated", units={"audio_seconds": seconds})
    return NO_USAGE


def extract(usage_kind: str, kwargs: dict[str, Any], result: Any, stream_tokens: int | None = None) -> Usage:
    """Usage for one call from its result: reported where OpenAI gave it, otherwise the estimate."""
    usage = normalize(get(result, "usage")) if result is not None else None
    return finish(usage, usage_kind, kwargs, result, stream_tokens)


def finish(
    usage: Usage | None,
    usage_kind: str,
    kwargs: dict[str, Any],
    result: Any,
    stream_tokens: int | None = None,
) -> Usage:
    """Reported usage completed with what the kind bills besides tokens, or the estimate when none."""
    if usage is None:
        return estimate(usage_kind, kwargs, result, stream_tokens)
    if usage_kind == "images":
        data = get(result, "data")
        if isinstance(data, (list, tuple)):
            usage = usage._replace(units={**(usage.units or {}), "images": len(data)})
    return usage
