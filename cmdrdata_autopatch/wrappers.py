"""The call wrappers: what runs around every patched OpenAI resource method.

For each call: take our own keywords out (`customer_id=`, `cmdrdata_metadata=`, `track_usage=`) so they
never reach OpenAI, work out the customer, start the clock, call the original exactly once, and hand the
result to the right observer: a plain response becomes an event at once; a stream gets a proxy that emits
when it ends; a raw response (`with_raw_response` / `with_streaming_response`) is observed through the
caller's own `parse()`. Exceptions from OpenAI are recorded as error events and re-raised untouched.

A contextvar marks "inside a patched call", so an SDK method that reaches the server through another
patched method (beta `parse` -> `create` on openai 1.40-1.49) is billed once, by the outer call.

Everything the wrapper itself might get wrong is caught: the user's call proceeds with OpenAI's own result.
The only exceptions we raise are `ValueError`s for bad `customer_id=` / `cmdrdata_metadata=` arguments,
before the request is sent, so the mistake surfaces at the call site.
"""

from __future__ import annotations

import contextvars
import inspect
import os
import time
import weakref
from typing import Any, Callable

from . import context
from .diagnostics import report_internal_error
from .events import UsageEvent
from .streams import AsyncStreamProxy, StreamCapture, StreamProxy
from .targets import Target, parse_version
from .usage import cached_provider_of, resolve_event

RAW_HEADER = "X-Stainless-Raw-Response"
# How a `.stream()` helper hands `customer_id=` down to the `create` it calls later (at the manager's
# `__enter__`, possibly in another context): an opaque token in `extra_headers`, which the `create` wrapper
# takes out again before the request is built. Only the token would ever travel, never the customer id.
ATTRIBUTION_HEADER = "X-Cmdrdata-Attribution"
_MAX_PENDING = 10_000
_pending_attribution: dict[str, tuple[Any, Any, bool]] = {}

_inside_call: contextvars.ContextVar[bool] = contextvars.ContextVar("cmdrdata_inside_call", default=False)


class _State:
    """Process-wide wiring, set by `patching.py`. Read on every call, so plain attributes."""

    recorder: Any = None  # an object with record(event)
    dropins: bool = False  # a drop-in client exists: route each call by its client
    stream_usage: str = "auto"
    stream_options_supported: bool = True  # openai >= 1.26.0
    stream_types: tuple[type, ...] = ()
    async_stream_types: tuple[type, ...] = ()
    raw_types: tuple[type, ...] = ()


state = _State()


def configure_openai_types(openai_version: str) -> None:
    """Resolve the SDK classes the wrappers test results against (once `openai` is importable)."""
    from openai import _streaming

    state.stream_types = (_streaming.Stream,)
    state.async_stream_types = (_streaming.AsyncStream,)
    raw: list[type] = []
    try:
        from openai import _response

        raw.extend(c for c in (getattr(_response, n, None) for n in ("APIResponse", "AsyncAPIResponse")) if c)
    except ImportError:  # pragma: no cover - present in every 1.x+
        pass
    try:
        from openai import _legacy_response

        raw.append(_legacy_response.LegacyAPIResponse)
    except ImportError:  # openai < 1.8.0: raw responses are APIResponse
        pass
    state.raw_types = tuple(raw)
    state.stream_options_supported = parse_version(openai_version) >= (1, 26, 0)


def _recorder_for(instance: Any) -> Any:
    """The drop-in `TrackedOpenAI` clients carry their own recorder; everything else uses the global one."""
    client = getattr(instance, "_client", None)
    if client is not None:
        own = getattr(client, "__dict__", {}).get("_cmdrdata_recorder")
        if own is not None:
            return own
    return state.recorder  # None when only drop-in clients are tracked, or after unpatch()


def _emit(recorder: Any, event: UsageEvent) -> None:
    if recorder is None:
        return
    try:
        recorder.record(event)
    except Exception as exc:
        report_internal_error("exporter.record", exc)


def _not_given(value: Any) -> bool:
    return type(value).__name__ in ("NotGiven", "Omit")


def _maybe_inject_stream_usage(kwargs: dict[str, Any], instance: Any) -> bool:
    """Ask for the usage chunk on a chat/completions stream when policy allows and the caller did not
    set `stream_options` themselves. `kwargs` is wrapt's fresh per-call dict, never the caller's."""
    policy = state.stream_usage
    if policy == "off" or not state.stream_options_supported:
        return False
    if "stream_options" in kwargs and not _not_given(kwargs["stream_options"]):
        return False
    if policy == "auto" and cached_provider_of(getattr(instance, "_client", None)) != "openai":
        return False
    kwargs["stream_options"] = {"include_usage": True}
    return True


def _raw_mode(kwargs: dict[str, Any]) -> Any:
    headers = kwargs.get("extra_headers")
    if headers:
        try:
            return headers.get(RAW_HEADER)
        except Exception:
            return None
    return None


