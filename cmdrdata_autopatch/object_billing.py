"""Billing a server-side object once it is finished: who pays, the event, and once per object.

The memory of which customer created which object (bounded, this process), the background responses not yet
seen finished, and `bill_object`, which turns a terminal object into one event whose id is derived from the
object's id (so two processes, or a hundred polls, bill it once). Used by the object rows' wrappers
(`objects.py`) and by the call path itself (`observe.py`: a background create, a background stream), which
is why it sits below both.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Optional

from .derived import SessionEvent, derived_event_id, first_time
from .events import UsageEvent
from .recorder import emit
from .resolve import cached_provider_of, fill_from_result
from .usage import count, get

logger = logging.getLogger("cmdrdata_autopatch")

MEMORY_LIMIT = 10_000
METADATA_KEY = "cmdrdata_customer_id"
MAX_METADATA_KEYS = 16  # OpenAI's limit on an object's metadata

TERMINAL = {
    "response": frozenset(("completed", "failed", "incomplete", "cancelled")),
    "batch": frozenset(("completed", "failed", "cancelled", "expired")),
    "run": frozenset(("completed", "failed", "cancelled", "expired", "incomplete")),
    "job": frozenset(("succeeded", "failed", "cancelled")),
    "eval_run": frozenset(("completed", "failed", "canceled", "cancelled")),
    "turn": frozenset(("completed", "failed", "cancelled")),
}


def _takes_metadata(method: Any) -> bool:
    """Whether the SDK method has a `metadata` parameter (`fine_tuning.jobs.create` only from 1.65.4):
    passing one it does not take would break the caller's call."""
    code = getattr(method, "__code__", None)
    if code is None:
        return False
    known = _TAKES_METADATA.get(code)
    if known is None:
        try:
            known = _TAKES_METADATA[code] = "metadata" in inspect.signature(method).parameters
        except (TypeError, ValueError):
            known = False
    return known


_TAKES_METADATA: dict[Any, bool] = {}


def write_customer_metadata(enabled: bool, kwargs: dict[str, Any], customer: Any, method: Any) -> None:
    """CMDRDATA_OBJECT_METADATA=customer (`enabled`): write the paying customer into the `metadata` of an
    object that finishes later (a create call's keywords), so another process that reads it back finished
    bills the right customer. Left alone: no customer, a method without `metadata`, a caller's metadata
    that is not a dict, already names one, or is full."""
    if customer is None or not enabled or not _takes_metadata(method):
        return
    current = kwargs.get("metadata")
    if current is None or type(current).__name__ in ("NotGiven", "Omit"):
        current = {}
    if not isinstance(current, dict) or METADATA_KEY in current or len(current) >= MAX_METADATA_KEYS:
        return
    kwargs["metadata"] = {**current, METADATA_KEY: str(customer)}


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
    if remembered is None and read.reads == "turn":  # an agent turn: the session's creator
        session_id = get(obj, "session_id")
        remembered = MEMORY.recall(session_id) if isinstance(session_id, str) else None
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


def bill_object(read: _Read, obj: Any, streaming: bool = False) -> None:
    """Bill one object if it is terminal and billable here; at most once per process (and per API).
    `streaming`: the object was read from a stream's event (a run stream, an agent session stream)."""
    object_id = get(obj, "id")
    if not isinstance(object_id, str) or not object_id or not _is_terminal(read.reads, obj):
        return
    if read.reads == "response" and get(obj, "background") is not True:
        return  # an ordinary response: its create call billed it
    if read.reads == "turn" and get(obj, "object") not in (None, "agent.session.turn"):
        return  # `sessions.create` gives the session (remembered: its turns bill its creator), no turn
    if read.reads == "batch" and not _has_usage(obj):
        if first_time(f"no-usage/{object_id}"):
            MEMORY.count("batches_without_usage")
            logger.debug("cmdrdata-autopatch: batch %s is %s but reports no usage", object_id, obj.status)
        return
    if read.reads == "eval_run":
        _bill_per_model(read, obj, object_id)
        return
    customer, metadata = _payer(read, object_id, obj)
    latency = time.perf_counter() - read.start_perf
    event = SessionEvent(read.api, read.start_wall, latency, customer, metadata, streaming, None)
    event.provider = cached_provider_of(read.client)
    fill_from_result(event, "text", {}, obj)
    if read.reads == "batch":
        event.service_tier = "batch"  # Batch API work is billed at the batch rate
    elif read.reads == "job" and not _trained(event, obj):
        return  # a job that trained nothing bills nothing
    else:
        _mark_failed(event, obj)
    event.set_ids(derived_event_id(event.provider, read.api, object_id), object_id, event.service_tier)
    _emit_once(read.recorder, event, object_id)


def _mark_failed(event: UsageEvent, obj: Any) -> None:
    if get(obj, "status") == "failed":
        event.error_occurred = True
        event.error_type = "response.failed"
        code = get(get(obj, "error"), "code")
        event.error_code = code if isinstance(code, str) else None


def _model_usage(entry: Any) -> Optional[tuple[str, dict[str, Any]]]:
    """(model, usage copy) of one `per_model_usage` entry of an evals run, or None. The entry names its
    cached tokens at the top level: the copy also files them where every usage object has them."""
    model = get(entry, "model_name") or get(entry, "run_model_name")  # renamed by the SDK, same wire name
    if not isinstance(model, str) or not model:
        return None
    usage: dict[str, Any] = {"model_name": model}
    for name in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "invocation_count"):
        value = count(get(entry, name))
        if value is not None:
            usage[name] = value
    if "prompt_tokens" not in usage and "completion_tokens" not in usage:
        return None
    usage["prompt_tokens_details"] = {"cached_tokens": usage.get("cached_tokens", 0)}
    return model, usage


def _bill_per_model(read: _Read, run: Any, object_id: str) -> None:
    """An evals run: one event per model it used (`per_model_usage`), each with its own derived id
    (run id + model), so a run that graded with two models bills two events, each once."""
    entries = get(run, "per_model_usage")
    customer, metadata = _payer(read, object_id, run)
    latency = time.perf_counter() - read.start_perf
    provider = cached_provider_of(read.client)
    for entry in entries if isinstance(entries, list) else ():
        found = _model_usage(entry)
        if found is None:
            continue
        model, usage = found
        event = SessionEvent(read.api, read.start_wall, latency, customer, metadata, False, model)
        event.provider = provider
        event.usage_details = usage
        _mark_failed(event, run)
        event.set_ids(derived_event_id(provider, read.api, object_id, model), object_id, None)
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


def _watch_parse(raw: Any, after: Callable[[Any], Any]) -> None:
    """A raw response (`with_raw_response.retrieve`, which `runs.poll` uses): what `parse()` gives goes
    through `after` (which bills it, or wraps a stream it returned, and never raises)."""
    parse = raw.parse
    last: list[Any] = []  # [parsed, what the caller got]: the SDK caches parse(), so must we

    def bill(obj: Any) -> Any:
        if last and last[0] is obj:
            return last[1]
        last[:] = [obj, after(obj)]
        return last[1]

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
