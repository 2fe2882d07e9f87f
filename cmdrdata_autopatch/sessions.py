"""Bill WebSocket sessions: Realtime, the Responses WebSocket and Live (`kind="connect"` table rows).

A WebSocket session is not a call: `connect()` returns a connection manager at once, the socket opens on
`__enter__` / `enter()`, and usage arrives later in server events that the application reads in its own
way (`recv()`, iteration, `recv_bytes()` + `parse_event()`, `dispatch_events()`), often in another task.
Every one of those reading styles goes through the connection's `parse_event()` on every release that has
these surfaces (1.58.0 through 3.57.0), so that single method is where we look, in place on the class:
each event the application reads is seen once, whichever way it reads, and is handed back untouched.
We never send anything on the socket.

Three hooks per row, all restorable by `unpatch()` (they are recorded like any other wrapped method):
  * `connect()` (the table's row): takes our `customer_id=` / `cmdrdata_metadata=` / `track_usage=`
    keywords off and snapshots the attribution (keyword, else the `customer(...)` block active now), so a
    long session read in other tasks never changes customer under it;
  * the manager's `__enter__` / `enter` / `__aenter__`: ties the snapshot to the connection it opened;
  * the connection's `parse_event` (and `close`, which ends a Live session that never saw
    `session.closed`).

What a session bills is read by `realtime_usage` (pure). Each billed server object gets a derived event id
(DESIGN.md section 4): uuid5(NAMESPACE, "<provider>/<api>/<source_id>[/<part>]"), so a reconnect that
replays a `response.done`, a second observer of the same Live session, or another process, bills nothing
twice; inside one process the repeat is not even recorded.
"""

from __future__ import annotations

import threading
import time
import weakref
from types import ModuleType
from typing import Any, Callable, Optional

from . import context
from . import realtime_usage as ru
from .attribution import take_our_kwargs
from .derived import SessionEvent, derived_event_id, first_time
from .diagnostics import report_internal_error
from .resolve import provider_of
from .runtime import RUNTIME
from .usage import get

Wrap = Callable[[type, str, Any, str], bool]  # patching's `_wrap_method(cls, name, wrapper_fn, key)`


class Attribution:
    """Who a session bills and where, snapshotted when it was opened."""

    __slots__ = ("client", "customer_id", "metadata", "model", "provider", "session_id", "track")

    def __init__(
        self, client: Any, customer_id: Any, metadata: Any, model: Any, track: bool, session_id: Any = None
    ) -> None:
        ctx = context.current()
        self.client = client
        self.customer_id: Optional[str] = customer_id if customer_id is not None else ctx.customer_id
        if ctx.metadata:
            metadata = {**ctx.metadata, **metadata} if metadata else ctx.metadata
        self.metadata: Optional[dict[str, Any]] = metadata
        self.model: Optional[str] = model if isinstance(model, str) and model else None
        self.provider = provider_of(client)
        self.track = track
        self.session_id: Optional[str] = session_id if isinstance(session_id, str) and session_id else None


# --- the observer of one connection ----------------------------------------------------------------


