"""The delivery pipeline: record, intake (serialize + write ahead), flush, shutdown and the exit drain.

    record() ──> inbox ──(intake thread, every ~100 ms)──> to_json + spool write-ahead ──> ready queue
                                                                                             │
                         up to max_in_flight sender threads (sender.py) <────────────────────┘

- `record()` takes one lock for a few O(1) operations and returns; it never serializes, never does I/O,
  never raises. Events arrive unresolved (they hold the OpenAI response objects).
- The intake thread wakes when `batch_size` events wait or `flush_interval` (0.1 s) after the first one,
  serializes them (`event.to_json()`; a `ValueError` drops the event as `invalid`), appends them to the
  spool (write-ahead, so `kill -9` loses at most that window) and hands them to the senders. Nothing wakes
  while idle: every wait is on a condition without a timeout (save one fsync after the last write).
- Memory is bounded: `queue_size` events and `max_queue_bytes` in the ready queue. With a spool, events
  beyond that stay on disk only and are read back in order when there is room, so a small queue drops
  nothing; without one, the newest are dropped (`queue_full`), counted and warned about.
- Flush, shutdown and the exit drain live in `drain.py` (a mixin of this class).
- Exit (atexit, a multiprocessing finalizer, or SIGTERM/SIGINT through `_process.py`): deliver for at most
  `exit_timeout` seconds, including other processes' orphaned spool segments, then leave the rest on disk
  (it already is, with write-ahead) and print one line on stderr when anything was saved or lost. Threads
  are never joined, so a hanging backend cannot hang the exit.
- Fork: a child gets fresh locks, an empty queue (the parent delivers what it queued), no threads until its
  own first event, new connections and new spool segment names.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

from . import _process
from .diagnostics import logger, report_internal_error
from .drain import Drains
from .events import UsageEvent, assign_ids
from .pending import DeliveryState, Item, Lifecycle
from .recorder import RecorderBase
from .retry import Backoff, Health
from .sender import SenderPool
from .transports import Transport

if TYPE_CHECKING:
    from .spool import Spool

KiB = 1024
MiB = 1024 * KiB
_monotonic = time.monotonic
Record = tuple[str, bytes]


class DeliveryPipeline(Drains, RecorderBase):
    """Queue events in memory, write them ahead to disk, deliver them from up to `max_in_flight` senders."""

    def __init__(
        self,
        transport: Transport,
        *,
        queue_size: int = 10_000,
        max_queue_bytes: int = 16 * MiB,
        flush_interval: float = 0.1,
        batch_size: int = 100,
        exit_timeout: float = 2.0,
        spool: Optional[Spool] = None,
        write_ahead: bool = True,
        max_event_bytes: int = 32 * KiB,
        backoff: Optional[Backoff] = None,
        max_in_flight: int = 16,
        retry_after_cap: float = 120.0,
        auth_pause: float = 5.0,
        auth_pause_cap: float = 300.0,
        replay_delay: tuple[float, float] = (1.0, 5.0),
        replay_batch: int = 200,
        notice: Optional[str] = None,
        register_exit: bool = True,
    ) -> None:
        self._transport = transport
        self.queue_size = max(1, int(queue_size))
        self._max_queue_bytes = max(1, int(max_queue_bytes))
        self._inbox_cap = max(self.queue_size, 1024) if spool is not None else self.queue_size
        self._flush_interval = max(0.0, float(flush_interval))
        self._batch_size = max(1, int(batch_size))
        self.exit_timeout = max(0.0, float(exit_timeout))
        self._spool = spool
        self._write_ahead = write_ahead
        self._max_event_bytes = max_event_bytes
        self._health_args = (max_in_flight, backoff, retry_after_cap, auth_pause, auth_pause_cap)
        self._replay_delay = replay_delay
        self._replay_batch = replay_batch
        self.notice = notice
        self._notice_shown = False
        self._exit_done = False
        self._tls = threading.local()
        self._reset()
        if register_exit:
            _process.register(self)
        if spool is not None and spool.has_orphans():  # replay an earlier process's events even if idle
            self._start_replay(delay=True)

    def _reset(self) -> None:
        """Fresh state: at construction and in a forked child."""
        max_in_flight, backoff, cap, auth_first, auth_cap = self._health_args
        self._pid = os.getpid()
        self._state = DeliveryState(Health(max_in_flight, backoff, cap, auth_first, auth_cap))
        self._senders = SenderPool(
            self._state,
            self._transport,
            self._spool,
            queue_size=self.queue_size,
            replay_batch=self._replay_batch,
        )
        self._intake_thread: Optional[threading.Thread] = None
        self._intake_wanted = False
        self._first_seen: Optional[float] = None

    def after_fork_child(self) -> None:
        """In a forked child: forget everything the parent queued (the parent delivers it) and start over."""
        self._reset()
        self._exit_done = False
        after_fork = getattr(self._transport, "after_fork", None)
        if callable(after_fork):
            try:
                after_fork()
            except Exception as exc:
                report_internal_error("transport after fork", exc)
        if self._spool is not None:
            self._spool.after_fork_child()

    # -- the hot path --------------------------------------------------------------------------------

    def record(self, event: Any) -> bool:
        """Queue `event` for delivery. O(1), never blocks on I/O, never raises. False when it was dropped."""
        try:
            tls = self._tls
            if getattr(tls, "busy", False):  # re-entered (GC finalizer, logging handler): no lock
                side = self._state.side
                if len(side) >= self._inbox_cap:
                    return False
                side.append(event)
                return True
            tls.busy = True
            try:
                if self._pid != os.getpid():  # forked without our hook (e.g. uWSGI without fork hooks)
                    self.after_fork_child()
                return self._admit_event(event)
            finally:
                tls.busy = False
        except Exception as exc:
            report_internal_error("exporter record", exc)
            return False

    def _admit_event(self, event: Any) -> bool:
        state = self._state
        lock = state.lock
        if not lock.acquire(True, 0.05):
            state.ledger.recorded += 1
            state.ledger.drop("lock_timeout")
            return False
        try:
            state.ledger.recorded += 1
            lifecycle = state.lifecycle
            if lifecycle is Lifecycle.CLOSED:
                state.ledger.drop("after_exit")
                return False
            inbox = state.inbox
            n = len(inbox)
            held = n + state.intaking
            if self._spool is None:  # without a disk, everything in memory counts against the queue
                held += state.ready.local + state.in_flight_local
            if held >= self._inbox_cap:
                state.ledger.drop("queue_full")
                return False
            inbox.append(event)
            if n == 0 or n + 1 == self._batch_size:
                state.intake_cv.notify()
            if lifecycle is Lifecycle.IDLE:
                self._start_locked()
        finally:
            lock.release()
        if self._intake_wanted:
            self._start_pending()
        return True

    def _start_locked(self) -> None:
        """Mark the pipeline running and ask for its threads; `_start_pending()` starts them unlocked."""
        self._state.lifecycle = Lifecycle.RUNNING
        self._intake_wanted = True
        self._senders.wake_locked()

    def _start_pending(self) -> None:
        """Start the threads asked for under the lock (never under it: `Thread.start()` can be slow)."""
        state = self._state
        if self._intake_wanted:
            with state.lock:
                wanted, self._intake_wanted = self._intake_wanted, False
                gen = state.generation
            if wanted:
                try:
                    thread = threading.Thread(
                        target=self._intake_loop, args=(gen,), name="cmdrdata-intake", daemon=True
                    )
                    thread.start()
                    self._intake_thread = thread
                except Exception as exc:  # interpreter shutdown refuses new threads: the drain works inline
                    logger.debug("cmdrdata-autopatch: could not start the intake thread: %r", exc)
        self._senders.spawn_pending()

    def _start_replay(self, delay: bool) -> None:
        lo, hi = self._replay_delay
        with self._state.lock:
            self._state.orphan_scan = True
            self._state.orphan_at = _monotonic() + (random.uniform(lo, max(lo, hi)) if delay else 0.0)
            if self._state.lifecycle is Lifecycle.IDLE:
                self._start_locked()
            self._senders.wake_locked()
            self._state.send_cv.notify_all()
        self._start_pending()

    # -- intake: unresolved events -> serialized, written ahead, ready ---------------------------------

    def _intake_loop(self, gen: int) -> None:
        self._tls.worker = True
        _process.block_signals_in_this_thread()
        while True:
            try:
                batch = self._next_intake_batch(gen)
                if batch is None:
                    return
                self._show_notice()
                if batch:
                    self._intake(batch)
                    del batch
                if self._spool is not None:
                    self._spool.sync()
                self._emit_warnings()
            except Exception as exc:
                report_internal_error("exporter intake", exc)
                time.sleep(0.1)

    def _next_intake_batch(self, gen: int) -> Optional[list[Any]]:
        state = self._state
        with state.lock:
            while True:
                if gen != state.generation:
                    return None
                if state.lifecycle is Lifecycle.PARKING:
                    state.intake_cv.wait()
                    continue
                pending = len(state.inbox) + len(state.side)
                now = _monotonic()
                if pending == 0:
                    self._first_seen = None
                    if state.ledger.drop_noted and now - state.last_drop_warn >= 60.0:
                        return []
                    spool = self._spool
                    if spool is not None and spool.sync_pending:  # one late fsync, then sleep for good
                        if not state.intake_cv.wait(spool.fsync_interval):
                            return []
                        continue
                    state.intake_cv.wait()
                    continue
                if self._first_seen is None:
                    self._first_seen = now
                due = self._first_seen + self._flush_interval
                if pending >= self._batch_size or state.flush_requests or now >= due:
                    return self._take_inbox_locked()
                state.intake_cv.wait(due - now)

    def _take_inbox_locked(self) -> list[Any]:
        state = self._state
        batch = list(state.inbox)
        state.inbox.clear()
        side = state.side
        while side:
            batch.append(side.popleft())
            state.ledger.recorded += 1
        state.intaking += len(batch)
        self._first_seen = None
        return batch

    def _serialize(self, event: Any) -> Record:
        body: bytes = event.to_json()
        # a UsageEvent's id is in its wire dict, cached by to_json(): no second uuid formatting
        event_id = str(event.to_wire()["event_id"] if isinstance(event, UsageEvent) else event.event_id)
        if len(body) > self._max_event_bytes:
            wire = json.loads(body)
            if isinstance(wire, dict) and wire.get("metadata") is not None:  # billing fields are never cut
                wire["metadata"] = None
                wire["metadata_truncated"] = True
                body = json.dumps(wire, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
                with self._state.lock:
                    self._state.ledger.truncated += 1
        return event_id, body

    def _intake(self, batch: list[Any]) -> None:
        """Serialize outside the lock, write ahead, then admit under the lock."""
        records: list[Record] = []
        invalid = 0
        try:
            assign_ids(batch)  # one os.urandom (a GIL release) per batch, not one per event
        except Exception as exc:
            report_internal_error("draw event ids", exc)
        for event in batch:
            try:
                records.append(self._serialize(event))
            except Exception as exc:  # ValueError (non-finite numbers), or a broken event
                invalid += 1
                report_internal_error("serialize event", exc)
        taken = len(batch)
        batch.clear()  # drop the references to the OpenAI response objects now
        if invalid:
            with self._state.lock:
                self._state.intaking -= invalid
                self._state.ledger.drop("invalid", invalid)
        self._admit(records, taken - invalid)

    def _admit(self, records: list[Record], counted: int) -> None:
        state = self._state
        spool = self._spool
        kept: list[Item] = []
        disk_only = 0
        unwritten: list[Record] = []
        reason = "queue_full"
        if spool is not None and spool.writable:
            with state.lock:
                room = self.queue_size - state.ready.local - state.in_flight_local
                keep_n = 0 if state.ledger.spool_pending > 0 else max(0, min(len(records), room))
            kept, written_kept = self._keep(records[:keep_n])
            rest = spool.append(records[keep_n:], keep=False)
            disk_only = rest.written
            unwritten = records[keep_n + rest.written :]
            reason = rest.reason or "spool_error"
        else:
            kept, written_kept = [Item(event_id, body) for event_id, body in records], 0
        with state.lock:
            state.intaking -= counted
            state.ledger.written_ahead += written_kept + disk_only
            state.ledger.spool_pending += disk_only
            for item in kept:
                state.ready.push(item)
            for event_id, body in unwritten:  # the spool refused them: memory if there is room
                state.ready.push(Item(event_id, body))
            self._trim_locked(reason)
            if state.ready:
                self._senders.wake_locked()
            state.done_cv.notify_all()
        self._senders.spawn_pending()

    def _keep(self, records: list[Record]) -> tuple[list[Item], int]:
        """Items for events that stay in memory; written ahead (with their spool entry) when enabled."""
        if not records:
            return [], 0
        spool = self._spool
        if spool is None or not self._write_ahead:
            return [Item(event_id, body) for event_id, body in records], 0
        done = spool.append(records, keep=True)
        items = [Item(entry.event_id, entry.body, entry=entry) for entry in done.entries]
        if len(done.entries) < done.written:  # written, but as disk-only lines: cannot be in memory too
            with self._state.lock:
                self._state.ledger.spool_pending += done.written - len(done.entries)
            items = []
        items += [Item(event_id, body) for event_id, body in records[done.written :]]
        return items, done.written

    def _trim_locked(self, reason: str) -> None:
        """Keep the ready queue within its bounds: drop the newest events that are not on disk."""
        state = self._state
        ready = state.ready
        while ready and (ready.bytes > self._max_queue_bytes or ready.local > self.queue_size):
            newest = ready.peek_newest()
            if not newest.local or newest.on_disk:
                break
            over_bytes = ready.bytes > self._max_queue_bytes and reason == "queue_full"
            ready.pop_newest()
            state.ledger.drop("queue_bytes" if over_bytes else reason)

    def _show_notice(self) -> None:
        if self.notice and not self._notice_shown:
            self._notice_shown = True
            _process.stderr_line(self.notice)

    def _emit_warnings(self) -> None:
        state = self._state
        now = _monotonic()
        with state.lock:
            if not state.ledger.drop_noted or now - state.last_drop_warn < 60.0:
                return
            state.ledger.drop_noted = False
            state.last_drop_warn = now
            counts = {**state.ledger.replay_dropped, **state.ledger.dropped}
            last_error = state.last_error
        if counts:
            detail = ", ".join(f"{reason}={count}" for reason, count in sorted(counts.items()))
            logger.warning(
                "cmdrdata-autopatch: usage events are being dropped (so far: %s; last error: %s). "
                "See cmdrdata_autopatch.stats(); this warning repeats at most once a minute.",
                detail,
                last_error,
            )

    # -- seams for tests and tools -------------------------------------------------------------------

    @property
    def spool(self) -> Optional[Spool]:
        return self._spool

    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def lifecycle(self) -> Lifecycle:
        return self._state.lifecycle

    @property
    def pid(self) -> int:
        return self._pid

    def threads(self) -> list[threading.Thread]:
        """The pipeline's live threads in this process (intake and senders)."""
        found = [self._intake_thread, *self._senders.threads]
        return [thread for thread in found if thread is not None and thread.is_alive()]
