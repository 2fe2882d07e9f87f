"""After the call: turn what the SDK returned into one event (or into something that will emit one).

A plain result becomes an event at once, filled from the parsed result on the caller's thread (numbers
and short strings copied; the response is never kept). A stream gets a proxy that emits when it ends. A
raw response (`with_raw_response` / `with_streaming_response`) is watched through the caller's own
`parse()`: we never read a body the caller has not. The stream-usage policy lives here too, beside the
proxy that hides the chunk it causes.

Everything here runs after OpenAI answered; a failure is reported and the caller gets its result as is.
"""

from __future__ import annotations

import inspect
import json
import time
import weakref
from typing import Any

from .diagnostics import report_internal_error
from .events import UsageEvent
from .object_billing import as_object_event, created_background
from .recorder import emit
from .resolve import cached_provider_of, fill_from_result, header_request_id, requested_model
from .runtime import Runtime
from .streams import AsyncStreamProxy, StreamCapture, StreamProxy

RAW_HEADER = "X-Stainless-Raw-Response"


class Call:
    """The facts of one call that the observers need (who, what, when, and how it was asked)."""

    __slots__ = (
        "api",
        "client",
        "customer_id",
        "hide_usage",
        "kinds",
        "kwargs",
        "metadata",
        "raw",
        "recorder",
        "start_perf",
        "start_wall",
    )

    def __init__(
        self,
        api: str,
        kinds: tuple[str, str],
        client: Any,
        kwargs: dict[str, Any],
        customer_id: Any,
        metadata: Any,
        recorder: Any,
        start_wall: float,
        start_perf: float,
    ) -> None:
        self.api = api
        self.kinds = kinds  # (usage_kind, stream_kind) of the table row
        self.client = client  # the SDK client the call went through (None if it cannot be told)
        self.kwargs = kwargs  # the call's keywords (or the request body, for the safety net)
        self.customer_id = customer_id
        self.metadata = metadata
        self.recorder = recorder
        self.start_wall = start_wall
        self.start_perf = start_perf
        self.hide_usage = False  # we injected stream_options: hide the usage-only chunk
        self.raw: Any = None  # the raw-response header's value, when the call asked for one

    def event(self, latency: float, streaming: bool = False) -> UsageEvent:
        event = UsageEvent(
            self.api,
            self.start_wall,
            latency,
            self.customer_id,
            self.metadata,
            streaming,
            requested_model(self.kwargs),
        )
        event.provider = cached_provider_of(self.client)
        return event

    def record_error(self, exc: BaseException) -> None:
        try:
            event = self.event(time.perf_counter() - self.start_perf, self.kwargs.get("stream") is True)
            event.set_error(exc)
            if event.request_id is None:  # openai 1.0.x errors have no `request_id`: their response does
                event.request_id = header_request_id(getattr(exc, "response", None))
            emit(self.recorder, event)
        except Exception as inner:
            report_internal_error("error event", inner)


def record_plain(
    api: str,
    usage_kind: str,
    client: Any,
    kwargs: dict[str, Any],
    result: Any,
    recorder: Any,
    customer_id: Any,
    metadata: Any,
    wall: float,
    latency: float,
) -> None:
    """The common case, on the hot path: a finished non-streamed call becomes one event, now. (A call
    with `background=` never comes here from the fast path: `observe` sends a background response's
    creation to `_created_background`.)"""
    try:
        event = UsageEvent(api, wall, latency, customer_id, metadata)
        event.provider = cached_provider_of(client)
        fill_from_result(event, usage_kind, kwargs, result)  # the model: the response's, else the requested
    except Exception as exc:
        report_internal_error("usage extraction", exc)
        return
    try:
        recorder.record(event)  # `emit`, inline: one call less on the hot path
    except Exception as exc:
        report_internal_error("exporter.record", exc)


def _created_background(recorder: Any, client: Any, result: Any, customer_id: Any, metadata: Any) -> None:
    try:
        created_background(recorder, client, result, customer_id, metadata)
    except Exception as exc:
        report_internal_error("background response", exc)


def observe(rt: Runtime, call: Call, result: Any, latency: float) -> Any:
    """What the caller gets back for `result`, with its event emitted or arranged; never raises."""
    try:
        if call.raw is not None and isinstance(result, rt.raw_types):
            watch_raw(rt, call, result, latency)
            return result
        if isinstance(result, rt.stream_types):
            return stream_proxy(call, result, StreamProxy)
        if isinstance(result, rt.async_stream_types):
            return stream_proxy(call, result, AsyncStreamProxy)
        if call.kwargs.get("background") is True:  # a background response: billed once read back finished
            _created_background(call.recorder, call.client, result, call.customer_id, call.metadata)
            return result
        record_plain(
            call.api,
            call.kinds[0],
            call.client,
            call.kwargs,
            result,
            call.recorder,
            call.customer_id,
            call.metadata,
            call.start_wall,
            latency,
        )
    except Exception as exc:
        report_internal_error("observe", exc)
    return result


def stream_proxy(call: Call, stream: Any, proxy_cls: Any) -> Any:
    """The proxy the caller gets instead of `stream`; it emits the event once the stream ends."""
    event = call.event(0.0, streaming=True)
    request_id = header_request_id(getattr(stream, "response", None))
    if request_id is not None:
        event.request_id = request_id
    recorder = call.recorder
    sink: Any = lambda ev: emit(recorder, ev)  # noqa: E731
    if call.kwargs.get("background") is True:  # billed as its object (derived id), like a retrieval
        payer = (call.customer_id, call.metadata)
        sink = lambda ev: as_object_event(recorder, ev, payer)  # noqa: E731
    capture = StreamCapture(event, call.kinds, call.kwargs, call.start_perf, sink, call.hide_usage)
    return proxy_cls(stream, capture)


