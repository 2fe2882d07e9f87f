"""Hosted-tool quantities: what a response bills besides its tokens (DESIGN.md section 4, `units`).

OpenAI bills hosted tools apart from the model's tokens: web searches per search, file searches per call,
code interpreter per container session, the image-generation tool's tokens at image rates. One function
reads them from a Responses `Response` (an SDK model or a plain dict), wherever the response came from:
a plain call, a stream's terminal event, the Responses WebSocket (`realtime_usage.py`), or a background
response read back later (`objects.py`). So every path bills the same units for the same response.

- `web_searches`: `tool_usage.web_search.num_requests` (openai 3.41+, the billable count: discounted
  searches and page opens excluded); without `tool_usage` (older releases, or a server that omits it)
  the `web_search_call` output items are counted, one search each.
- `file_searches`: `file_search_call` output items (billed per call).
- `code_interpreter_sessions`: distinct containers among `code_interpreter_call` items (billed per
  container session, however many calls run in it).
- `image_gen_input_tokens` / `image_gen_output_tokens`: `tool_usage.image_gen` (billed at image rates).

Chat Completions web search (`web_search_options=`, or a `*-search-preview` / `*-search-api` model) has no
per-search count in the response: OpenAI bills it per request (the "web search tool call" fee applies once
to each chat completion that searched). So such a call carries `web_searches: 1`; a failed call carries
none. Nothing here imports `openai`.
"""

from __future__ import annotations

from typing import Any, Optional

from .usage import count, get_field

_IMAGE_GEN = (("image_gen_input_tokens", "input_tokens"), ("image_gen_output_tokens", "output_tokens"))


def response_units(response: Any) -> Optional[dict[str, Any]]:
    """The hosted-tool units of one Responses `Response` (None when it used no billed tool)."""
    units: dict[str, Any] = {}
    tool_usage = get_field(response, "tool_usage")
    searches = None
    if tool_usage is not None:  # (absent on most responses: the common case skips these reads)
        searches = count(get_field(get_field(tool_usage, "web_search"), "num_requests"))
        image_gen = get_field(tool_usage, "image_gen")
        for unit, name in _IMAGE_GEN:
            value = count(get_field(image_gen, name))
            if value:
                units[unit] = value
    web_calls = file_calls = 0
    containers: Optional[set[str]] = None
    output = get_field(response, "output")
    for item in output if isinstance(output, (list, tuple)) else ():
        kind = get_field(item, "type")
        if kind == "web_search_call":
            web_calls += 1
        elif kind == "file_search_call":
            file_calls += 1
        elif kind == "code_interpreter_call":
            containers = containers or set()
            containers.add(str(get_field(item, "container_id") or get_field(item, "id")))
    if searches is None:
        searches = web_calls
    if searches:
        units["web_searches"] = searches
    if file_calls:
        units["file_searches"] = file_calls
    if containers:
        units["code_interpreter_sessions"] = len(containers)
    return units or None


def _given(value: Any) -> bool:
    return value is not None and type(value).__name__ not in ("NotGiven", "Omit")


def is_search_model(model: Any) -> bool:
    """True for the chat models that search on every request (`gpt-4o-search-preview`, `gpt-5-search-api`)."""
    return isinstance(model, str) and ("-search-preview" in model or "-search-api" in model)


def chat_search_units(kwargs: dict[str, Any], model: Any) -> Optional[dict[str, Any]]:
    """`{"web_searches": 1}` for a chat completion that searched the web (see the module docstring)."""
    if (
        _given(kwargs.get("web_search_options"))
        or is_search_model(model)
        or is_search_model(kwargs.get("model"))
    ):
        return {"web_searches": 1}
    return None


def merge_units(
    current: Optional[dict[str, Any]], more: Optional[dict[str, Any]]
) -> Optional[dict[str, Any]]:
    """`current` with `more` added (a new dict; either may be None)."""
    if not more:
        return current
    if not current:
        return dict(more)
    return {**current, **more}