class _Call:
    """The per-call facts an observer needs (built only after the original returned or raised)."""

    __slots__ = ("customer_id", "instance", "kwargs", "metadata", "recorder", "start_perf", "start_wall")

    def __init__(
        self, instance: Any, kwargs: dict[str, Any], customer_id: Any, metadata: Any, recorder: Any
    ) -> None:
        self.instance = instance
        self.kwargs = kwargs
        self.customer_id = customer_id
        self.metadata = metadata
        self.recorder = recorder
        self.start_wall = time.time()
        self.start_perf = time.perf_counter()

    def event(self, api: str, latency: float, streaming: bool = False) -> UsageEvent:
        requested = self.kwargs.get("model")
        event = UsageEvent(
            api,
            self.start_wall,
            latency,
            self.customer_id,
            self.metadata,
            streaming,
            requested if isinstance(requested, str) else None,
        )
        event.raw_kwargs = self.kwargs
        event.raw_client = getattr(self.instance, "_client", None)
        event.resolver = resolve_event
        return event

    def record_error(self, api: str, exc: BaseException) -> None:
        try:
            event = self.event(api, time.perf_counter() - self.start_perf, self.kwargs.get("stream") is True)
            event.set_error(exc)
            _emit(self.recorder, event)
        except Exception as inner:
            report_internal_error("error event", inner)


def _take_our_kwargs(kwargs: dict[str, Any]) -> tuple[Any, Any, bool]:
    """Pop and validate our keywords. Raises ValueError (before any request) on a bad value."""
    customer_id = kwargs.pop("customer_id", None)
    metadata = kwargs.pop("cmdrdata_metadata", None)
    track = kwargs.pop("track_usage", True)
    headers = kwargs.get("extra_headers")
    if type(headers) is dict and ATTRIBUTION_HEADER in headers:
        headers = dict(headers)
        handed_down = _pending_attribution.pop(headers.pop(ATTRIBUTION_HEADER), None)
        kwargs["extra_headers"] = headers
        if handed_down is not None:
            customer_id = customer_id if customer_id is not None else handed_down[0]
            metadata = metadata if metadata is not None else handed_down[1]
            track = track and handed_down[2]
        return customer_id, metadata, track is not False  # validated by the helper's wrapper
    if customer_id is not None:
        context.validate_customer_id(customer_id)
    if metadata is not None:
        metadata = context.snapshot_metadata(metadata, "cmdrdata_metadata")
    return customer_id, metadata, track is not False


def _attribution(customer_id: Any, metadata: Any) -> tuple[Any, Any]:
    ctx = context.current()
    if customer_id is None:
        customer_id = ctx.customer_id
    if ctx.metadata:
        metadata = {**ctx.metadata, **metadata} if metadata else ctx.metadata
    return customer_id, metadata


# --- observers -------------------------------------------------------------------------------------


def _observe_sync(api: str, call: _Call, result: Any, latency: float, hide_usage: bool, raw: Any) -> Any:
    """Turn a finished sync call's result into an event (or a proxy that will emit one)."""
    if raw is not None and isinstance(result, state.raw_types):
        _observe_raw(api, call, result, latency, hide_usage)
        return result
    if isinstance(result, state.stream_types):
        return _stream_proxy(api, call, result, hide_usage, StreamProxy)
    if isinstance(result, state.async_stream_types):
        return _stream_proxy(api, call, result, hide_usage, AsyncStreamProxy)
    event = call.event(api, latency)
    event.raw_result = result
    _emit(call.recorder, event)
    return result


def _stream_proxy(api: str, call: _Call, stream: Any, hide_usage: bool, proxy_cls: Any) -> Any:
    event = call.event(api, 0.0, streaming=True)
    capture = StreamCapture(
        event,
        call.start_perf,
        lambda ev: _emit(call.recorder, ev),
        hide_usage,
        getattr(stream, "response", None),
    )
    return proxy_cls(stream, capture)


def _observe_raw(api: str, call: _Call, response: Any, latency: float, hide_usage: bool) -> None:
    """Watch a raw response through the caller's own `parse()`; never read a body the caller has not.

    The same response object is returned to the caller; only its `parse` is shadowed by an instance
    attribute. If the caller never parses, the event is emitted when the response is garbage collected,
    with usage read from the body only if the caller (or the SDK) had already read it.
    """
    original_parse = response.parse
    http_response = getattr(response, "http_response", None)
    done: list[Any] = [False, None]  # [recorded?, stream proxy returned by parse]

    def after_parse(parsed: Any) -> Any:
        if done[1] is not None:
            return done[1]
        if done[0]:
            return parsed
        done[0] = True
        try:
            if isinstance(parsed, state.stream_types + state.async_stream_types):
                cls = StreamProxy if isinstance(parsed, state.stream_types) else AsyncStreamProxy
                done[1] = _stream_proxy(api, call, parsed, hide_usage, cls)
                return done[1]
            event = call.event(api, latency)
            event.raw_result = parsed
            event.raw_extra = {"headers_from": http_response}
            _emit(call.recorder, event)
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

    weakref.finalize(response, _raw_never_parsed, api, call, latency, http_response, done)


