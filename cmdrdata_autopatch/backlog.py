"""The senders' reading of the spool back: when to read, how much, and counting what was read.

A mixin of `SenderPool` (sender.py keeps the threads, the attempts and their outcomes). The senders read
this process's own on-disk backlog first (events written when the memory queue was full), then the
segments of processes that died (orphans, found after deliveries succeed or at a flush), never more than
the memory queue has room for. Every method here runs on a sender thread; `*_locked` ones under the
state lock.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional

from .pending import DeliveryState, Item

if TYPE_CHECKING:
    from .spool import Spool
    from .spoolfs import LoadResult


class SpoolBacklog:
    """Reading the spool back into the ready queue (state owned by `SenderPool`)."""

    state: DeliveryState
    spool: Optional[Spool]
    queue_size: int
    replay_batch: int

    if TYPE_CHECKING:

        def wake_locked(self) -> None: ...

        def spawn_pending(self) -> None: ...

    def _room_locked(self) -> int:
        state = self.state
        return self.queue_size - len(state.ready) - state.in_flight

    def _load_due_locked(self, now: float) -> Optional[bool]:
        """None, or whether to load orphans (True) or our own on-disk backlog (False)."""
        state = self.state
        if self.spool is None or state.loading or state.ready or self._room_locked() <= 0:
            return None
        if state.health.failing:
            return None  # nothing to gain from reading more while the backend is failing
        if state.ledger.spool_pending > 0:
            return False
        if state.orphan_scan and (now >= state.orphan_at or state.flush_requests or state.exiting):
            return True
        return None

    def _orphan_wait_locked(self, now: float) -> Optional[float]:
        state = self.state
        if self.spool is not None and state.orphan_scan and not state.loading and now < state.orphan_at:
            return state.orphan_at - now
        return None

    def _note_delivery(self, spool: Spool) -> None:
        """Every few seconds of delivering: stamp the spool and look for orphans to replay (unlocked)."""
        spool.note_delivery()
        if not self.state.orphan_scan and spool.has_orphans():
            with self.state.lock:  # a delivering process replays
                self.state.orphan_scan, self.state.orphan_at = True, time.monotonic()
                self.wake_locked()

    def load(self, orphans: bool) -> None:
        """Read the next lines off the disk into the ready queue. `loading` is cleared in the locked step
        that counts what was read: cleared before, another sender could read an emptied disk in between
        and write the counted backlog off as `spool_lost` (and a flush would see a negative count)."""
        spool = self.spool
        state = self.state
        result: Optional[LoadResult] = None
        limit = 1
        try:
            with state.lock:
                limit = max(1, min(self.replay_batch, self._room_locked()))
            result = spool.load(limit, orphans=orphans) if spool is not None else None
        finally:
            with state.lock:
                state.loading = False
                if result is not None:
                    self._count_loaded_locked(result, orphans, limit)
        self.spawn_pending()

    def _count_loaded_locked(self, result: LoadResult, orphans: bool, limit: int) -> None:
        state = self.state
        local = 0
        for entry in result.entries:
            state.ready.push(Item(entry.event_id, entry.body, local=entry.local, entry=entry))
            local += entry.local
        ledger = state.ledger
        ledger.spool_pending -= local + result.lost_local
        if result.lost_local:
            ledger.drop("spool_corrupt", result.lost_local)
        if not orphans and not result.entries and not result.lost_local and ledger.spool_pending > 0:
            # the spool has nothing left for us although we think it has: never spin on it
            ledger.drop("spool_lost", ledger.spool_pending)
            ledger.spool_pending = 0
        if orphans and len(result.entries) < limit:
            state.orphan_scan = False
        if state.ready:
            self.wake_locked()
        state.send_cv.notify_all()
        state.done_cv.notify_all()
