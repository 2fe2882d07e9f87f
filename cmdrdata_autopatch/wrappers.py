"""Around the call: what runs when a patched OpenAI resource method is called.

For each call: take our own keywords out (`attribution.py`), work out the customer, start the clock, call
the original exactly once inside the nesting guard, and hand the result to `observe.py`. Exceptions from
OpenAI are recorded as error events and re-raised untouched.

The nesting guard is a contextvar that says "a patched call is in progress here". An SDK method that
reaches the server through another patched method (beta `parse` -> `create` on openai 1.40-1.49) is billed
once, by the outer call; and the safety net below the resource methods (`net.py`) stays quiet for every
request a resource wrapper already observes. A call with `track_usage=False` runs inside the guard too,
so the net does not bill it either.

Everything the wrapper itself might get wrong is caught: the user's call proceeds with OpenAI's own result.
The only exceptions we raise are `ValueError`s for bad `customer_id=` / `cmdrdata_metadata=` arguments,
before the request is sent, so the mistake surfaces at the call site.
"""

from __future__ import annotations

import contextvars
import inspect
import time
import types
from typing import Any, Callable

from .attribution import context_now, hand_down, take_our_kwargs, who_pays
from .diagnostics import report_internal_error
from .object_billing import write_customer_metadata
from .observe import Call, inject_stream_usage, observe, raw_mode, record_plain
from .runtime import Runtime
from .targets import Target

inside_call: contextvars.ContextVar[bool] = contextvars.ContextVar("cmdrdata_inside_call", default=False)

Wrapper = Callable[..., Any]  # wrapt's (wrapped, instance, args, kwargs) -> result

# One-line whys for the hot path's aliases: each saves a module or attribute lookup on every call.
_time = time.time  # the event's wall-clock start
_perf = time.perf_counter  # latency
_inside_get = inside_call.get  # the nesting guard, read first on every call
_inside_set = inside_call.set
_inside_reset = inside_call.reset
_Coroutine = types.CoroutineType  # what an SDK `async def` method returns: checked before isawaitable

# Result types known to be billed as they are (not a stream, not a raw response): one set probe per call.
_plain_types: set[type] = set()


def _is_plain(rt: Runtime, result_type: type) -> bool:
    special = issubclass(result_type, rt.special_types)
    if not special:
        _plain_types.add(result_type)
    return not special


# A call needs more than the common path when it carries our keywords, raw or attribution headers, a
# stream, or creates a background response. One C-level `isdisjoint` over the call's few keyword names
# answers it.
_SLOW_KEYS = frozenset(
    ("customer_id", "cmdrdata_metadata", "track_usage", "extra_headers", "stream", "background")
)
_common_call = _SLOW_KEYS.isdisjoint