class SessionObserver:
    """Sees every server event one connection parses and records what they bill."""

    def __init__(self, attribution: Attribution, protocol: str) -> None:
        self.attribution = attribution
        self.protocol = protocol
        self.opened = time.time()
        self.opened_perf = time.perf_counter()
        self.session_id: Optional[str] = attribution.session_id
        self.model: Optional[str] = attribution.model
        self.transcription_model: Optional[str] = None
        self.started: dict[str, tuple[float, float]] = {}  # response id -> (wall, perf) at response.created
        self.live_usage: Optional[dict[str, Any]] = None
        self.live_done = False
        self.lock = threading.Lock()

    def observe(self, event: Any) -> None:
        kind = get(event, "type")
        if not isinstance(kind, str) or not self.attribution.track:
            return
        if self.protocol == "realtime":
            self._realtime(kind, event)
        elif self.protocol == "responses":
            self._responses(kind, event)
        else:
            self._live(kind, event)

    def _realtime(self, kind: str, event: Any) -> None:
        if kind in ru.REALTIME_SESSION:
            session_id, model, transcription = ru.realtime_session(event)
            self.session_id = session_id or self.session_id
            self.model = model or self.model
            self.transcription_model = transcription or self.transcription_model
        elif kind == "response.created":
            self._started(get(get(event, "response"), "id"))
        elif kind == ru.REALTIME_RESPONSE_DONE:
            self._emit(ru.realtime_response(event, self.model))
        elif kind == ru.REALTIME_TRANSCRIPTION:
            billing = ru.realtime_transcription(event, self.transcription_model or self.model)
            if billing is not None:
                self._emit(billing)

    def _responses(self, kind: str, event: Any) -> None:
        if kind == "response.created":
            self._started(get(get(event, "response"), "id"))
        elif kind in ru.RESPONSES_TERMINAL:
            billing = ru.responses_terminal(event)
            if billing is not None:
                self._emit(billing)

    def _live(self, kind: str, event: Any) -> None:
        if kind in ru.LIVE_SESSION or kind == ru.LIVE_CLOSED:
            session_id, model = ru.live_session(event)
            self.session_id = session_id or self.session_id
            self.model = model or self.model
        if kind == ru.LIVE_USAGE:
            usage = ru.live_usage(event)
            if usage is not None:
                with self.lock:
                    self.live_usage = usage  # cumulative: the latest replaces, never adds
        elif kind == ru.LIVE_CLOSED:
            usage = ru.live_usage(event)
            with self.lock:
                if self.live_done:
                    return
                self.live_done = True
                usage = usage if usage is not None else self.live_usage
            if usage is not None:
                self._emit(ru.live_billing(self.session_id, self.model, usage, final=True), self.opened)
        elif kind == ru.LIVE_RESPONSE:
            self._responses_nested(get(event, "event"))
        elif kind == ru.LIVE_DECISION:
            billing = ru.live_decision(event)
            if billing is not None:
                self._emit(billing)

    def _responses_nested(self, nested: Any) -> None:
        kind = get(nested, "type")
        if isinstance(kind, str):
            self._responses(kind, nested)

    def finish(self) -> None:
        """The connection closed (or was collected): a Live session that never reported `session.closed`
        bills its last cumulative usage, flagged estimated."""
        if self.protocol != "live":
            return
        with self.lock:
            if self.live_done or self.live_usage is None:
                return
            self.live_done = True
            usage = self.live_usage
        self._emit(ru.live_billing(self.session_id, self.model, usage, final=False), self.opened)

    def _started(self, response_id: Any) -> None:
        if isinstance(response_id, str) and len(self.started) < 1024:
            self.started[response_id] = (time.time(), time.perf_counter())

    def _emit(self, billing: ru.Billing, since: Optional[float] = None) -> None:
        attribution = self.attribution
        recorder = RUNTIME.recorder_for(attribution.client)
        if recorder is None:
            return
        derived = None
        if billing.source_id is not None:
            derived = derived_event_id(attribution.provider, billing.api, billing.source_id, billing.part)
            if not first_time(str(derived)):
                return  # replayed (reconnect) or seen by a second observer: billed already
        now, perf = time.time(), time.perf_counter()
        start = self.started.pop(billing.source_id, None) if billing.source_id else None
        if since is not None:
            start_wall, latency = since, perf - self.opened_perf
        elif start is not None:
            start_wall, latency = start[0], perf - start[1]
        else:
            start_wall, latency = now, 0.0
        metadata = attribution.metadata
        if self.session_id and billing.api != "live" and "session_id" not in (metadata or {}):
            metadata = {**(metadata or {}), "session_id": self.session_id}  # which session it came from
        event = SessionEvent(
            billing.api, start_wall, max(latency, 0.0), attribution.customer_id, metadata, True, billing.model
        )
        event.set_ids(derived, billing.source_id, billing.service_tier)
        _fill(event, billing, attribution.provider)
        try:
            recorder.record(event)
        except Exception as exc:
            report_internal_error("exporter.record", exc)


def _fill(event: SessionEvent, billing: ru.Billing, provider: Optional[str]) -> None:
    event.provider = provider
    event.input_tokens = billing.input_tokens
    event.output_tokens = billing.output_tokens
    event.total_tokens = billing.total_tokens
    event.cached_input_tokens = billing.cached_input_tokens
    event.reasoning_tokens = billing.reasoning_tokens
    event.usage_details = billing.usage_details
    event.usage_source = billing.usage_source
    event.units = billing.units
    if billing.error_type is not None:
        event.error_occurred = True
        event.error_type = billing.error_type
        event.error_code = billing.error_code
        event.error_message = billing.error_message


# --- hooks ---------------------------------------------------------------------------------------------

_pending: weakref.WeakKeyDictionary[Any, Attribution] = weakref.WeakKeyDictionary()  # manager -> snapshot
_observers: weakref.WeakKeyDictionary[Any, SessionObserver] = weakref.WeakKeyDictionary()  # connection
_protocols: dict[type, str] = {}  # hooked connection / manager class -> "realtime" | "responses" | "live"
_map_lock = threading.Lock()


