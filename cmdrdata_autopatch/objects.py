"""Usage read from server-side objects: billed once per object, whichever process sees it finished first.

Some work is billed after the call that started it returned: a background response (`responses.create(
background=True)` answers at once with a queued response and no usage), a batch (its `usage` is filled in
when it completes). The call that creates such an object bills nothing (an estimate there would bill the
work twice); the usage is read from the object itself when a later call returns it terminal:
`responses.retrieve` (also with `stream=True`, which is what `responses.stream(response_id=)` does),
`responses.cancel`, `batches.retrieve`, `batches.list` (the page returned; later pages are not fetched by
us), assistants `runs.retrieve` (also through `with_raw_response`, which `runs.poll` and `create_and_poll`
use), `fine_tuning.jobs.retrieve` (`trained_tokens` as `units.trained_tokens`). The table rows say which
method returns which object (`kind="object"`, `reads`, `role`).

Exactly once: the event's id is derived from the object id (derived.py), so a second poll, a second
process, or a replay produces the same id, and the CmdrData API deduplicates it; `first_time()` spares the
exporter the repeats inside one process (polling one batch 100 times records one event). A retrieved
response that was not a background one is never billed here: its own `create` call billed it.

Who pays: the customer active (or passed as `customer_id=`) when the object was created, remembered by
object id in this process (bounded: the newest `MEMORY_LIMIT` objects); else the customer named in the
object's own `metadata["cmdrdata_customer_id"]`; else the customer of the call (or `customer()` block)
that retrieved it. Objects that another process created are therefore billed to the retrieving call's
customer unless the creator opted in to writing its customer into the object: with
`CMDRDATA_OBJECT_METADATA=customer`, `batches.create` gets `metadata={"cmdrdata_customer_id": ...}` added
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

import inspect
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Optional

from .attribution import bill_to, context_now, take_our_kwargs
from .derived import SessionEvent, derived_event_id, first_time
from .diagnostics import report_internal_error
from .events import UsageEvent
from .observe import emit
from .resolve import cached_provider_of, fill_from_result
from .runtime import Runtime
from .streams import AsyncStreamProxy, StreamCapture, StreamProxy, _Proxy
from .targets import Target
from .usage import get
from .wrappers import inside_call

logger = logging.getLogger("cmdrdata_autopatch")

MEMORY_LIMIT = 10_000
METADATA_KEY = "cmdrdata_customer_id"
MAX_METADATA_KEYS = 16  # OpenAI's limit on an object's metadata

TERMINAL = {
    "response": frozenset(("completed", "failed", "incomplete", "cancelled")),
    "batch": frozenset(("completed", "failed", "cancelled", "expired")),
    "run": frozenset(("completed", "failed", "cancelled", "expired", "incomplete")),
    "job": frozenset(("succeeded", "failed", "cancelled")),
}

Wrapper = Callable[..., Any]


class _Memory:
    """Customers by object id, background responses not yet seen terminal, and counters (bounded)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.customers: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self.pending: OrderedDict[str, None] = OrderedDict()
        self.counts = {"objects_billed": 0, "batches_without_usage": 0}

    def remember(self, object_id: str, customer: Any, metadata: Any, pending: bool) -> None:
        with self.lock:
            self.customers[object_id] = (customer, metadata)
            self.customers.move_to_end(object_id)
            if len(self.customers) > MEMORY_LIMIT:
                self.customers.popitem(last=False)
            if pending:
                self.pending[object_id] = None
                if len(self.pending) > MEMORY_LIMIT:
                    self.pending.popitem(last=False)

    def recall(self, object_id: str) -> Optional[tuple[Any, Any]]:
        with self.lock:
            return self.customers.get(object_id)

    def settled(self, object_id: str) -> None:
        with self.lock:
            self.pending.pop(object_id, None)

    def count(self, name: str) -> None:
        with self.lock:
            self.counts[name] += 1

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {"background_pending": len(self.pending), **self.counts}

    def clear(self) -> None:
        with self.lock:
            self.customers.clear()
            self.pending.clear()
            for name in self.counts:
                self.counts[name] = 0


MEMORY = _Memory()


def stats() -> dict[str, int]:
    """Background responses never seen terminal, objects billed, terminal batches without usage."""
    return MEMORY.stats()


class _Read:
    """One call of an object row: who pays, where events go, when it started."""

    __slots__ = ("api", "client", "customer", "metadata", "reads", "recorder", "start_perf", "start_wall")

    def __init__(
        self, api: str, reads: str, client: Any, recorder: Any, customer: Any, metadata: Any
    ) -> None:
        self.api = api
        self.reads = reads
        self.client = client
        self.recorder = recorder
        self.customer = customer
        self.metadata = metadata
        self.start_wall = time.time()
        self.start_perf = time.perf_counter()