def _untracked(wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call through unrecorded, inside the guard (so the safety net does not record it either)."""
    token = _inside_set(True)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _inside_reset(token)


def _delegate_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """For helpers that call `create` later: take our keywords off and hand them down via a token."""
    hand_down(kwargs)
    return wrapped(*args, **kwargs)


class _Row:
    """What a row's wrappers need of the row, read once when they are made."""

    __slots__ = ("api", "injectable", "kinds", "usage_kind")

    def __init__(self, target: Target) -> None:
        self.api = target.api
        self.kinds = (target.usage_kind, target.stream_kind)
        self.usage_kind = target.usage_kind
        self.injectable = target.inject_stream_usage


def _prepare(rt: Runtime, row: _Row, wrapped: Any, instance: Any, kwargs: dict[str, Any]) -> Call | None:
    """Everything before the original runs on the full path. None means "call through, record nothing"."""
    payer = who_pays(rt, instance, kwargs)  # ValueError on bad input: the caller's
    if payer is None:
        return None
    client, recorder, customer_id, metadata = payer
    try:
        if rt.object_metadata and kwargs.get("background") is True:  # read back finished, maybe elsewhere
            write_customer_metadata(True, kwargs, customer_id, wrapped)
        call = Call(row.api, row.kinds, client, kwargs, customer_id, metadata, recorder, 0.0, 0.0)
        if row.injectable and kwargs.get("stream") is True:
            call.hide_usage = inject_stream_usage(rt, kwargs, client)
        call.raw = raw_mode(kwargs.get("extra_headers"))
        return call
    except Exception as exc:
        report_internal_error("call setup", exc)
        return None


def _plain_call(
    rt: Runtime,
    row: _Row,
    instance: Any,
    kwargs: dict[str, Any],
    recorder: Any,
    ctx: Any,
    wall: float,
    start: float,
) -> Call:
    """The `Call` of a fast-path call whose result turned out not to be plain (or that failed)."""
    client = getattr(instance, "_client", None)
    customer = ctx[0] or rt.default_customer
    return Call(row.api, row.kinds, client, kwargs, customer, ctx[1], recorder, wall, start)


def run_observed(rt: Runtime, call: Call, wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run the original once inside the guard, record a failure and re-raise it, observe the result."""
    token = _inside_set(True)
    call.start_wall = _time()
    call.start_perf = _perf()
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        call.record_error(exc)
        raise
    finally:
        _inside_reset(token)
    return observe(rt, call, result, _perf() - call.start_perf)


async def await_observed(rt: Runtime, call: Call, awaitable: Any) -> Any:
    """The async twin of `run_observed`: the clock starts when the request does (at the await)."""
    token = _inside_set(True)
    call.start_wall = _time()
    call.start_perf = _perf()
    try:
        result = await awaitable
    except BaseException as exc:
        call.record_error(exc)
        raise
    finally:
        _inside_reset(token)
    return observe(rt, call, result, _perf() - call.start_perf)


async def _await_untracked(awaitable: Any) -> Any:
    token = _inside_set(True)
    try:
        return await awaitable
    finally:
        _inside_reset(token)


def _sync_wrapper(rt: Runtime, row: _Row) -> Wrapper:

    def slow_sync(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _inside_get():
            take_our_kwargs(kwargs)  # an inner call of a billed one: ours must still not reach OpenAI
            return wrapped(*args, **kwargs)
        call = _prepare(rt, row, wrapped, instance, kwargs)
        if call is None:
            return _untracked(wrapped, args, kwargs)
        return run_observed(rt, call, wrapped, args, kwargs)

    def sync_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not _common_call(kwargs) or rt.dropins:
            return slow_sync(wrapped, instance, args, kwargs)
        recorder = rt.recorder
        if recorder is None or _inside_get():
            return wrapped(*args, **kwargs)
        ctx = context_now()
        token = _inside_set(True)
        wall = _time()
        start = _perf()
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _inside_reset(token)
            _plain_call(rt, row, instance, kwargs, recorder, ctx, wall, start).record_error(exc)
            raise
        latency = _perf() - start
        _inside_reset(token)
        return _after_fast(rt, row, instance, kwargs, recorder, ctx, wall, start, latency, result)

    return sync_wrapper


def _after_fast(
    rt: Runtime,
    row: _Row,
    instance: Any,
    kwargs: dict[str, Any],
    recorder: Any,
    ctx: Any,
    wall: float,
    start: float,
    latency: float,
    result: Any,
) -> Any:
    """A fast-path call returned: a plain result becomes its event now, anything else is observed."""
    if type(result) in _plain_types or _is_plain(rt, type(result)):
        client = getattr(instance, "_client", None)
        customer = ctx[0] or rt.default_customer
        record_plain(
            row.api, row.usage_kind, client, kwargs, result, recorder, customer, ctx[1], wall, latency
        )
        return result
    return observe(rt, _plain_call(rt, row, instance, kwargs, recorder, ctx, wall, start), result, latency)


async def _await_fast(
    rt: Runtime, row: _Row, instance: Any, kwargs: dict[str, Any], recorder: Any, ctx: Any, awaitable: Any
) -> Any:
    """The async fast path: the clock and the guard start when the request does (at the await)."""
    token = _inside_set(True)
    wall = _time()
    start = _perf()
    try:
        result = await awaitable
    except BaseException as exc:
        _inside_reset(token)
        _plain_call(rt, row, instance, kwargs, recorder, ctx, wall, start).record_error(exc)
        raise
    latency = _perf() - start
    _inside_reset(token)
    return _after_fast(rt, row, instance, kwargs, recorder, ctx, wall, start, latency, result)


def _async_wrapper(rt: Runtime, row: _Row) -> Wrapper:
    def slow_async(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _inside_get():
            take_our_kwargs(kwargs)
            return wrapped(*args, **kwargs)
        call = _prepare(rt, row, wrapped, instance, kwargs)
        result = _untracked(wrapped, args, kwargs)  # a coroutine: nothing has been sent yet
        if not inspect.isawaitable(result):
            return result  # a sync helper on an async class; nothing to bill here
        if call is None:
            return _await_untracked(result)
        return await_observed(rt, call, result)

    def async_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not _common_call(kwargs) or rt.dropins:
            return slow_async(wrapped, instance, args, kwargs)
        recorder = rt.recorder
        if recorder is None or _inside_get():
            return wrapped(*args, **kwargs)
        result = _untracked(wrapped, args, kwargs)  # a coroutine: nothing has been sent yet
        if type(result) is not _Coroutine and not inspect.isawaitable(result):
            return result
        return _await_fast(rt, row, instance, kwargs, recorder, context_now(), result)

    return async_wrapper


def make_wrappers(target: Target, rt: Runtime) -> tuple[Wrapper, Wrapper]:
    """The (sync, async) wrapt wrapper functions for one table row, reading the runtime `rt`.

    The common call (no keywords of ours, no stream, no raw response, no drop-in client in the process)
    takes a short path; every other call takes the full one (`_prepare`, then `observe`).
    """
    if target.delegates:
        sync_fn: Wrapper = _delegate_wrapper
        async_fn: Wrapper = _delegate_wrapper
    else:
        row = _Row(target)
        sync_fn, async_fn = _sync_wrapper(rt, row), _async_wrapper(rt, row)
    return sync_fn, async_fn