def _not_given(value: Any) -> bool:
    return type(value).__name__ in ("NotGiven", "Omit")


# Azure OpenAI accepts `stream_options` from this api-version on; older ones answer 400 "Unrecognized request
# argument" (openai-python#1469), so their streams stay estimated. The v1 API (no api-version) accepts it.
AZURE_STREAM_OPTIONS_SINCE = "2024-09-01"


def _azure_accepts(client: Any) -> bool:
    version = getattr(client, "_api_version", None)
    if version is None:
        query = getattr(client, "_custom_query", None)
        version = query.get("api-version") if isinstance(query, dict) else None
    if not isinstance(version, str) or not version[:4].isdigit():
        return True  # the v1 API, or a named version ("preview", "latest") newer than any dated one
    return version[:10] >= AZURE_STREAM_OPTIONS_SINCE


def _listed(rt: Runtime, client: Any) -> bool:
    """The client's host is in CMDRDATA_STREAM_USAGE_HOSTS (`*.example.com` matches its subdomains)."""
    hosts = rt.stream_usage_hosts
    if not hosts:
        return False
    host = getattr(getattr(client, "base_url", None), "host", None)
    if not isinstance(host, str):
        return False
    host = host.lower()
    return any(host == h or (h.startswith("*.") and host.endswith(h[1:])) for h in hosts)


def accepts_stream_options(rt: Runtime, client: Any) -> bool:
    """Under `auto`: is the client's host known to accept `stream_options`? api.openai.com, Azure OpenAI
    (recent enough api-version), and the hosts the user listed; any other host may reject the unknown
    parameter (a broken call is worse than an estimate), so its streams are estimated and flagged."""
    provider = cached_provider_of(client)
    if provider == "openai":
        return True
    if provider == "azure" and _azure_accepts(client):
        return True
    return _listed(rt, client)


def inject_stream_usage(rt: Runtime, kwargs: dict[str, Any], client: Any) -> bool:
    """Ask for the usage chunk on a chat/completions stream when policy allows and the caller did not
    set `stream_options` themselves. `kwargs` is wrapt's fresh per-call dict, never the caller's.
    True means "we asked": the usage-only chunk it causes is hidden from the caller."""
    policy = rt.stream_usage
    if policy == "off" or not rt.stream_options_supported:
        return False
    if "stream_options" in kwargs and not _not_given(kwargs["stream_options"]):
        return False
    if policy == "auto" and not accepts_stream_options(rt, client):
        return False
    kwargs["stream_options"] = {"include_usage": True}
    return True


def raw_mode(headers: Any) -> Any:
    """The raw-response header's value in a call's `extra_headers` (or a request's headers), or None."""
    if headers:
        try:
            return headers.get(RAW_HEADER)
        except Exception:
            return None
    return None


# --- raw responses -----------------------------------------------------------------------------------


class _RawWatch:
    """State shared by a raw response's shadowed `parse()` and its finalizer."""

    __slots__ = ("done", "proxy")

    def __init__(self) -> None:
        self.done = False
        self.proxy: Any = None  # the stream proxy returned by parse(), returned again on every parse()


def watch_raw(rt: Runtime, call: Call, response: Any, latency: float) -> None:
    """Watch a raw response through the caller's own `parse()`; never read a body the caller has not.

    The same response object is returned to the caller; only its `parse` is shadowed by an instance
    attribute. If the caller never parses, the event is emitted when the response is garbage collected,
    with usage read from the body only if the caller (or the SDK) had already read it.
    """
    original_parse = response.parse
    http_response = getattr(response, "http_response", None)
    watch = _RawWatch()

    def after_parse(parsed: Any) -> Any:
        if watch.proxy is not None:
            return watch.proxy
        if watch.done:
            return parsed
        watch.done = True
        try:
            if isinstance(parsed, rt.stream_types + rt.async_stream_types):
                cls = StreamProxy if isinstance(parsed, rt.stream_types) else AsyncStreamProxy
                watch.proxy = stream_proxy(call, parsed, cls)
                return watch.proxy
            if call.kwargs.get("background") is True:  # billed when read back finished, never here
                created_background(call.recorder, call.client, parsed, call.customer_id, call.metadata)
                return parsed
            event = call.event(latency)
            fill_from_result(event, call.kinds[0], call.kwargs, parsed, http_response)
            emit(call.recorder, event)
        except Exception as exc:
            report_internal_error("raw response parse", exc)
        return parsed

    if inspect.iscoroutinefunction(original_parse):

        async def parse_async(*args: Any, **kwargs: Any) -> Any:
            return after_parse(await original_parse(*args, **kwargs))

        response.parse = parse_async
    else:

        def parse(*args: Any, **kwargs: Any) -> Any:
            return after_parse(original_parse(*args, **kwargs))

        response.parse = parse

    weakref.finalize(response, _raw_never_parsed, call, latency, http_response, watch)


def _raw_never_parsed(call: Call, latency: float, http_response: Any, watch: _RawWatch) -> None:
    """The caller dropped a raw response without parsing it: still bill the call, from a body that was
    already read (never triggers I/O); else with usage_source 'none'."""
    if watch.done or call.kwargs.get("background") is True:  # a background create bills nothing itself
        return
    watch.done = True
    try:
        try:
            content = http_response.content if http_response is not None else None
        except Exception:  # the body was never read: we do not read it
            content = None
        body: Any = None
        if isinstance(content, (bytes, bytearray)) and content[:1] in (b"{", b"["):
            try:
                body = json.loads(content)
            except ValueError:
                body = None
        event = call.event(latency)
        fill_from_result(event, call.kinds[0], call.kwargs, body, http_response)
        emit(call.recorder, event)
    except Exception as exc:
        report_internal_error("raw response finalize", exc)
