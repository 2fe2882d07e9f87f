"""Usage read from server-side objects: billed once per object, whichever process sees it finished first.

Some work is billed after the call that started it returned: a background response (`responses.create(
background=True)` answers at once with a queued response and no usage), a batch (its `usage` is filled in
when it completes). The call that creates such an object bills nothing (an estimate there would bill the
work twice); the usage is read from the object itself when a later call returns it terminal:
`responses.retrieve` (also with `stream=True`, which is what `responses.stream(response_id=)` does),
`responses.cancel`, `batches.retrieve`, `batches.list` (every page: the one returned, and the later ones
as iteration or `get_next_page()` fetches them: object_pages.py), assistants `runs.retrieve` (also
through `with_raw_response`, which `runs.poll` and `create_and_poll` use) and the run streams
(object_streams.py), `fine_tuning.jobs.retrieve` (`trained_tokens` as `units.trained_tokens`), evals runs
(`retrieve` / `cancel` / `list`: one event per model of `per_model_usage`, object_billing.py), agent
session turns (`turns.retrieve` / `list`, subagent turns, the session event streams). Helpers that call
these rows themselves (`create_and_poll`, `sessions.stream`...) take our keywords as a `customer()` block
around those calls (object_blocks.py). The table rows say which method returns which object
(`kind="object"`, `reads`, `role`).

Exactly once: the event's id is derived from the object id (derived.py), so a second poll, a second
process, or a replay produces the same id, and the CmdrData API deduplicates it; `first_time()` spares the
exporter the repeats inside one process (polling one batch 100 times records one event). A retrieved
response that was not a background one is never billed here: its own `create` call billed it.

Who pays: the customer active (or passed as `customer_id=`) when the object was created, remembered by
object id in this process (bounded: the newest `MEMORY_LIMIT` objects); else the customer named in the
object's own `metadata["cmdrdata_customer_id"]`; else the customer of the call (or `customer()` block)
that retrieved it. Objects that another process created are therefore billed to the retrieving call's
customer unless the creator opted in to writing its customer into the object: with
`CMDRDATA_OBJECT_METADATA=customer`, each create row (`batches.create`, `runs.create`,
`threads.create_and_run`, `fine_tuning.jobs.create`, `beta.agents.sessions.create`) gets
`metadata={"cmdrdata_customer_id": ...}` added
(merged into the caller's own `metadata`, never replacing a key the caller set, and skipped when the
caller's metadata already has OpenAI's maximum of 16 keys). For a background response pass the same key
in `metadata=` yourself.

`stats()` shows background responses created here and never seen terminal (`background_pending`): such a
response is not billed until something retrieves it. Close them by retrieving each once it is done, or
from a webhook handler (`response.completed`) that calls `client.responses.retrieve(id)`. A terminal batch
without `usage` (a server or SDK older than the field) bills nothing and is counted
(`batches_without_usage`), with a debug log line.

Reads that fail raise to the caller as usual and bill nothing (reading an object is free).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from .attribution import take_our_kwargs, who_pays
from .diagnostics import report_internal_error
from .events import UsageEvent
from .object_billing import (
    MEMORY,
    _Read,
    _watch_parse,
    as_object_event,
    bill_object,
    write_customer_metadata,
)
from .object_blocks import make_block_wrappers
from .object_pages import AwaitedPages, BilledPage, page_biller
from .object_streams import object_stream, watch_manager
from .resolve import cached_provider_of
from .runtime import Runtime
from .streams import AsyncStreamProxy, StreamCapture, StreamProxy
from .targets import Target
from .usage import get
from .wrappers import inside_call

Wrapper = Callable[..., Any]


def _after(rt: Runtime, target: Target, read: _Read, result: Any) -> Any:
    """What the caller gets for `result`, with the object remembered or billed; never raises."""
    try:
        if isinstance(result, rt.raw_types):
            _watch_parse(result, lambda parsed: _after(rt, target, read, parsed))
        elif isinstance(result, rt.stream_types + rt.async_stream_types):
            return _stream(rt, read, result) if read.reads == "response" else object_stream(read, result)
        elif target.role == "manager":  # a run-stream helper: the request is sent when it is entered
            watch_manager(rt, read, result)
        elif target.role == "create":
            object_id = get(result, "id")
            if isinstance(object_id, str) and object_id:
                MEMORY.remember(object_id, read.customer, read.metadata, pending=False)
            bill_object(read, result)
        elif target.role == "list":  # a page: billed now, and its later pages as they are fetched
            bill = page_biller(read)
            bill(result)
            return BilledPage(result, bill)
        else:
            bill_object(read, result)
    except Exception as exc:
        report_internal_error("object usage", exc)
    return result


def _stream(rt: Runtime, read: _Read, stream: Any) -> Any:
    """`retrieve(stream=True)`: the proxy bills the terminal event's response if it is a background one."""
    event = UsageEvent(read.api, read.start_wall, 0.0, read.customer, read.metadata, True)
    event.provider = cached_provider_of(read.client)
    recorder, fallback = read.recorder, (read.customer, read.metadata)

    def sink(finished: UsageEvent) -> None:
        if finished.source_id:  # only a background response is billed by its retrieval
            as_object_event(recorder, finished, fallback)

    capture = StreamCapture(event, ("text", "events"), {}, read.start_perf, sink, False)
    proxy_cls = StreamProxy if isinstance(stream, rt.stream_types) else AsyncStreamProxy
    return proxy_cls(stream, capture)