def _raw_never_parsed(api: str, call: _Call, latency: float, http_response: Any, done: list[Any]) -> None:
    """The caller dropped a raw response without parsing it: still bill the call."""
    if done[0]:
        return
    done[0] = True
    try:
        event = call.event(api, latency)
        event.raw_extra = {"headers_from": http_response, "body_from": http_response}
        event.resolver = _resolve_unparsed
        _emit(call.recorder, event)
    except Exception as exc:
        report_internal_error("raw response finalize", exc)


def _resolve_unparsed(event: UsageEvent) -> None:
    """Read usage from a body that was already read (never triggers I/O); else usage_source 'none'."""
    import json

    http_response = (event.raw_extra or {}).get("body_from")
    try:
        content = http_response.content if http_response is not None else None
    except Exception:  # the body was never read: we do not read it
        content = None
    if isinstance(content, (bytes, bytearray)) and content[:1] in (b"{", b"["):
        try:
            event.raw_result = json.loads(content)
        except ValueError:
            pass
    resolve_event(event)


# --- the wrappers ------------------------------------------------------------------------------------


def _prepare(instance: Any, kwargs: dict[str, Any], injectable: bool) -> tuple[_Call, bool, Any] | None:
    """Everything before the original runs. None means "just call through, record nothing"."""
    if kwargs:
        customer_id, metadata, track = _take_our_kwargs(kwargs)  # ValueError on bad input: the caller's
    else:
        customer_id = metadata = None
        track = True
    if not track or _inside_call.get():
        return None
    recorder = _recorder_for(instance)
    if recorder is None:
        return None
    try:
        customer_id, metadata = _attribution(customer_id, metadata)
        hide_usage = (
            injectable and kwargs.get("stream") is True and _maybe_inject_stream_usage(kwargs, instance)
        )
        return _Call(instance, kwargs, customer_id, metadata, recorder), hide_usage, _raw_mode(kwargs)
    except Exception as exc:
        report_internal_error("call setup", exc)
        return None


def _finish(api: str, call: _Call, result: Any, hide_usage: bool, raw: Any) -> Any:
    latency = time.perf_counter() - call.start_perf
    try:
        return _observe_sync(api, call, result, latency, hide_usage, raw)
    except Exception as exc:
        report_internal_error("observe", exc)
        return result


def _delegate_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """For helpers that call `create` later: take our keywords off and hand them down via a token."""
    customer_id, metadata, track = _take_our_kwargs(kwargs)
    if (customer_id is not None or metadata is not None or not track) and "response_id" not in kwargs:
        token = os.urandom(12).hex()
        if len(_pending_attribution) >= _MAX_PENDING:  # managers created and never entered
            try:
                _pending_attribution.pop(next(iter(_pending_attribution)), None)
            except (RuntimeError, StopIteration):  # another thread changed it meanwhile: fine either way
                pass
        _pending_attribution[token] = (customer_id, metadata, track)
        headers = kwargs.get("extra_headers")
        kwargs["extra_headers"] = {
            **(headers if isinstance(headers, dict) else {}),
            ATTRIBUTION_HEADER: token,
        }
    return wrapped(*args, **kwargs)


def _slow_path_needed(kwargs: dict[str, Any]) -> bool:
    """True when a call needs more than the common path: our keywords, raw or attribution headers, a
    stream, or a drop-in client in the process (its events go to its own tracker)."""
    return (
        "customer_id" in kwargs
        or "cmdrdata_metadata" in kwargs
        or "track_usage" in kwargs
        or "extra_headers" in kwargs
        or "stream" in kwargs
        or state.dropins
    )


def _is_plain(result_type: type) -> bool:
    """True when results of this type are billed as they are (not a stream, not a raw response)."""
    special = issubclass(result_type, state.raw_types + state.stream_types + state.async_stream_types)
    if not special:
        _plain_types.add(result_type)
    return not special


_plain_types: set[type] = set()
_time = time.time
_perf = time.perf_counter
_inside_get = _inside_call.get
_inside_set = _inside_call.set
_inside_reset = _inside_call.reset
_context_get = context.current_raw
_default_customer = context.default_customer_holder


