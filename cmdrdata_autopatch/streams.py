"""Stream proxies: watch an OpenAI `Stream` / `AsyncStream` go by and bill it exactly once.

The proxy is a `wrapt.ObjectProxy`, so `isinstance(proxy, openai.Stream)` holds and every attribute
(`.response`, `._iterator`, helpers) is the original's. Python looks dunder methods up on the type, never
through `__getattr__`, so the proxy implements the whole protocol itself: `__iter__`/`__next__`,
`__enter__`/`__exit__` (with `__enter__` returning the proxy, not the raw stream, or `with ... as s:` would
bind the unobserved original), `close`, and the async `__aiter__`/`__anext__`/`__aenter__`/`__aexit__`/
`close`/`aclose`.

The event is emitted once, by whichever comes first: exhaustion, an exception mid-stream, early `break`
(the iterator generator is closed), `close()`, `__exit__`, or garbage collection of the proxy. Per item the
proxy does the least it can (note the first item's time, keep a reference, look for usage); all parsing and
estimating happens in the exporter's background thread.

When we injected `stream_options={"include_usage": True}` (the caller did not ask for it), the extra
usage-only chunk it causes (`choices == []`) is read for its usage and hidden from the caller, so code that
does `chunk.choices[0]` keeps working.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
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

_RESPONSE_DONE = frozenset(("response.completed", "response.incomplete", "response.failed"))
_TEXT_DELTAS = frozenset(("response.output_text.delta", "transcript.text.delta"))
_STREAM_USAGE_DONE = frozenset(("image_generation.completed", "image_edit.completed", "transcript.text.done"))


class StreamCapture:
    """What one stream has shown so far, and the once-only emission of its event."""

    __slots__ = (
        "api",
        "content_items",
        "done",
        "event",
        "first_at",
        "hide_usage_chunk",
        "http_response",
        "last",
        "once",
        "sink",
        "start_perf",
        "typed_events",
        "usage_holder",
    )

    def __init__(
        self,
        event: UsageEvent,
        start_perf: float,
        sink: Callable[[UsageEvent], Any],
        hide_usage_chunk: bool,
        http_response: Any,
    ) -> None:
        self.event = event
        self.api = event.api
        # chat/completions chunks carry `usage`; other streams are typed events (`type` names the event)
        self.typed_events = event.api not in ("chat.completions", "completions")
        self.start_perf = start_perf
        self.sink = sink
        self.hide_usage_chunk = hide_usage_chunk
        self.http_response = http_response
        # Items that carry generated text: the output estimate when a stream reports no usage. OpenAI
        # streams one token per content chunk / text delta, so the count is the estimate; keeping a
        # number instead of the chunks themselves keeps them out of the GC's older generations.
        self.content_items = 0
        self.first_at: float | None = None
        self.usage_holder: Any = None
        self.last: Any = None
        self.done = False
        self.once = threading.Lock()

    def observe(self, item: Any) -> bool:
        """Note one item; return True when the caller must not see it (our injected usage chunk)."""
        if self.first_at is None:
            self.first_at = time.perf_counter()
        self.last = item
        try:
            usage = getattr(item, "usage", None)
            if usage is not None:
                self.usage_holder = item
                return self.hide_usage_chunk and not getattr(item, "choices", None)
            if not self.typed_events:
                self.content_items += 1
                return False
            kind = getattr(item, "type", None)
            if kind in _TEXT_DELTAS:
                self.content_items += 1
            elif kind in _RESPONSE_DONE:
                self.usage_holder = getattr(item, "response", None)
            elif kind in _STREAM_USAGE_DONE:
                self.usage_holder = item
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
            now = time.perf_counter()
            event.latency_s = now - self.start_perf
            if self.first_at is not None:
                event.time_to_first_token_ms = round((self.first_at - self.start_perf) * 1000.0, 3)
            holder = self.usage_holder
            event.raw_result = holder
            if holder is None and self.last is not None:
                model = getattr(self.last, "model", None)
                if isinstance(model, str) and event.model is None:
                    event.model = model
            items = self.content_items
            if not self.typed_events and items:
                # chat: the first chunk carries only the role, the last (when read) only finish_reason
                items = max(items - 1 - (1 if complete and self.api == "chat.completions" else 0), 0)
            event.raw_extra = {"stream_tokens": items, "headers_from": self.http_response}
            if error is not None:
                event.set_error(error)
            self.sink(event)
        except Exception as exc:
            report_internal_error("stream finish", exc)


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
        self._self_source = source if source is not None else iter(wrapped)

    def __iter__(self) -> Iterator[Any]:
        capture = self._self_capture
        observe = capture.observe
        try:
            for item in self._self_source:
                if observe(item):
                    continue
                yield item
            capture.finish(complete=True)
        except GeneratorExit:
            raise
        except BaseException as exc:
            capture.finish(exc)
            raise
        finally:
            capture.finish()

    def __next__(self) -> Any:
        capture = self._self_capture
        while True:
            try:
                item = next(self._self_source)
            except StopIteration:
                capture.finish(complete=True)
                raise
            except BaseException as exc:
                capture.finish(exc)
                raise
            if not capture.observe(item):
                return item

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

    def __del__(self) -> None:
        try:
            self._self_capture.finish()
        except Exception:
            pass


class AsyncStreamProxy(_Proxy):
    """An async `openai.AsyncStream` that bills itself once."""

    def __init__(self, wrapped: Any, capture: StreamCapture) -> None:
        super().__init__(wrapped)
        self._self_capture = capture
        source = getattr(wrapped, "_iterator", None)
        self._self_source = source if source is not None else wrapped.__aiter__()

    async def _items(self) -> AsyncIterator[Any]:
        capture = self._self_capture
        observe = capture.observe
        try:
            async for item in self._self_source:
                if observe(item):
                    continue
                yield item
            capture.finish(complete=True)
        except GeneratorExit:
            raise
        except BaseException as exc:
            capture.finish(exc)
            raise
        finally:
            capture.finish()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._items()

    async def __anext__(self) -> Any:
        capture = self._self_capture
        while True:
            try:
                item = await self._self_source.__anext__()
            except StopAsyncIteration:
                capture.finish(complete=True)
                raise
            except BaseException as exc:
                capture.finish(exc)
                raise
            if not capture.observe(item):
                return item

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

    def __del__(self) -> None:
        try:
            self._self_capture.finish()
        except Exception:
            pass