def _is_terminal(reads: str, obj: Any) -> bool:
    status = get(obj, "status")
    return isinstance(status, str) and status in TERMINAL.get(reads, ())


def _payer(read: _Read, object_id: str, obj: Any) -> tuple[Any, Any]:
    """(customer, metadata): remembered at create > the object's own metadata > the retrieving call."""
    remembered = MEMORY.recall(object_id)
    if remembered is not None and remembered[0] is not None:
        return remembered
    own = get(get(obj, "metadata"), METADATA_KEY)
    if isinstance(own, str) and own:
        return own, read.metadata
    return read.customer, read.metadata


def _has_usage(obj: Any) -> bool:
    usage = get(obj, "usage")
    if usage is None:
        extra = getattr(obj, "__pydantic_extra__", None)  # `Batch.usage` on releases before 2.0.0
        usage = extra.get("usage") if isinstance(extra, dict) else None
    return usage is not None


def bill_object(read: _Read, obj: Any) -> None:
    """Bill one object if it is terminal and billable here; at most once per process (and per API)."""
    object_id = get(obj, "id")
    if not isinstance(object_id, str) or not object_id or not _is_terminal(read.reads, obj):
        return
    if read.reads == "response" and get(obj, "background") is not True:
        return  # an ordinary response: its create call billed it
    if read.reads == "batch" and not _has_usage(obj):
        if first_time(f"no-usage/{object_id}"):
            MEMORY.count("batches_without_usage")
            logger.debug("cmdrdata-autopatch: batch %s is %s but reports no usage", object_id, obj.status)
        return
    customer, metadata = _payer(read, object_id, obj)
    latency = time.perf_counter() - read.start_perf
    event = SessionEvent(read.api, read.start_wall, latency, customer, metadata, False, None)
    event.provider = cached_provider_of(read.client)
    fill_from_result(event, "text", {}, obj)
    if read.reads == "batch":
        event.service_tier = "batch"  # Batch API work is billed at the batch rate
    elif read.reads == "job" and not _trained(event, obj):
        return  # a job that trained nothing bills nothing
    elif get(obj, "status") == "failed":
        event.error_occurred = True
        event.error_type = "response.failed"
        code = get(get(obj, "error"), "code")
        event.error_code = code if isinstance(code, str) else None
    event.set_ids(derived_event_id(event.provider, read.api, object_id), object_id, event.service_tier)
    _emit_once(read.recorder, event, object_id)


def _trained(event: UsageEvent, job: Any) -> bool:
    """A fine-tuning job bills its `trained_tokens` (units.trained_tokens); its model is the tuned one."""
    trained = get(job, "trained_tokens")
    if type(trained) is not int or trained <= 0:
        return False
    event.units = {"trained_tokens": trained}
    event.usage_source = "reported"
    tuned = get(job, "fine_tuned_model")
    if isinstance(tuned, str) and tuned:
        event.model = tuned
    return True


def _watch_parse(read: _Read, raw: Any) -> None:
    """A raw response (`with_raw_response.retrieve`, which `runs.poll` uses): bill what `parse()` gives."""
    parse = raw.parse

    def bill(obj: Any) -> Any:
        try:
            bill_object(read, obj)
        except Exception as exc:
            report_internal_error("object usage", exc)
        return obj

    if inspect.iscoroutinefunction(parse):

        async def parse_async(*args: Any, **kwargs: Any) -> Any:
            return bill(await parse(*args, **kwargs))

        raw.parse = parse_async
    else:
        raw.parse = lambda *args, **kwargs: bill(parse(*args, **kwargs))


def _emit_once(recorder: Any, event: UsageEvent, object_id: str) -> None:
    MEMORY.settled(object_id)
    if first_time(event.event_id):
        MEMORY.count("objects_billed")
        emit(recorder, event)


def as_object_event(recorder: Any, event: UsageEvent, fallback: tuple[Any, Any]) -> None:
    """The sink of a responses stream: a stream of a background response (`event.source_id` set by the
    stream capture) is billed as its object, with the derived id; any other stream event as it is."""
    object_id = event.source_id
    if not object_id:
        emit(recorder, event)
        return
    remembered = MEMORY.recall(object_id)
    customer, metadata = remembered if remembered and remembered[0] is not None else fallback
    billed = SessionEvent(event.api, event.request_start_time, event.latency_s, customer, metadata, True)
    for name in UsageEvent.__slots__:
        if name in ("customer_id", "metadata", "streaming") or name.startswith("_"):
            continue
        try:
            setattr(billed, name, object.__getattribute__(event, name))
        except AttributeError:
            continue  # never set on the stream's event: the default stands
    billed.set_ids(derived_event_id(billed.provider, event.api, object_id), object_id, billed.service_tier)
    _emit_once(recorder, billed, object_id)