def _begin(
    rt: Runtime, target: Target, wrapped: Any, instance: Any, kwargs: dict[str, Any]
) -> Optional[_Read]:
    payer = who_pays(rt, instance, kwargs)  # ValueError on bad input: the caller's
    if payer is None:
        return None
    client, recorder, customer, metadata = payer
    try:
        if target.role == "create":
            write_customer_metadata(rt.object_metadata, kwargs, customer, wrapped)
        return _Read(target.api, target.reads or "", client, recorder, customer, metadata)
    except Exception as exc:
        report_internal_error("object call setup", exc)
        return None


def make_object_wrappers(target: Target, rt: Runtime) -> tuple[Wrapper, Wrapper]:
    """The (sync, async) wrappers of an object row. The call runs inside the nesting guard, so neither
    an outer patched call nor the safety net bills it as a request of its own."""
    if target.role == "block":  # a helper that calls object rows itself: see object_blocks.py
        return make_block_wrappers()

    def start(wrapped: Any, instance: Any, kwargs: dict[str, Any]) -> Optional[_Read]:
        """Who pays, unless nested in a billed call; our keywords never reach OpenAI either way."""
        read = None if inside_call.get() else _begin(rt, target, wrapped, instance, kwargs)
        if read is None:
            take_our_kwargs(kwargs)
        return read

    def sync_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        read = start(wrapped, instance, kwargs)
        token = inside_call.set(True)
        try:
            result = wrapped(*args, **kwargs)
        finally:
            inside_call.reset(token)
        return result if read is None else _after(rt, target, read, result)

    async def _observed(read: Optional[_Read], awaitable: Any) -> Any:
        token = inside_call.set(True)
        try:
            result = await awaitable
        finally:
            inside_call.reset(token)
        return result if read is None else _after(rt, target, read, result)

    def async_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        read = start(wrapped, instance, kwargs)
        token = inside_call.set(True)
        try:
            result = wrapped(*args, **kwargs)  # a coroutine (nothing sent yet), or a lazy paginator
        finally:
            inside_call.reset(token)
        if read is not None and target.role == "manager":  # a run-stream manager, returned unawaited
            return _after(rt, target, read, result)
        if read is None or not hasattr(result, "__await__"):
            return result
        if hasattr(result, "__aiter__"):  # `list()`: a paginator, awaited for its first page or iterated
            return AwaitedPages(result, page_biller(read))
        return _observed(read, result)

    return sync_wrapper, async_wrapper
