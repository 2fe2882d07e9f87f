"""Stream proxies: watch an OpenAI `Stream` / `AsyncStream` go by and bill it exactly once.

The proxy is a `wrapt.ObjectProxy`, so `isinstance(proxy, openai.Stream)` holds and every attribute
(`.response`, `._iterator`, helpers) is the original's. Python looks dunder methods up on the type, never
through `__getattr__`, so the proxy implements the whole protocol itself: `__iter__`/`__next__`,
`__enter__`/`__exit__` (with `__enter__` returning the proxy, not the raw stream, or `with ... as s:` would
bind the unobserved original), `close`, and the async `__aiter__`/`__anext__`/`__aenter__`/`__aexit__`/
`close`/`aclose`.

Like the SDK's own streams, the proxy is its own iterator: `__iter__` / `__aiter__` return the proxy, and
every item comes from the one underlying iterator. So iteration can be left and re-entered any number of
times (litellm runs `async for chunk in stream: ...; return chunk` on each of its own `__anext__`), and the
event is emitted once, by whichever comes first: exhaustion, an exception mid-stream, `close()`, `__exit__`,
or garbage collection (of the proxy and of its one generator, which a `for` loop may still hold after the
proxy is gone, as in `[c for c in client.chat.completions.create(..., stream=True)]`). Leaving a `for`
loop early is not an end: the stream is still open and may be read on; it is billed when it is closed or
dropped.

Per item the proxy does the least it can: note the first item's time, the model the first chunk names
(Azure's first chunk names none: the next one is asked), count content items for the estimate, and copy
the usage the moment a chunk carries it (a plain-dict snapshot, so the app can do what it likes with the
chunk). When we injected `stream_options={"include_usage": True}` (the caller did not ask for it), the
extra usage-only chunk it causes (`choices == []`) is read and hidden from the caller, so code that does
`chunk.choices[0]` keeps working.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TYPE_CHECKING, Any, Callable

import wrapt

if TYPE_CHECKING:  # wrapt's own typing differs between releases; the proxies need only this much of it

    class _Proxy:
        __wrapped__: Any

        def __init__(self, wrapped: Any) -> None: ...

else:
    _Proxy = wrapt.ObjectProxy

from .diagnostics import report_internal_error
from .events import UsageEvent
from .resolve import add_units, model_of, set_usage
from .tool_units import chat_search_units, response_units
from .usage import copy_usage

_RESPONSE_DONE = frozenset(("response.completed", "response.incomplete", "response.failed"))
_TEXT_DELTAS = frozenset(("response.output_text.delta", "transcript.text.delta"))
_IMAGE_DONE = frozenset(("image_generation.completed", "image_edit.completed"))


class StreamCapture:
    """What one stream has shown so far (copies, not the chunks), and the once-only emission of its event."""

    __slots__ = (
        "chunks",
        "content_items",
        "done",
        "event",
        "first_at",
        "hide_usage_chunk",
        "kwargs",
        "model",
        "once",
        "sink",
        "source_id",
        "start_perf",
        "stream_kind",
        "tier",
        "units",
        "usage",
        "usage_kind",
    )

    def __init__(
        self,
        event: UsageEvent,
        kinds: tuple[str, str],
        kwargs: dict[str, Any],
        start_perf: float,
        sink: Callable[[UsageEvent], Any],
        hide_usage_chunk: bool,
    ) -> None:
        self.event = event
        self.usage_kind, self.stream_kind = kinds
        # chat/completions chunks carry `usage`; other streams are typed events (`type` names the event)
        self.chunks = self.stream_kind in ("chat", "text")
        self.kwargs: dict[str, Any] | None = kwargs  # the request, for the estimate; dropped at the end
        self.start_perf = start_perf
        self.sink = sink
        self.hide_usage_chunk = hide_usage_chunk
        # Items that carry generated text: the output estimate when a stream reports no usage. OpenAI
        # streams one token per content chunk / text delta, so the count is the estimate.
        self.content_items = 0
        self.first_at: float | None = None
        self.model: str | None = None
        self.tier: str | None = None
        self.usage: dict[str, Any] | None = None
        self.units: dict[str, Any] | None = None  # hosted tools / images the stream showed
        self.source_id: str | None = None  # a background response's id: objects.py bills it once
        self.done = False
        self.once = threading.Lock()

    def _names(self, item: Any) -> None:
        self.model = model_of(item)
        if self.model is not None:
            tier = getattr(item, "service_tier", None)
            self.tier = tier if type(tier) is str else None

    def observe(self, item: Any) -> bool:
        """Note one item; return True when the caller must not see it (our injected usage chunk)."""
        if self.first_at is None:
            self.first_at = time.perf_counter()
        try:
            if self.model is None:
                self._names(item)
            usage = getattr(item, "usage", None)
            if usage is not None:
                self.usage = copy_usage(usage)
                if getattr(item, "type", None) in _IMAGE_DONE:  # one finished image (besides its tokens)
                    self.units = {"images": (self.units or {}).get("images", 0) + 1}
                return self.hide_usage_chunk and not getattr(item, "choices", None)
            if self.chunks:
                self.content_items += 1
                return False
            kind = getattr(item, "type", None)
            if kind in _TEXT_DELTAS:
                self.content_items += 1
            elif kind in _RESPONSE_DONE:
                response = getattr(item, "response", None)
                self.usage = copy_usage(getattr(response, "usage", None))
                self.units = response_units(response)
                if getattr(response, "background", None) is True:
                    response_id = getattr(response, "id", None)
                    self.source_id = response_id if type(response_id) is str else None
                self._names(response)  # the final response's model and tier win
        except Exception as exc:
            report_internal_error("stream observe", exc)
        return False

    def finish(self, error: BaseException | None = None, complete: bool = False) -> None:
        """Emit the event, once, whatever path ends the stream (`complete`: read to its end)."""
        if self.done or not self.once.acquire(blocking=False):
            return
        try:
            self.done = True
            event = self.event
            event.latency_s = time.perf_counter() - self.start_perf
            if self.first_at is not None:
                event.time_to_first_token_ms = round((self.first_at - self.start_perf) * 1000.0, 3)
            if self.model is not None:
                event.model = self.model
            if self.tier is not None:
                event.service_tier = self.tier
            items = self.content_items
            if self.stream_kind == "chat" and items:
                # chat: the first chunk carries only the role, the last (when read) only finish_reason
                items = max(items - 1 - (1 if complete else 0), 0)
            if error is None or self.usage is not None:  # a failed stream bills only reported usage
                set_usage(event, self.usage, self.usage_kind, self.kwargs or {}, None, items)
                add_units(event, self.units)
                if self.stream_kind == "chat":
                    add_units(event, chat_search_units(self.kwargs or {}, event.model))
            self.kwargs = None
            event.source_id = self.source_id
            if error is not None:
                event.set_error(error)
            self.sink(event)
        except Exception as exc:
            report_internal_error("stream finish", exc)


def _items(source: Iterator[Any], capture: StreamCapture) -> Iterator[Any]:
    """The items the caller sees. A module function, not a method: the generator must not refer to the
    proxy, or proxy and generator would form a cycle and the proxy would outlive its last reference."""
    observe = capture.observe
    try:
        for item in source:
            if not observe(item):
                yield item
    except GeneratorExit:  # the proxy was dropped or closed: `finally` bills what was seen
        raise
    except BaseException as exc:
        capture.finish(exc)
        raise
    else:
        capture.finish(complete=True)
    finally:
        capture.finish()


async def _aitems(source: AsyncIterator[Any], capture: StreamCapture) -> AsyncIterator[Any]:
    """The async twin of `_items`."""
    observe = capture.observe
    try:
        async for item in source:
            if not observe(item):
                yield item
    except GeneratorExit:
        raise
    except BaseException as exc:
        capture.finish(exc)
        raise
    else:
        capture.finish(complete=True)
    finally:
        capture.finish()


def _enter_of(wrapped: Any, name: str) -> Callable[..., Any]:
    """The wrapped stream's own context-manager method (pre-1.6 streams have none: same error as bare)."""
    method = getattr(type(wrapped), name, None)
    if method is None:
        raise TypeError(f"{type(wrapped).__name__!r} object does not support the context manager protocol")
    return method  # type: ignore[no-any-return]


