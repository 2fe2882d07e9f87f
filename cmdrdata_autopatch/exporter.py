"""Where recorded events go: the exporter seam, and the billing-grade background exporter.

The wrappers know one thing about an exporter: it has `record(event)`, which must be O(1), never block and
never raise. `MemoryExporter` keeps events in a list (tests, notebooks, `patch(exporter="memory")`),
`NullExporter` discards them, and `BackgroundExporter` delivers them through a transport (`transports.py`)
from background threads, with an optional disk spool (`spool.py`).

How `BackgroundExporter` keeps its promises (research/delivery.md section d):

- `record()` takes one lock for a few O(1) operations (append to a deque, bump a counter, maybe notify) and
  returns. It never serializes, never does I/O and never raises. Events arrive *unresolved* (they hold the
  OpenAI response objects); turning them into bytes is the background thread's job.
- Two daemon threads, started lazily by the first event of each process, both asleep on a `Condition` with
  no timeout while there is nothing to do (no periodic wake-ups: an idle thread that wakes every 100 ms costs
  the application ~20 µs per call through the GIL):
  * the *intake* thread drains the inbox when `batch_size` events are waiting or `flush_interval` after the
    first one arrived, and serializes them (`event.to_json()`), dropping the references to the response
    objects promptly. It never touches the network, so it keeps doing this while the backend hangs, which is
    also why byte accounting (`max_queue_bytes`) can apply to real, serialized bodies;
  * the *sender* thread posts one event at a time. A retryable failure pauses the **whole pipeline** (full
    jitter exponential backoff capped at 30 s; a server `Retry-After` is a floor), so an outage costs one
    probe per pause, never one request per queued event. 401/403 pause longer and keep every event.
- Bounded memory: at most `queue_size` events and `max_queue_bytes` of bodies. With a spool, the excess, and
  everything that has waited through an outage longer than `outage_spool_after`, goes to disk instead of
  being dropped; it is read back when the backend recovers, or by the next process.
- Exit: an `atexit` hook (and a `multiprocessing` finalizer in forked children, which leave through
  `os._exit`) delivers for at most `exit_timeout` seconds (env `CMDRDATA_EXIT_TIMEOUT`, default 2 s), then
  writes what is left to the spool and prints one line on stderr if anything was spooled or lost. It never
  joins a thread, so a hanging backend cannot hang the exit.
- Fork: `os.register_at_fork` (through a weak reference) plus a pid check in `record()` (for servers that fork
  from C without running the hooks) give a child fresh locks, an empty queue (the parent still owns and
  delivers what it queued: a child must never resend it), no threads until its own first event, a new HTTP
  client and new spool segment names.
- Re-entrancy: a thread-local flag marks "inside record()"; a nested call (a GC finalizer or a logging handler
  that records while we hold the lock) goes to a lock-free side deque instead of deadlocking.
- Accounting: `stats()`; at every quiescent point
  `recorded == delivered + sum(dropped.values()) + queued + in_flight + spool_pending`.
  Events replayed from an earlier process's spool are counted apart (`replayed`, `replay_dropped`): they were
  recorded by that process. While anything is dropped a warning is logged at most once a minute.

`build_exporter(settings)` wires the defaults (DESIGN.md section 5):

- `http` (the default with an API key): `HttpTransport` plus a spool in
  `$XDG_CACHE_HOME/cmdrdata-autopatch/spool/<partition>` (`~/.cache/...` when XDG_CACHE_HOME is unset,
  `~/Library/Caches/...` on macOS, `%LOCALAPPDATA%\\...` on Windows, where the spool is off for lack of
  `flock`). `CMDRDATA_SPOOL_DIR` replaces the root; `CMDRDATA_SPOOL_DIR=off` disables the spool. The
  partition is a one-way hash of (endpoint, key), so two applications with different keys never replay
  each other's events.
- `jsonl` (the default without a key): append to `CMDRDATA_JSONL_PATH` (default `./cmdrdata-usage.jsonl`),
  say so once on stderr at the first event, and print a one-line usage summary at exit.
- `console`: one readable line per event on stderr. `memory`: `MemoryExporter`. `none`: `NullExporter`.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import sys
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Optional, Protocol, runtime_checkable

from .config import Settings
from .diagnostics import logger, redact, report_internal_error
from .events import UsageEvent

if TYPE_CHECKING:  # spool.py is imported by make_spool() only: the local exporters never load it
    from .spool import Spool, SpoolEntry
from .transports import (
    ConsoleTransport,
    HttpTransport,
    JsonlTransport,
    Outcome,
    SendResult,
    Transport,
)

KiB = 1024
MiB = 1024 * KiB
_monotonic = time.monotonic


@runtime_checkable
class Recorder(Protocol):
    """Anything that accepts events. `patch(exporter=obj)` takes any object with this method."""

    def record(self, event: UsageEvent) -> Any: ...


class MemoryExporter:
    """Keeps every recorded event in memory, in order. Thread-safe; for tests and interactive use."""

    def __init__(self) -> None:
        # No lock: list.append, list(...) and list.clear are each atomic (under the GIL, and per object on
        # free-threaded builds), and a lock here would be the largest cost of a recorded call.
        self._events: list[UsageEvent] = []

    def record(self, event: UsageEvent) -> bool:
        self._events.append(event)
        return True

    @property
    def events(self) -> list[UsageEvent]:
        """A copy of the events recorded so far."""
        return list(self._events)

    def wire(self) -> list[dict[str, Any]]:
        """The recorded events in their wire form."""
        return [event.to_wire() for event in self.events]

    def clear(self) -> None:
        self._events.clear()

    def flush(self, timeout: float | None = None) -> tuple[int, int]:
        return (len(self.events), 0)

    def shutdown(self, timeout: float | None = None) -> tuple[int, int]:
        return self.flush(timeout)

    def stats(self) -> dict[str, Any]:
        n = len(self.events)
        return {"recorded": n, "delivered": n, "queued": 0, "in_flight": 0}


class NullExporter:
    """Discards events (`CMDRDATA_EXPORTER=none`): instrumentation on, delivery off."""

    def record(self, event: UsageEvent) -> bool:
        return True

    def flush(self, timeout: float | None = None) -> tuple[int, int]:
        return (0, 0)

    def shutdown(self, timeout: float | None = None) -> tuple[int, int]:
        return (0, 0)

    def stats(self) -> dict[str, Any]:
        return {"recorded": 0, "delivered": 0, "queued": 0, "in_flight": 0}


class Backoff:
    """Full-jitter exponential backoff: `uniform(0, min(cap, base * 2**(failures-1)))`.

    Full jitter (not "exponential plus a little noise") so that many processes that lost the backend at the
    same moment do not come back in lock-step. Pass a seeded `random.Random` to make it deterministic.
    """

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: Optional[random.Random] = None) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng if rng is not None else random.Random()

    def delay(self, failures: int) -> float:
        exponent = min(max(failures, 1) - 1, 30)
        return self.rng.uniform(0.0, min(self.cap, self.base * (2.0**exponent)))


class _Item:
    """A serialized event waiting for delivery: the bytes sent on every attempt, and where it came from."""

    __slots__ = ("body", "entry", "event_id", "failures", "local", "settled", "size")

    def __init__(
        self, event_id: str, body: bytes, local: bool = True, entry: Optional[SpoolEntry] = None
    ) -> None:
        self.event_id = event_id
        self.body = body
        self.size = len(body)
        self.local = local  # recorded by this process (counts in this process's accounting)
        self.entry = entry  # the spool line backing it, if it came from the spool
        self.failures = 0
        self.settled = False


def _run_exit_hook(ref: weakref.ReferenceType[BackgroundExporter]) -> None:
    exporter = ref()
    if exporter is not None:
        exporter._on_exit()


def _after_fork_in_child(ref: weakref.ReferenceType[BackgroundExporter]) -> None:
    exporter = ref()
    if exporter is not None:
        exporter._after_fork_child()


def _register_mp_finalizer(exporter: BackgroundExporter) -> None:
    """Runs in a `multiprocessing` child (after its finalizer registry was cleared): exit through it too."""
    import multiprocessing.util as mp_util

    mp_util.Finalize(None, _run_exit_hook, args=(weakref.ref(exporter),), exitpriority=100)


class BackgroundExporter:
    """Queue events in memory, serialize and deliver them from background threads, spool what cannot wait.

    See the module docstring for the design. The public surface: `record`, `flush`, `shutdown`, `stats`.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        queue_size: int = 10_000,
        max_queue_bytes: int = 16 * MiB,
        flush_interval: float = 1.0,
        batch_size: int = 100,
        exit_timeout: float = 2.0,
        spool: Optional[Spool] = None,
        max_event_bytes: int = 32 * KiB,
        backoff: Optional[Backoff] = None,
        retry_after_cap: float = 120.0,
        auth_pause: float = 300.0,
        outage_spool_after: float = 60.0,
        replay_delay: tuple[float, float] = (1.0, 5.0),
        replay_batch: int = 100,
        notice: Optional[str] = None,
        register_exit: bool = True,
    ) -> None:
        self._transport = transport
        self._queue_size = max(1, int(queue_size))
        self._max_queue_bytes = max(1, int(max_queue_bytes))
        # with a spool, memory above half the queue goes to disk, down to a quarter (hysteresis keeps room
        # in the inbox for a burst instead of spilling a few events at a time)
        self._spill_at = max(1, self._queue_size // 2)
        self._spill_to = max(0, self._queue_size // 4)
        self._flush_interval = max(0.0, float(flush_interval))
        self._batch_size = max(1, int(batch_size))
        self.exit_timeout = max(0.0, float(exit_timeout))
        self._spool = spool
        self._max_event_bytes = max_event_bytes
        self._backoff = backoff if backoff is not None else Backoff()
        self._retry_after_cap = retry_after_cap
        self._auth_pause = auth_pause
        self._outage_spool_after = outage_spool_after
        self._replay_delay = replay_delay
        self._replay_batch = max(1, replay_batch)
        self._notice = notice
        self._notice_shown = False
        self._generation = 0
        self._mp_registered = False
        self._reset_state()
        if register_exit:
            ref = weakref.ref(self)
            atexit.register(_run_exit_hook, ref)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(
                    before=lambda: _before_fork(ref), after_in_child=lambda: _after_fork_in_child(ref)
                )
            self._register_mp_after_fork()
        if spool is not None:
            try:
                self._orphan_scan = spool.has_orphans()
            except Exception:
                self._orphan_scan = False
            if self._orphan_scan:  # replay an earlier process's events even if this one records nothing
                self._started = True
                self._start_threads()

    # -- state ---------------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        """Fresh locks, queues and counters: at construction, and in a forked child."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._intake_cv = threading.Condition(self._lock)
        self._send_cv = threading.Condition(self._lock)
        self._done_cv = threading.Condition(self._lock)
        self._tls = threading.local()
        self._inbox: deque[UsageEvent] = deque()
        self._side: deque[UsageEvent] = deque()  # re-entrant records, appended without the lock
        self._ready: deque[_Item] = deque()
        self._current: Optional[_Item] = None
        self._intaking = 0
        self._ready_local = 0
        self._ready_bytes = 0
        self._in_flight_local = 0  # being sent
        self._spilling = 0  # being written to the spool (left out of the record() bound: leaving memory)
        self._spool_pending = 0
        self._recorded = 0
        self._delivered = 0
        self._replayed = 0
        self._retried = 0
        self._spooled = 0
        self._truncated = 0
        self._dropped: dict[str, int] = {}
        self._replay_dropped: dict[str, int] = {}
        self._first_seen: Optional[float] = None
        self._flush_requests = 0
        self._failures = 0
        self._paused_until = 0.0
        self._floor_until = 0.0
        self._outage_since: Optional[float] = None
        self._last_error: Optional[str] = None
        self._auth_logged = False
        self._drop_noted = False
        self._last_drop_warn = -1e9
        self._exiting = False
        self._exit_deadline = 0.0
        self._parking = False
        self._closed = False
        self._exit_done = False
        self._started = False
        self._intake_thread: Optional[threading.Thread] = None
        self._sender_thread: Optional[threading.Thread] = None
        self._orphan_scan = False
        lo, hi = self._replay_delay
        self._orphan_at = _monotonic() + random.uniform(lo, max(lo, hi))

    def _register_mp_after_fork(self) -> None:
        """Have `multiprocessing` children (which exit with `os._exit`, skipping atexit) run our exit hook."""
        if self._mp_registered or "multiprocessing.util" not in sys.modules:
            return
        try:
            import multiprocessing.util as mp_util

            mp_util.register_after_fork(self, _register_mp_finalizer)
            self._mp_registered = True
        except Exception as exc:
            report_internal_error("register multiprocessing hook", exc)

    def _after_fork_child(self) -> None:
        """In a forked child: forget everything the parent queued (the parent delivers it) and start over."""
        self._generation += 1
        mp_registered = getattr(self, "_mp_registered", False)
        self._reset_state()
        self._mp_registered = mp_registered
        after_fork = getattr(self._transport, "after_fork", None)
        if callable(after_fork):
            try:
                after_fork()
            except Exception as exc:
                report_internal_error("transport after fork", exc)
        if self._spool is not None:
            self._spool.after_fork_child()

    # -- the hot path --------------------------------------------------------------------------------

    def record(self, event: UsageEvent) -> bool:
        """Queue `event` for delivery. O(1), never blocks on I/O, never raises. False when it was dropped."""
        try:
            tls = self._tls
            if getattr(tls, "busy", False):  # re-entered (GC finalizer, logging handler): no lock
                if len(self._side) >= self._queue_size:
                    return False
                self._side.append(event)
                return True
            tls.busy = True
            try:
                if self._pid != os.getpid():  # forked without our hook (e.g. uWSGI without fork hooks)
                    self._after_fork_child()
                lock = self._lock
                if not lock.acquire(True, 0.05):
                    self._dropped["lock_timeout"] = self._dropped.get("lock_timeout", 0) + 1
                    self._recorded += 1
                    return False
                try:
                    self._recorded += 1
                    if self._closed:
                        self._drop_locked("after_exit")
                        return False
                    inbox = self._inbox
                    n = len(inbox)
                    if n + self._intaking + self._ready_local + self._in_flight_local >= self._queue_size:
                        noted = self._drop_noted
                        self._drop_locked("queue_full")
                        if not noted:
                            self._intake_cv.notify()  # the intake thread logs the (rate-limited) warning
                        return False
                    inbox.append(event)
                    if n == 0 or n + 1 == self._batch_size:
                        self._intake_cv.notify()
                    start = not self._started
                    if start:
                        self._started = True
                finally:
                    lock.release()
                if start:
                    self._start_threads()
                return True
            finally:
                tls.busy = False
        except Exception as exc:
            report_internal_error("exporter record", exc)
            return False

    def _drop_locked(self, reason: str, n: int = 1, local: bool = True) -> None:
        counts = self._dropped if local else self._replay_dropped
        counts[reason] = counts.get(reason, 0) + n
        self._drop_noted = True

    def _start_threads(self) -> None:
        gen = self._generation
        try:
            intake = threading.Thread(
                target=self._intake_loop, args=(gen,), name="cmdrdata-intake", daemon=True
            )
            sender = threading.Thread(
                target=self._sender_loop, args=(gen,), name="cmdrdata-sender", daemon=True
            )
            self._intake_thread, self._sender_thread = intake, sender
            intake.start()
            sender.start()
        except Exception as exc:  # interpreter shutdown refuses new threads; the exit hook sends inline
            with self._lock:
                if gen == self._generation:
                    self._started = False
            logger.debug("cmdrdata-autopatch: could not start the exporter threads: %r", exc)

    # -- intake: unresolved events -> serialized items -------------------------------------------------

    def _intake_loop(self, gen: int) -> None:
        self._tls.worker = True
        while True:
            try:
                batch = self._next_intake_batch(gen)
                if batch is None:
                    return
                self._show_notice()
                if batch:
                    self._intake(batch)
                    del batch
                self._emit_warnings()
            except Exception as exc:
                report_internal_error("exporter intake", exc)
                time.sleep(0.1)

    def _next_intake_batch(self, gen: int) -> Optional[list[UsageEvent]]:
        with self._lock:
            while True:
                if gen != self._generation:
                    return None
                if self._parking:
                    self._intake_cv.wait()
                    continue
                pending = len(self._inbox) + len(self._side)
                now = _monotonic()
                if pending == 0:
                    self._first_seen = None
                    if self._drop_noted and now - self._last_drop_warn >= 60.0:
                        return []
                    self._intake_cv.wait()
                    continue
                if self._first_seen is None:
                    self._first_seen = now
                due = self._first_seen + self._flush_interval
                if pending >= self._batch_size or self._flush_requests or now >= due:
                    return self._take_inbox_locked()
                self._intake_cv.wait(due - now)

    def _take_inbox_locked(self) -> list[UsageEvent]:
        inbox, self._inbox = self._inbox, deque()
        batch = list(inbox)
        side = self._side
        while side:
            batch.append(side.popleft())
            self._recorded += 1
        self._intaking += len(batch)
        self._first_seen = None
        return batch

    def _serialize(self, event: UsageEvent) -> bytes:
        body = event.to_json()
        if len(body) > self._max_event_bytes:
            wire = dict(event.to_wire())
            if wire.get("metadata") is not None:  # billing fields are never trimmed; metadata can go
                wire["metadata"] = None
                wire["metadata_truncated"] = True
                body = json.dumps(wire, separators=(",", ":"), ensure_ascii=False, default=str).encode(
                    "utf-8"
                )
                self._truncated += 1
        return body

    def _intake(self, batch: list[UsageEvent]) -> None:
        """Serialize outside the lock, then admit under it; spill the excess to disk (also outside it)."""
        items: list[_Item] = []
        invalid = 0
        for event in batch:
            try:
                items.append(_Item(event.event_id, self._serialize(event)))
            except Exception as exc:
                invalid += 1
                report_internal_error("serialize event", exc)
        batch.clear()  # drop the references to the OpenAI response objects now
        self._admit(items, invalid)

    def _admit(self, items: list[_Item], invalid: int) -> None:
        overflow: list[_Item] = []
        spill = False
        with self._lock:
            self._intaking -= len(items) + invalid
            if invalid:
                self._drop_locked("invalid", invalid)
            ready = self._ready
            for item in items:
                ready.append(item)
                self._ready_bytes += item.size
            self._ready_local += len(items)
            spool = self._spool
            spill = spool is not None and spool.writable and not self._parking
            target = self._spill_to if spill and self._ready_local > self._spill_at else self._queue_size
            while ready and (self._ready_bytes > self._max_queue_bytes or self._ready_local > target):
                tail = ready[-1]
                if not tail.local or tail.entry is not None:
                    break
                ready.pop()
                self._ready_local -= 1
                self._ready_bytes -= tail.size
                overflow.append(tail)
            if overflow:
                if spill:
                    self._spilling += len(overflow)
                else:
                    self._drop_locked("queue_bytes", len(overflow))
            if ready:
                self._send_cv.notify()
            self._done_cv.notify_all()
        if overflow and spill:
            self._spill(overflow, fail_reason=None)

    def _spill(self, items: list[_Item], fail_reason: Optional[str]) -> int:
        """Write local, not-yet-spooled items (counted in_flight) to the spool. Returns how many were written.

        What the spool refuses goes back to memory if it fits, else is dropped with the spool's reason; with
        `fail_reason` (exit), it is dropped with that reason.
        """
        spool = self._spool
        written, reason = 0, "no_spool"
        if spool is not None:
            written, why = spool.append([(item.event_id, item.body) for item in items])
            reason = why or "spool_error"
        with self._lock:
            self._spilling -= len(items)
            self._spool_pending += written
            self._spooled += written
            for item in items[:written]:
                item.settled = True
            for item in items[written:]:
                fits = (
                    fail_reason is None
                    and self._ready_bytes + item.size <= self._max_queue_bytes
                    and self._ready_local + len(self._inbox) < self._queue_size
                )
                if fits:
                    self._ready.append(item)
                    self._ready_local += 1
                    self._ready_bytes += item.size
                else:
                    item.settled = True
                    self._drop_locked(fail_reason or reason)
            self._done_cv.notify_all()
        return written

    def _show_notice(self) -> None:
        if self._notice and not self._notice_shown:
            self._notice_shown = True
            _stderr_line(self._notice)

    # -- sender: one event per request, whole-pipeline pause on failure --------------------------------

    def _sender_loop(self, gen: int) -> None:
        self._tls.worker = True
        while True:
            try:
                action, payload = self._next_send_action(gen)
                if action == "stop":
                    return
                if action == "send":
                    assert isinstance(payload, _Item)
                    # while exiting, no attempt may outlive the exit budget
                    timeout = max(0.05, self._exit_deadline - _monotonic()) if self._exiting else None
                    self._send(payload, timeout=timeout)
                elif action == "load":
                    self._load_spool(orphans=bool(payload))
                elif action == "spill":
                    assert isinstance(payload, list)
                    self._spill(payload, fail_reason=None)
                self._emit_warnings()
            except Exception as exc:
                report_internal_error("exporter sender", exc)
                time.sleep(0.1)

    def _next_send_action(self, gen: int) -> tuple[str, Any]:
        with self._lock:
            while True:
                if gen != self._generation:
                    return "stop", None
                if self._parking:
                    self._send_cv.wait()
                    continue
                now = _monotonic()
                pause_end = max(self._paused_until, self._floor_until)
                if now < pause_end:
                    spill_at = self._outage_spill_at()
                    if spill_at is not None and now >= spill_at:
                        items = self._take_spillable_locked()
                        if items:
                            return "spill", items
                        spill_at = None
                    wake = pause_end if spill_at is None else min(pause_end, spill_at)
                    self._send_cv.wait(max(0.001, wake - now))
                    continue
                if self._ready:
                    item = self._ready.popleft()
                    self._ready_bytes -= item.size
                    if item.local:
                        self._ready_local -= 1
                        self._in_flight_local += 1
                    self._current = item
                    return "send", item
                if self._spool is not None and not self._exiting:
                    if self._spool_pending > 0:
                        return "load", False
                    if self._orphan_scan:
                        if now >= self._orphan_at or self._flush_requests:
                            return "load", True
                        self._send_cv.wait(self._orphan_at - now)
                        continue
                self._send_cv.wait()

    def _outage_spill_at(self) -> Optional[float]:
        spool = self._spool
        if spool is None or not spool.writable or self._outage_since is None or self._exiting:
            return None
        return self._outage_since + self._outage_spool_after

    def _take_spillable_locked(self) -> list[_Item]:
        """Local items not yet on disk, taken out of the ready queue (they become in_flight until written)."""
        keep: deque[_Item] = deque()
        taken: list[_Item] = []
        for item in self._ready:
            if item.local and item.entry is None:
                taken.append(item)
            else:
                keep.append(item)
        if taken:
            self._ready = keep
            self._ready_local -= len(taken)
            self._ready_bytes -= sum(item.size for item in taken)
            self._spilling += len(taken)
        return taken

    def _send(self, item: _Item, timeout: Optional[float]) -> SendResult:
        try:
            result = self._transport.send(item.event_id, item.body, timeout)
        except Exception as exc:  # a third-party transport broke its contract: keep the event
            report_internal_error("transport send", exc)
            result = SendResult(Outcome.RETRY, reason="internal", detail=redact(type(exc).__name__))
        self._settle(item, result)
        return result

    def _settle(self, item: _Item, result: SendResult) -> None:
        ack: Optional[SpoolEntry] = None
        auth_message: Optional[str] = None
        recovered = False
        with self._lock:
            if self._current is item:
                self._current = None
            if item.settled:  # parked (spooled) at exit while we were sending it
                self._done_cv.notify_all()
                return
            if item.local:
                self._in_flight_local -= 1
            now = _monotonic()
            outcome = result.outcome
            if outcome is Outcome.DELIVERED:
                item.settled = True
                if item.local:
                    self._delivered += 1
                else:
                    self._replayed += 1
                ack = item.entry
                if self._failures:
                    recovered = self._auth_logged
                    self._failures = 0
                    self._outage_since = None
                    self._paused_until = 0.0
                    self._auth_logged = False
                    if self._spool is not None:  # the backend is back: look for other processes' leftovers
                        self._orphan_scan = True
            elif outcome is Outcome.REJECTED:
                item.settled = True
                self._drop_locked(result.reason or "rejected", local=item.local)
                self._last_error = result.detail or result.reason
                ack = item.entry
            else:
                item.failures += 1
                self._failures += 1
                self._retried += 1
                if item.failures >= 3:  # do not let one bad event block the head of the queue
                    self._ready.append(item)
                else:
                    self._ready.appendleft(item)
                self._ready_bytes += item.size
                if item.local:
                    self._ready_local += 1
                if self._outage_since is None:
                    self._outage_since = now
                self._last_error = result.detail or result.reason
                retry_after = result.retry_after
                if outcome is Outcome.AUTH:
                    delay = self._auth_pause
                    if not self._auth_logged:
                        self._auth_logged = True
                        auth_message = (
                            f"cmdrdata-autopatch: CmdrData rejected the API key ({result.detail}). "
                            f"Usage events are kept and delivery is retried every {self._auth_pause:.0f} s; "
                            "check CMDRDATA_API_KEY."
                        )
                else:
                    delay = self._backoff.delay(self._failures)
                if retry_after is not None:
                    retry_after = min(retry_after, self._retry_after_cap)
                    delay = max(delay, retry_after)
                    self._floor_until = now + retry_after
                self._paused_until = now + delay
            self._done_cv.notify_all()
        if ack is not None and self._spool is not None:
            self._spool.ack(ack)
        if auth_message:
            logger.error(auth_message)
        if recovered:
            logger.warning("cmdrdata-autopatch: CmdrData accepted the API key again; delivery resumed")

    def _load_spool(self, orphans: bool) -> None:
        spool = self._spool
        if spool is None:
            return
        result = spool.load(self._replay_batch, orphans=orphans)
        with self._lock:
            local = 0
            for entry in result.entries:
                item = _Item(entry.event_id, entry.body, local=entry.local, entry=entry)
                self._ready.append(item)
                self._ready_bytes += item.size
                if entry.local:
                    local += 1
            self._ready_local += local
            self._spool_pending -= local + result.lost_local
            if result.lost_local:
                self._drop_locked("spool_corrupt", result.lost_local)
            if not orphans and not result.entries and not result.lost_local and self._spool_pending > 0:
                # the spool has nothing left for us although we think it has: never spin on it
                self._drop_locked("spool_lost", self._spool_pending)
                self._spool_pending = 0
            if orphans and len(result.entries) < self._replay_batch:
                self._orphan_scan = False
            self._done_cv.notify_all()

    def _emit_warnings(self) -> None:
        if not self._drop_noted:
            return
        now = _monotonic()
        if now - self._last_drop_warn < 60.0:
            return
        with self._lock:
            if not self._drop_noted:
                return
            self._drop_noted = False
            self._last_drop_warn = now
            dropped = dict(self._dropped)
            replay_dropped = dict(self._replay_dropped)
            last_error = self._last_error
        if not dropped and not replay_dropped:
            return
        detail = ", ".join(
            f"{reason}={count}" for reason, count in sorted({**replay_dropped, **dropped}.items())
        )
        logger.warning(
            "cmdrdata-autopatch: usage events are being dropped (so far: %s; last error: %s). "
            "See cmdrdata_autopatch.stats(); this warning repeats at most once a minute.",
            detail,
            last_error,
        )

    # -- flush, shutdown, exit ------------------------------------------------------------------------

    def _pending_locked(self) -> int:
        return self._in_memory_locked() + self._spool_pending

    def _in_memory_locked(self) -> int:
        return (
            len(self._inbox)
            + len(self._side)
            + self._intaking
            + self._ready_local
            + self._in_flight_local
            + self._spilling
        )

    def flush(self, timeout: Optional[float] = 5.0) -> tuple[int, int]:
        """Wait until everything recorded so far is delivered (or dropped), at most `timeout` seconds.

        Returns (delivered during this call, still pending). Pending counts events in memory and this
        process's events in the spool. A backoff pause is respected, not skipped: flush does not hammer a
        struggling backend. Called from one of our own threads (a callback), it returns at once.
        """
        try:
            if getattr(self._tls, "worker", False) or getattr(self._tls, "busy", False):
                return (0, self._pending_locked())
            if self._pid != os.getpid():
                self._after_fork_child()
            deadline = None if timeout is None else _monotonic() + max(0.0, timeout)
            with self._lock:
                delivered = self._delivered
                if self._pending_locked() == 0 or self._closed:
                    return (0, self._pending_locked())
                self._flush_requests += 1
                self._intake_cv.notify()
                self._send_cv.notify()
                start = not self._started
                self._started = True
            if start:
                self._start_threads()
            with self._lock:
                try:
                    while self._pending_locked() > 0:
                        if deadline is None:
                            self._done_cv.wait()
                            continue
                        remaining = deadline - _monotonic()
                        if remaining <= 0:
                            break
                        self._done_cv.wait(remaining)
                finally:
                    self._flush_requests -= 1
                return (self._delivered - delivered, self._pending_locked())
        except Exception as exc:
            report_internal_error("exporter flush", exc)
            return (0, -1)

    def shutdown(self, timeout: Optional[float] = None) -> tuple[int, int]:
        """Deliver for at most `timeout` seconds (default `exit_timeout`), spool the rest, stop when idle.

        Returns (delivered during this call, not yet delivered). The exporter stays usable: a later `record`
        starts it again. What the spool cannot take stays queued in memory (nothing is dropped here).
        """
        try:
            delivered, _, _ = self._park(self.exit_timeout if timeout is None else timeout, final=False)
            with self._lock:
                pending = self._pending_locked()
                idle = self._in_memory_locked() == 0 and self._current is None
                if idle:
                    self._generation += 1  # the threads see it and return
                    self._started = False
                    self._intake_cv.notify_all()
                    self._send_cv.notify_all()
            if idle:
                self._transport.close()
            return (delivered, pending)
        except Exception as exc:
            report_internal_error("exporter shutdown", exc)
            return (0, -1)

    def _on_exit(self) -> None:
        """The atexit / multiprocessing-finalizer hook: bounded drain, spool, one line on stderr."""
        try:
            if self._pid != os.getpid():
                self._after_fork_child()
            if self._exit_done:
                return
            self._exit_done = True
            delivered, spooled, lost = self._park(self.exit_timeout, final=True)
            if spooled or lost:
                where = f" to {self._spool.directory}" if spooled and self._spool is not None else ""
                with self._lock:
                    last_error = self._last_error
                reason = f" (last error: {last_error})" if last_error else ""
                _stderr_line(
                    f"cmdrdata-autopatch: at exit {delivered} usage event(s) delivered, "
                    f"{spooled} saved{where} for the next run, {lost} lost{reason}"
                )
            summary = getattr(self._transport, "exit_summary", None)
            if callable(summary):
                line = summary()
                if isinstance(line, str) and line:
                    _stderr_line(line)
        except Exception as exc:
            report_internal_error("exporter exit", exc)

    def _park(self, timeout: float, final: bool) -> tuple[int, int, int]:
        """Deliver until `timeout`, then write local events still in memory to the spool.

        Returns (delivered, spooled, lost) for this call. `final` (exit): the exporter closes afterwards,
        and what the spool cannot take is dropped as `exit_timeout` (the only place events are given up
        on because of time). Never joins a thread, never waits past the deadline for a hanging request.
        """
        start = _monotonic()
        timeout = max(0.0, timeout)
        reserve = min(0.25, timeout * 0.2)  # kept for writing the spool
        send_until = start + timeout - reserve
        with self._lock:
            delivered0 = self._delivered
            dropped0 = self._dropped.get("exit_timeout", 0)
            if self._in_memory_locked() == 0 and self._current is None:
                if final:
                    self._closed = True
                return (0, 0, 0)
            self._exiting = True
            self._exit_deadline = send_until
            self._flush_requests += 1
            # one immediate probe even if we are in a backoff pause; a server Retry-After still holds
            self._paused_until = min(self._paused_until, start)
            sender = self._sender_thread
            sender_alive = self._started and sender is not None and sender.is_alive()
            self._intake_cv.notify_all()
            self._send_cv.notify_all()
        spooled = 0
        try:
            self._intake_on_this_thread(send_until)
            if sender_alive:
                with self._lock:
                    while self._in_memory_locked() > 0:
                        now = _monotonic()
                        remaining = send_until - now
                        paused = max(self._paused_until, self._floor_until) > now
                        if remaining <= 0 or (
                            paused and max(self._paused_until, self._floor_until) >= send_until
                        ):
                            break  # a pause that outlasts the budget: spool now instead of waiting
                        self._done_cv.wait(remaining)
            else:
                self._send_inline(send_until)
            spooled = self._park_leftovers(final)
        finally:
            with self._lock:
                self._flush_requests -= 1
                self._parking = False
                if final:
                    self._closed = True
                else:
                    self._exiting = False
                self._intake_cv.notify_all()
                self._send_cv.notify_all()
                delivered = self._delivered - delivered0
                lost = self._dropped.get("exit_timeout", 0) - dropped0
        return delivered, spooled, lost

    def _intake_on_this_thread(self, until: float) -> None:
        while True:
            with self._lock:
                batch = self._take_inbox_locked() if (self._inbox or self._side) else []
            if not batch:
                break
            self._intake(batch)
        with self._lock:  # let the intake thread finish the batch it may be serializing
            while self._intaking > 0:
                remaining = until - _monotonic()
                if remaining <= 0:
                    break
                self._done_cv.wait(remaining)

    def _send_inline(self, until: float) -> None:
        """No sender thread (it never started, or cannot start at shutdown): send on the calling thread."""
        while True:
            now = _monotonic()
            with self._lock:
                if not self._ready or now >= until or self._floor_until >= until:
                    return
                item = self._ready.popleft()
                self._ready_bytes -= item.size
                if item.local:
                    self._ready_local -= 1
                    self._in_flight_local += 1
                self._current = item
            result = self._send(item, timeout=until - now)
            if result.outcome in (Outcome.RETRY, Outcome.AUTH):
                return

    def _park_leftovers(self, final: bool) -> int:
        """Take local events out of memory and onto disk. Returns how many were written."""
        to_write: list[_Item] = []
        with self._lock:
            self._parking = True
            batch = self._take_inbox_locked() if (self._inbox or self._side) else []
        if batch:  # recorded while we were draining: serialize here, the intake thread is parked
            self._intake(batch)
        with self._lock:
            keep: deque[_Item] = deque()
            for item in self._ready:
                if item.local and item.entry is None:
                    to_write.append(item)  # ready -> in_flight (until written)
                    self._ready_local -= 1
                    self._spilling += 1
                elif final:  # already on disk (or a foreign spool line): it stays there for the next run
                    item.settled = True
                    if item.local:
                        self._ready_local -= 1
                        self._spool_pending += 1
                else:
                    keep.append(item)
            self._ready = keep
            self._ready_bytes = sum(item.size for item in keep)
            current = self._current
            if final and current is not None and not current.settled and current.local:
                # a request that is hanging: we cannot wait for it, so it goes to disk too
                current.settled = True
                if current.entry is None:
                    to_write.append(_Item(current.event_id, current.body))
                    self._in_flight_local -= 1
                    self._spilling += 1
                else:
                    self._in_flight_local -= 1
                    self._spool_pending += 1
            if not final and self._spool is None:
                # nothing to park into: keep them queued in memory
                for item in to_write:
                    self._ready.append(item)
                    self._ready_bytes += item.size
                self._ready_local += len(to_write)
                self._spilling -= len(to_write)
                to_write = []
        if not to_write:
            return 0
        return self._spill(to_write, fail_reason="exit_timeout" if final else None)

    # -- accounting ----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters and gauges. Invariant at quiescent points:
        recorded == delivered + sum(dropped.values()) + queued + in_flight + spool_pending."""
        with self._lock:
            out: dict[str, Any] = {
                "recorded": self._recorded,
                "delivered": self._delivered,
                "retried": self._retried,
                "spooled": self._spooled,
                "replayed": self._replayed,
                "dropped": dict(self._dropped),
                "replay_dropped": dict(self._replay_dropped),
                "queued": len(self._inbox) + self._intaking + self._ready_local,
                "in_flight": self._in_flight_local + self._spilling,
                "spool_pending": self._spool_pending,
                "queued_bytes": self._ready_bytes,
                "metadata_truncated": self._truncated,
                "paused_for": max(0.0, max(self._paused_until, self._floor_until) - _monotonic()),
                "last_error": self._last_error,
            }
        if self._spool is not None:
            out["spool"] = self._spool.stats()
        return out

    @property
    def spool(self) -> Optional[Spool]:
        return self._spool

    @property
    def transport(self) -> Transport:
        return self._transport


def _before_fork(ref: weakref.ReferenceType[BackgroundExporter]) -> None:
    exporter = ref()
    if exporter is not None:
        exporter._register_mp_after_fork()


def _stderr_line(line: str) -> None:
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(line + "\n")
        stream.flush()
    except Exception:
        pass


def assert_invariant(stats: dict[str, Any]) -> None:
    """Raise AssertionError unless the conservation law holds (tests call this at quiescent points)."""
    accounted = (
        stats["delivered"]
        + sum(stats["dropped"].values())
        + stats["queued"]
        + stats["in_flight"]
        + stats["spool_pending"]
    )
    if stats["recorded"] != accounted:
        raise AssertionError(f"recorded={stats['recorded']} but accounted={accounted}: {stats}")


def make_spool(settings: Settings, partition_key: Optional[str] = None) -> Optional[Spool]:
    """The spool for these settings, or None when disabled (`CMDRDATA_SPOOL_DIR=off`)."""
    from .spool import Spool, default_spool_root, partition_name

    root = settings.spool_dir
    if root is not None and root.strip().lower() in ("off", "none", "0", "false", "no"):
        return None
    if root is None:
        root = default_spool_root()
    name = partition_name(settings.endpoint if partition_key is None else partition_key, settings.api_key)
    return Spool(os.path.join(os.path.expanduser(root), name))


def build_exporter(settings: Settings) -> Any:
    """The exporter for `settings.exporter` (see the module docstring for the defaults)."""
    name = settings.exporter
    if name == "memory":
        return MemoryExporter()
    if name == "none":
        return NullExporter()
    common: dict[str, Any] = {
        "queue_size": settings.queue_size,
        "flush_interval": settings.flush_interval,
        "exit_timeout": settings.exit_timeout,
    }
    if name == "http":
        if not settings.api_key:
            raise ValueError("the http exporter needs a CmdrData API key (CMDRDATA_API_KEY)")
        return BackgroundExporter(
            HttpTransport(settings.api_key, settings.endpoint), spool=make_spool(settings), **common
        )
    if name == "console":
        return BackgroundExporter(ConsoleTransport(), **common)
    transport = JsonlTransport(settings.jsonl_path, summarize=True)
    notice = (
        f"cmdrdata-autopatch: writing OpenAI usage events locally to {transport.path} "
        "(set CMDRDATA_API_KEY to send them to CmdrData)"
    )
    spool = make_spool(settings, partition_key=transport.path) if settings.spool_dir else None
    return BackgroundExporter(transport, spool=spool, notice=notice, **common)


__all__ = [
    "BackgroundExporter",
    "Backoff",
    "MemoryExporter",
    "NullExporter",
    "Recorder",
    "assert_invariant",
    "build_exporter",
    "make_spool",
]