def created_background(recorder: Any, client: Any, result: Any, customer: Any, metadata: Any) -> None:
    """`responses.create(background=True)` answered: remember who pays, bill nothing yet (or now, if the
    response came back already finished)."""
    object_id = get(result, "id")
    if not isinstance(object_id, str) or not object_id:
        return
    terminal = _is_terminal("response", result)
    MEMORY.remember(object_id, customer, metadata, pending=not terminal)
    if terminal:
        read = _Read("responses", "response", client, recorder, customer, metadata)
        bill_object(read, result)


def _opt_in_metadata(rt: Runtime, kwargs: dict[str, Any], customer: Any) -> None:
    """CMDRDATA_OBJECT_METADATA=customer: write the paying customer into the object's own metadata."""
    if customer is None or not rt.object_metadata:
        return
    current = kwargs.get("metadata")
    if current is None or type(current).__name__ in ("NotGiven", "Omit"):
        current = {}
    if not isinstance(current, dict) or METADATA_KEY in current or len(current) >= MAX_METADATA_KEYS:
        return
    kwargs["metadata"] = {**current, METADATA_KEY: str(customer)}


def _after(rt: Runtime, target: Target, read: _Read, result: Any) -> Any:
    """What the caller gets for `result`, with the object remembered or billed; never raises."""
    try:
        if target.role == "create":
            object_id = get(result, "id")
            if isinstance(object_id, str) and object_id:
                MEMORY.remember(object_id, read.customer, read.metadata, pending=False)
            bill_object(read, result)
        elif target.role == "list":
            data = get(result, "data")
            for item in data if isinstance(data, list) else ():
                bill_object(read, item)
        elif isinstance(result, rt.stream_types + rt.async_stream_types):
            return _stream(rt, read, result)
        elif isinstance(result, rt.raw_types):
            _watch_parse(read, result)
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


def _begin(rt: Runtime, target: Target, instance: Any, kwargs: dict[str, Any]) -> Optional[_Read]:
    customer_id, metadata, track = take_our_kwargs(kwargs)  # ValueError on bad input: the caller's
    if not track:
        return None
    client = getattr(instance, "_client", None)
    recorder = rt.recorder_for(client)
    if recorder is None:
        return None
    try:
        customer, metadata = bill_to(customer_id, metadata, context_now(), rt.default_customer)
        if target.role == "create":
            _opt_in_metadata(rt, kwargs, customer)
        return _Read(target.api, target.reads or "", client, recorder, customer, metadata)
    except Exception as exc:
        report_internal_error("object call setup", exc)
        return None


class _AwaitedPage(_Proxy):
    """An async `list()` paginator that bills the page it yields when awaited. Iterating it (`async for`)
    fetches pages through the SDK's own client, which bills nothing here: as with the sync page, only the
    page `list()` returns is read."""

    def __init__(self, wrapped: Any, after: Callable[[Any], Any]) -> None:
        super().__init__(wrapped)
        self._self_after = after

    def __await__(self) -> Any:
        return self._self_page().__await__()

    async def _self_page(self) -> Any:
        page = await self.__wrapped__
        return self._self_after(page)

    def __aiter__(self) -> Any:
        return self.__wrapped__.__aiter__()


def make_object_wrappers(target: Target, rt: Runtime) -> tuple[Wrapper, Wrapper]:
    """The (sync, async) wrappers of an object row. The call runs inside the nesting guard, so neither
    an outer patched call nor the safety net bills it as a request of its own."""

    def sync_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        nested = inside_call.get()
        read = None if nested else _begin(rt, target, instance, kwargs)
        if nested or read is None:
            take_our_kwargs(kwargs)
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
        nested = inside_call.get()
        read = None if nested else _begin(rt, target, instance, kwargs)
        if nested or read is None:
            take_our_kwargs(kwargs)
        token = inside_call.set(True)
        try:
            result = wrapped(*args, **kwargs)  # a coroutine (nothing sent yet), or a lazy paginator
        finally:
            inside_call.reset(token)
        if read is None or not hasattr(result, "__await__"):
            return result
        if hasattr(result, "__aiter__"):  # `list()`: a paginator, awaited for its first page or iterated
            return _AwaitedPage(result, lambda page: _after(rt, target, read, page))
        return _observed(read, result)

    return sync_wrapper, async_wrapper