class StreamProxy(_Proxy):
    """A sync `openai.Stream` that bills itself once."""

    def __init__(self, wrapped: Any, capture: StreamCapture) -> None:
        super().__init__(wrapped)
        self._self_capture = capture
        source = getattr(wrapped, "_iterator", None)
        self._self_items = _items(source if source is not None else iter(wrapped), capture)
        # the stream ends, at the latest, with its generator: when neither the proxy nor a loop holds it
        weakref.finalize(self._self_items, capture.finish)

    def __iter__(self) -> Iterator[Any]:
        # the one generator of this proxy, every time: leaving a loop and starting another continues it
        return self._self_items

    def __next__(self) -> Any:
        return next(self._self_items)

    def __enter__(self) -> StreamProxy:
        _enter_of(self.__wrapped__, "__enter__")(self.__wrapped__)
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return _enter_of(self.__wrapped__, "__exit__")(self.__wrapped__, *exc_info)
        finally:
            self._self_capture.finish()

    def close(self) -> Any:
        try:
            return self.__wrapped__.close()
        finally:
            self._self_capture.finish()


class AsyncStreamProxy(_Proxy):
    """An async `openai.AsyncStream` that bills itself once."""

    def __init__(self, wrapped: Any, capture: StreamCapture) -> None:
        super().__init__(wrapped)
        self._self_capture = capture
        source = getattr(wrapped, "_iterator", None)
        self._self_items = _aitems(source if source is not None else wrapped.__aiter__(), capture)
        weakref.finalize(self._self_items, capture.finish)

    def __aiter__(self) -> AsyncIterator[Any]:
        # one generator: litellm re-enters `async for` on every one of its own __anext__
        return self._self_items

    def __anext__(self) -> Awaitable[Any]:
        return self._self_items.__anext__()

    async def __aenter__(self) -> AsyncStreamProxy:
        await _enter_of(self.__wrapped__, "__aenter__")(self.__wrapped__)
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await _enter_of(self.__wrapped__, "__aexit__")(self.__wrapped__, *exc_info)
        finally:
            self._self_capture.finish()

    async def close(self) -> Any:
        try:
            return await self.__wrapped__.close()
        finally:
            self._self_capture.finish()

    async def aclose(self) -> Any:
        try:
            method = getattr(self.__wrapped__, "aclose", None) or self.__wrapped__.close
            return await method()
        finally:
            self._self_capture.finish()