def _record_plain(
    api: str,
    instance: Any,
    kwargs: dict[str, Any],
    result: Any,
    recorder: Any,
    ctx: Any,
    wall: float,
    latency: float,
) -> None:
    try:
        recorder.record(
            UsageEvent.capture(
                api,
                wall,
                latency,
                ctx[0] or _default_customer[0],
                ctx[1],
                result,
                kwargs,
                instance,
                resolve_event,
            )
        )
    except Exception as exc:
        report_internal_error("exporter.record", exc)


def _record_error_plain(
    api: str,
    instance: Any,
    kwargs: dict[str, Any],
    recorder: Any,
    ctx: Any,
    wall: float,
    start: float,
    exc: BaseException,
) -> None:
    call = _Call(instance, kwargs, ctx[0] or _default_customer[0], ctx[1], recorder)
    call.start_wall, call.start_perf = wall, start
    call.record_error(api, exc)


def make_wrappers(target: Target) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The (sync, async) wrapt wrapper functions for one table row.

    The common call (no keywords of ours, no stream, no raw response) takes a short path: time it, and
    queue an event that holds references only; everything else waits for the exporter's thread. Every
    other call takes the full path (`_prepare` / `_finish`).
    """
    if target.delegates:
        return _delegate_wrapper, _delegate_wrapper
    api = target.api
    injectable = target.inject_stream_usage

    def call_original(call: _Call, wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the SDK method once, inside the nesting guard; a failure is recorded and re-raised as is."""
        token = _inside_set(True)
        try:
            return wrapped(*args, **kwargs)
        except BaseException as exc:
            call.record_error(api, exc)
            raise
        finally:
            _inside_reset(token)

    def slow_sync(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        prepared = _prepare(instance, kwargs, injectable)
        if prepared is None:
            return wrapped(*args, **kwargs)
        call, hide_usage, raw = prepared
        result = call_original(call, wrapped, args, kwargs)
        return _finish(api, call, result, hide_usage, raw)

    def sync_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _slow_path_needed(kwargs):
            return slow_sync(wrapped, instance, args, kwargs)
        recorder = state.recorder
        if recorder is None or _inside_get():
            return wrapped(*args, **kwargs)
        ctx = _context_get()
        token = _inside_set(True)
        wall = _time()
        start = _perf()
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _inside_reset(token)
            _record_error_plain(api, instance, kwargs, recorder, ctx, wall, start, exc)
            raise
        latency = _perf() - start
        _inside_reset(token)
        if type(result) in _plain_types or _is_plain(type(result)):
            _record_plain(api, instance, kwargs, result, recorder, ctx, wall, latency)
            return result
        call = _Call(instance, kwargs, ctx[0] or _default_customer[0], ctx[1], recorder)
        call.start_wall, call.start_perf = wall, start
        return _finish(api, call, result, False, None)

    async def await_and_observe(awaitable: Any, call: _Call, hide_usage: bool, raw: Any) -> Any:
        token = _inside_set(True)
        call.start_wall = _time()
        call.start_perf = _perf()
        try:
            result = await awaitable
        except BaseException as exc:
            call.record_error(api, exc)
            raise
        finally:
            _inside_reset(token)
        return _finish(api, call, result, hide_usage, raw)

    async def await_plain(
        awaitable: Any, instance: Any, kwargs: dict[str, Any], recorder: Any, ctx: Any
    ) -> Any:
        token = _inside_set(True)
        wall = _time()
        start = _perf()
        try:
            result = await awaitable
        except BaseException as exc:
            _record_error_plain(api, instance, kwargs, recorder, ctx, wall, start, exc)
            raise
        finally:
            _inside_reset(token)
        latency = _perf() - start
        if type(result) in _plain_types or _is_plain(type(result)):
            _record_plain(api, instance, kwargs, result, recorder, ctx, wall, latency)
            return result
        call = _Call(instance, kwargs, ctx[0] or _default_customer[0], ctx[1], recorder)
        call.start_wall, call.start_perf = wall, start
        return _finish(api, call, result, False, None)

    def slow_async(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        prepared = _prepare(instance, kwargs, injectable)
        if prepared is None:
            return wrapped(*args, **kwargs)
        call, hide_usage, raw = prepared
        result = call_original(call, wrapped, args, kwargs)
        if inspect.isawaitable(result):
            return await_and_observe(result, call, hide_usage, raw)
        return _finish(api, call, result, hide_usage, raw)

    def async_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _slow_path_needed(kwargs):
            return slow_async(wrapped, instance, args, kwargs)
        recorder = state.recorder
        if recorder is None or _inside_get():
            return wrapped(*args, **kwargs)
        ctx = _context_get()
        token = _inside_set(True)
        try:
            result = wrapped(*args, **kwargs)  # a coroutine: nothing has been sent yet
        finally:
            _inside_reset(token)
        if inspect.isawaitable(result):
            return await_plain(result, instance, kwargs, recorder, ctx)
        return result  # not awaitable: a sync helper on an async class; nothing to bill here

    return sync_wrapper, async_wrapper