def _connect_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`connect(...)`: our keywords off, the attribution snapshotted now, the manager returned as is."""
    customer_id, metadata, track = take_our_kwargs(kwargs)
    manager = wrapped(*args, **kwargs)
    try:
        client = getattr(instance, "_client", None)
        # a Live sideband attaches to a session it names (a fork's session gets a new id: not that one)
        session_id = kwargs.get("session_id") if type(instance).__name__.endswith("Sideband") else None
        snapshot = Attribution(client, customer_id, metadata, kwargs.get("model"), track, session_id)
        with _map_lock:
            _pending[manager] = snapshot
    except Exception as exc:
        report_internal_error("realtime connect", exc)
    return manager


def make_connect_wrappers(row: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The wrappers of a `kind="connect"` row: `connect` is a plain method on the sync and async twins."""
    return _connect_wrapper, _connect_wrapper


def _manager_client(manager: Any) -> Any:
    for klass in type(manager).__mro__:  # the SDK keeps it name-mangled: `self.__client`
        client = manager.__dict__.get(f"_{klass.__name__}__client") if hasattr(manager, "__dict__") else None
        if client is not None:
            return client
    return None


def _bind(manager: Any, connection: Any) -> None:
    """The manager opened `connection`: the session's observer starts with the connect-time snapshot."""
    try:
        with _map_lock:
            snapshot = _pending.get(manager)
        if snapshot is None:  # connect() ran before patch(): the context at opening time
            snapshot = Attribution(_manager_client(manager), None, None, None, True)
        protocol = _protocols.get(type(connection)) or _protocols.get(type(manager), "realtime")
        observer = SessionObserver(snapshot, protocol)
        with _map_lock:
            _observers[connection] = observer
        if protocol == "live":
            weakref.finalize(connection, observer.finish)
    except Exception as exc:
        report_internal_error("realtime session open", exc)


def _enter_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    connection = wrapped(*args, **kwargs)
    _bind(instance, connection)
    return connection


def _aenter_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    async def enter() -> Any:
        connection = await wrapped(*args, **kwargs)
        _bind(instance, connection)
        return connection

    return enter()


def _observer_of(connection: Any) -> Optional[SessionObserver]:
    observer = _observers.get(connection)
    if observer is None:  # opened before patch(): attribute to the context reading it first
        protocol = _protocols.get(type(connection))
        if protocol is None:
            return None
        observer = SessionObserver(Attribution(None, None, None, None, True), protocol)
        with _map_lock:
            observer = _observers.setdefault(connection, observer)
    return observer


def _parse_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Every server event the application reads passes here once; it is returned exactly as parsed."""
    event = wrapped(*args, **kwargs)
    try:
        observer = _observer_of(instance)
        if observer is not None:
            observer.observe(event)
    except Exception as exc:
        report_internal_error("realtime event", exc)
    return event


def _finish(connection: Any) -> None:
    try:
        observer = _observers.get(connection)
        if observer is not None:
            observer.finish()
    except Exception as exc:
        report_internal_error("realtime session close", exc)


def _close_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return wrapped(*args, **kwargs)
    finally:
        _finish(instance)


def _aclose_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    async def close() -> Any:
        try:
            return await wrapped(*args, **kwargs)
        finally:
            _finish(instance)

    return close()


def hook_connection_classes(module: ModuleType, row: Any, wrap: Wrap) -> list[str]:
    """Wrap the manager and connection classes that serve `row`'s `connect` (named `<Class>Connection...`
    in the same module on every release). Returns what could not be wrapped."""
    problems: list[str] = []
    prefix = row.class_name
    hooks = (
        (f"{prefix}ConnectionManager", (("__enter__", _enter_wrapper), ("enter", _enter_wrapper))),
        (f"Async{prefix}ConnectionManager", (("__aenter__", _aenter_wrapper), ("enter", _aenter_wrapper))),
        (f"{prefix}Connection", (("parse_event", _parse_wrapper), ("close", _close_wrapper))),
        (f"Async{prefix}Connection", (("parse_event", _parse_wrapper), ("close", _aclose_wrapper))),
    )
    for class_name, methods in hooks:
        cls = getattr(module, class_name, None)
        if not isinstance(cls, type):
            problems.append(f"{class_name} not found")
            continue
        _protocols[cls] = row.api
        for method, wrapper_fn in methods:
            if not wrap(cls, method, wrapper_fn, f"{module.__name__}:{class_name}.{method}"):
                problems.append(f"{class_name}.{method} not found")
    return problems
