"""Flush, shutdown, the bounded exit drain, spool replay on demand, and the counters (a pipeline mixin).

The one rule here: nothing waits past its deadline. A drain waits on a condition until the events it
waits for are settled or its time is up; it never joins a thread, and when the backend pauses delivery
beyond the deadline it stops waiting at once. What is left stays on disk (write-ahead) or is written there
now; what cannot be written is counted as lost with the real reason (`exit_timeout` without a spool,
`spool_full` / `disk_full` / `spool_error` when the disk refused it).
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

from . import _process
from .diagnostics import report_internal_error
from .pending import DeliveryState, Item, Lifecycle
from .sender import SenderPool

if TYPE_CHECKING:
    from .spool import Spool
    from .transports import Transport

_monotonic = time.monotonic


class Drains:
    """Mixed into `DeliveryPipeline`; uses its state, senders, spool and intake."""

    _state: DeliveryState
    _senders: SenderPool
    _spool: Optional[Spool]
    _transport: Transport
    _tls: threading.local
    _pid: int
    _exit_done: bool
    exit_timeout: float

    # defined by the pipeline
    def after_fork_child(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def _take_inbox_locked(self) -> list[Any]:  # pragma: no cover
        raise NotImplementedError

    def _intake(self, batch: list[Any]) -> None:  # pragma: no cover
        raise NotImplementedError

    def _start_locked(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def _start_replay(self, delay: bool) -> None:  # pragma: no cover
        raise NotImplementedError

    def _start_pending(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def flush(self, timeout: Optional[float] = 5.0) -> tuple[int, int]:
        """Wait until everything recorded so far is delivered (or dropped), at most `timeout` seconds.

        Returns (delivered during this call, still pending: in memory and on disk). A backoff pause is
        respected, not skipped. Called from one of our own threads (a callback), it returns at once.
        """
        try:
            state = self._state
            if getattr(self._tls, "worker", False) or getattr(self._tls, "busy", False):
                return (0, state.pending_local())
            if self._pid != os.getpid():
                self.after_fork_child()
                state = self._state
            deadline = None if timeout is None else _monotonic() + max(0.0, timeout)
            with state.lock:
                delivered = state.ledger.delivered
                if state.pending_local() == 0 or state.lifecycle is Lifecycle.CLOSED:
                    return (0, state.pending_local())
                state.flush_requests += 1
                self._kick_locked()
            try:
                self._start_pending()
                with state.lock:
                    self._wait_locked(deadline, with_orphans=False)
            finally:
                with state.lock:
                    state.flush_requests -= 1
            with state.lock:
                return (state.ledger.delivered - delivered, state.pending_local())
        except Exception as exc:
            report_internal_error("exporter flush", exc)
            return (0, -1)

    def _kick_locked(self) -> None:
        state = self._state
        if state.lifecycle is Lifecycle.IDLE:
            self._start_locked()
        state.intake_cv.notify_all()
        state.send_cv.notify_all()
        self._senders.wake_locked()

    def _wait_locked(self, deadline: Optional[float], with_orphans: bool) -> None:
        state = self._state
        while state.outstanding(with_orphans) > 0:
            now = _monotonic()
            if deadline is not None:
                if now >= deadline or state.health.pause_end(state.exiting) >= deadline:
                    return  # a pause that outlasts the budget: stop waiting now
                state.done_cv.wait(deadline - now)
            else:
                state.done_cv.wait()

    def shutdown(self, timeout: Optional[float] = None) -> tuple[int, int]:
        """Deliver for at most `timeout` seconds (default `exit_timeout`), keep the rest, stop when idle.

        Returns (delivered during this call, not yet delivered). The pipeline stays usable: a later
        `record` starts it again.
        """
        try:
            delivered, _, _ = self.drain(self.exit_timeout if timeout is None else timeout, final=False)
            state = self._state
            with state.lock:
                pending = state.pending_local()
                idle = state.in_memory_local() == 0 and state.in_flight == 0
                if idle:
                    state.generation += 1  # the threads see it and return
                    state.lifecycle = Lifecycle.IDLE
                    self._senders.reset()
                    state.intake_cv.notify_all()
                    state.send_cv.notify_all()
            if idle:
                self._transport.close()
                if self._spool is not None:
                    self._spool.seal()
            return (delivered, pending)
        except Exception as exc:
            report_internal_error("exporter shutdown", exc)
            return (0, -1)

    def exit_drain(self) -> None:
        """The exit hook (atexit, multiprocessing finalizer, signal): bounded drain, one line on stderr."""
        try:
            if self._pid != os.getpid():
                self.after_fork_child()
            if self._exit_done:
                return
            self._exit_done = True
            delivered, saved, _ = self.drain(self.exit_timeout, final=True)
            if self._spool is not None:
                self._spool.seal()  # a fully acknowledged last segment goes now, not with the next run
            with self._state.lock:
                lost = dict(self._state.ledger.dropped)
                last_error = self._state.last_error
            if saved or lost:
                where = f" in {self._spool.directory}" if saved and self._spool is not None else ""
                why = ", ".join(f"{reason}={n}" for reason, n in sorted(lost.items()))
                _process.stderr_line(
                    f"cmdrdata-autopatch: at exit {delivered} usage event(s) delivered, {saved} saved{where} "
                    f"for the next run, {sum(lost.values())} lost in this run"
                    + (f" ({why})" if why else "")
                    + (f"; last error: {last_error}" if last_error else "")
                )
            summary = getattr(self._transport, "exit_summary", None)
            line = summary() if callable(summary) else None
            if isinstance(line, str) and line:
                _process.stderr_line(line)
        except Exception as exc:
            report_internal_error("exporter exit", exc)

    def drain(self, timeout: float, final: bool) -> tuple[int, int, int]:
        """Deliver until `timeout`, then leave this process's unsettled events on disk.

        Returns (delivered, saved on disk, lost) for this call. `final` (exit): orphaned spool segments are
        replayed too while time remains, and the pipeline closes afterwards.
        """
        state = self._state
        start = _monotonic()
        timeout = max(0.0, timeout)
        until = start + timeout - min(0.1, timeout * 0.1)  # kept for writing the spool
        with_orphans = final and self._spool is not None
        if with_orphans and self._spool is not None and not state.orphan_scan and self._spool.has_orphans():
            with state.lock:  # a short-lived process replays what dead ones left, within its exit budget
                state.orphan_scan, state.orphan_at = True, start
        with state.lock:
            delivered0, lost0 = state.ledger.delivered, state.ledger.lost()
            if state.outstanding(with_orphans) == 0 and state.in_flight == 0:
                if final:
                    state.lifecycle = Lifecycle.CLOSED
                return (0, 0, 0)
            state.exiting = True
            state.exit_deadline = until
            state.flush_requests += 1
            state.health.skip_backoff(start)  # one immediate probe; a server Retry-After still holds
            self._kick_locked()
        saved = 0
        try:
            self._start_pending()
            self.intake_here(until)
            if self._senders.alive():
                with state.lock:
                    self._wait_locked(until, with_orphans)
            else:
                self._senders.send_inline(until)
            saved = self.park(final)
        finally:
            with state.lock:
                state.flush_requests -= 1
                state.exiting = final
                state.lifecycle = Lifecycle.CLOSED if final else Lifecycle.RUNNING
                state.intake_cv.notify_all()
                state.send_cv.notify_all()
                delivered = state.ledger.delivered - delivered0
                lost = state.ledger.lost() - lost0
        return delivered, saved, lost

    def intake_here(self, until: float) -> None:
        """Serialize (and write ahead) what is in the inbox on the calling thread."""
        state = self._state
        while True:
            with state.lock:
                batch = self._take_inbox_locked() if (state.inbox or state.side) else []
            if not batch:
                break
            self._intake(batch)
        with state.lock:  # let the intake thread finish the batch it may be writing
            while state.intaking > 0:
                remaining = until - _monotonic()
                if remaining <= 0:
                    break
                state.done_cv.wait(remaining)

    def park(self, final: bool) -> int:
        """Move this process's unsettled events out of memory onto disk. Returns how many are on disk."""
        state = self._state
        with state.lock:
            state.lifecycle = Lifecycle.PARKING
            batch = self._take_inbox_locked() if (state.inbox or state.side) else []
        if batch:  # recorded while we were draining
            self._intake(batch)
        with state.lock:
            to_write = state.ready.take(lambda item: item.local and not item.on_disk)
            state.spilling += len(to_write)
            on_disk = 0
            if final:
                left = state.ready.take(lambda item: True)
                for item in left:
                    item.settled = True
                    on_disk += item.local
                state.ledger.spool_pending += on_disk
                to_write += self._abandon_in_flight_locked()
        written = self._write_leftovers(to_write, final)
        if self._spool is not None:
            self._spool.sync(force=True)
        with state.lock:
            return state.ledger.spool_pending if final else written

    def _abandon_in_flight_locked(self) -> list[Item]:
        """At exit, requests still hanging are given up on: their events stay on (or go to) disk."""
        state = self._state
        to_write: list[Item] = []
        for item in list(self._senders.flying):
            if item.settled or not item.local:
                continue
            item.settled = True
            state.in_flight -= 1
            state.in_flight_local -= 1
            if item.on_disk:
                state.ledger.spool_pending += 1
            else:
                to_write.append(item)
                state.spilling += 1
        return to_write

    def _write_leftovers(self, items: list[Item], final: bool) -> int:
        spool = self._spool
        written, reason = 0, "exit_timeout"
        if spool is not None and items:
            result = spool.append([(item.event_id, item.body) for item in items], keep=False)
            written, reason = result.written, result.reason or "spool_error"
        state = self._state
        with state.lock:
            state.spilling -= len(items)
            state.ledger.written_ahead += written
            state.ledger.spool_pending += written
            for item in items[written:]:
                if final:
                    item.settled = True
                    state.ledger.drop(reason)
                else:
                    state.ready.push(item)
            state.done_cv.notify_all()
        return written

    def replay_spool(self, timeout: float) -> dict[str, Any]:
        """Deliver the spool's orphaned segments now (the `replay` command). Returns what happened."""
        state = self._state
        self._start_replay(delay=False)
        deadline = _monotonic() + max(0.0, timeout)
        with state.lock:
            replayed0 = state.ledger.replayed
            state.flush_requests += 1
            try:
                while state.outstanding(True) > 0 and state.health.auth_failures == 0:
                    remaining = deadline - _monotonic()
                    if remaining <= 0 or state.health.pause_end() >= deadline:
                        break
                    state.done_cv.wait(remaining)
            finally:
                state.flush_requests -= 1
            return {
                "sent": state.ledger.replayed - replayed0,
                "rejected": sum(state.ledger.replay_dropped.values()),
                "auth_failed": state.health.auth_failures > 0,
                "failing": state.health.failing,
                "last_error": state.last_error,
            }

    def stats(self) -> dict[str, Any]:
        """Counters and gauges. Invariant at quiescent points:
        recorded == delivered + sum(dropped.values()) + queued + in_flight + spool_pending."""
        state = self._state
        with state.lock:
            out = state.ledger.snapshot()
            out.update(state.gauges())
            out["paused_for"] = state.health.remaining_pause(_monotonic())
        if self._spool is not None:
            out["spool"] = self._spool.stats()
        return out
