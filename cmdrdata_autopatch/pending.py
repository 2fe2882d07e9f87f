"""What waits for delivery in memory, and the ledger that accounts for every event recorded.

Two small objects, each owning its numbers so that no other code keeps a counter by hand:

- `ReadyQueue`: serialized events waiting for a sender, in order, with its own counts of items, of this
  process's items (`local`) and of bytes. Every way in or out goes through one of its methods.
- `Ledger`: the lifetime counts of the process: recorded, delivered, dropped by reason, and so on. Its
  conservation law, checked by the tests at quiescent points, is

      recorded == delivered + sum(dropped.values()) + queued + in_flight + spool_pending

  where `queued`/`in_flight` come from the pipeline and `spool_pending` counts this process's events that
  are on disk only. Events replayed from another process's spool are counted apart (`replayed`,
  `replay_dropped`): that process recorded them.

`DeliveryState` gathers them with the rest of what the intake side and the senders share, under one lock;
none of these objects takes a lock of its own.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, Optional

from .retry import Health

if TYPE_CHECKING:
    from .spool import SpoolEntry


class Item:
    """A serialized event: the exact bytes sent on every attempt, and where it came from."""

    __slots__ = ("body", "entry", "event_id", "failures", "local", "settled", "size")

    def __init__(
        self, event_id: str, body: bytes, local: bool = True, entry: Optional[SpoolEntry] = None
    ) -> None:
        self.event_id = event_id
        self.body = body
        self.size = len(body)
        self.local = local  # recorded by this process (counts in this process's ledger)
        self.entry = entry  # its line in the spool, when it was written ahead or read back
        self.failures = 0
        self.settled = False

    @property
    def on_disk(self) -> bool:
        return self.entry is not None


class ReadyQueue:
    """Serialized events waiting for a sender, oldest first, with their counts."""

    def __init__(self) -> None:
        self._items: deque[Item] = deque()
        self.local = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items)

    def _count(self, item: Item, sign: int) -> None:
        self.bytes += sign * item.size
        if item.local:
            self.local += sign

    def push(self, item: Item) -> None:
        self._items.append(item)
        self._count(item, 1)

    def push_front(self, item: Item) -> None:
        """A retried event goes back to the head (unless it keeps failing: see the sender)."""
        self._items.appendleft(item)
        self._count(item, 1)

    def pop(self) -> Item:
        item = self._items.popleft()
        self._count(item, -1)
        return item

    def pop_newest(self) -> Item:
        item = self._items.pop()
        self._count(item, -1)
        return item

    def peek_newest(self) -> Item:
        return self._items[-1]

    def take(self, predicate: Callable[[Item], bool]) -> list[Item]:
        """Remove and return every item matching `predicate`, keeping the others in order."""
        taken = [item for item in self._items if predicate(item)]
        if taken:
            self._items = deque(item for item in self._items if not predicate(item))
            for item in taken:
                self._count(item, -1)
        return taken


class Ledger:
    """Lifetime counts of one process's events (and of events replayed for other processes)."""

    def __init__(self) -> None:
        self.recorded = 0
        self.delivered = 0
        self.replayed = 0
        self.retried = 0
        self.written_ahead = 0
        self.spool_pending = 0  # this process's events on disk only (not in memory)
        self.truncated = 0
        self.dropped: dict[str, int] = {}
        self.replay_dropped: dict[str, int] = {}
        self.drop_noted = False  # something was dropped since the last warning

    def drop(self, reason: str, n: int = 1, local: bool = True) -> None:
        counts = self.dropped if local else self.replay_dropped
        counts[reason] = counts.get(reason, 0) + n
        self.drop_noted = True

    def lost(self) -> int:
        return sum(self.dropped.values())

    def snapshot(self) -> dict[str, Any]:
        return {
            "recorded": self.recorded,
            "delivered": self.delivered,
            "retried": self.retried,
            "written_ahead": self.written_ahead,
            "spooled": self.written_ahead,
            "replayed": self.replayed,
            "dropped": dict(self.dropped),
            "replay_dropped": dict(self.replay_dropped),
            "spool_pending": self.spool_pending,
            "metadata_truncated": self.truncated,
        }


class Lifecycle(enum.Enum):
    """Where a pipeline is in its life. One value instead of a handful of booleans."""

    IDLE = "idle"  # no threads yet in this process (lazily started by the first event)
    RUNNING = "running"
    PARKING = "parking"  # flush-at-exit is moving what is left onto disk: threads keep their hands off
    CLOSED = "closed"  # after the final exit drain: later events are dropped as `after_exit`


class DeliveryState:
    """Everything the intake side and the senders share, guarded by one re-entrant lock.

    Re-entrant because the exit drain may run inside a signal handler, on the main thread, while that
    thread was interrupted holding the lock (in `record()` or `flush()`); the drain then ends the process.
    """

    def __init__(self, health: Health) -> None:
        self.lock = threading.RLock()
        self.intake_cv = threading.Condition(self.lock)
        self.send_cv = threading.Condition(self.lock)
        self.done_cv = threading.Condition(self.lock)
        self.inbox: deque[Any] = deque()  # recorded events, not serialized yet
        self.side: deque[Any] = deque()  # re-entrant records, appended without the lock
        self.intaking = 0  # taken from the inbox, being serialized / written ahead
        self.ready = ReadyQueue()
        self.in_flight = 0  # being sent (all)
        self.in_flight_local = 0  # being sent (this process's)
        self.spilling = 0  # this process's, being written to the spool
        self.ledger = Ledger()
        self.health = health
        self.lifecycle = Lifecycle.IDLE
        self.exiting = False  # an exit drain runs: only the server's Retry-After may delay a send
        self.exit_deadline = 0.0
        self.flush_requests = 0
        self.generation = 0
        self.orphan_scan = False
        self.orphan_at = 0.0
        self.loading = False
        self.last_error: Optional[str] = None
        self.auth_logged = False
        self.last_drop_warn = -1e9

    def in_memory_local(self) -> int:
        """This process's events in memory, wherever they are in the pipeline."""
        return (
            len(self.inbox)
            + len(self.side)
            + self.intaking
            + self.ready.local
            + self.in_flight_local
            + self.spilling
        )

    def pending_local(self) -> int:
        """This process's events not settled yet: in memory, or on disk only."""
        return self.in_memory_local() + self.ledger.spool_pending

    def outstanding(self, with_orphans: bool) -> int:
        """What a drain waits for: our events, plus (for an exit drain) other processes' spooled ones."""
        n = self.pending_local()
        if with_orphans:
            n += (len(self.ready) - self.ready.local) + (self.in_flight - self.in_flight_local)
            n += 1 if self.orphan_scan or self.loading else 0
        return n

    def gauges(self) -> dict[str, Any]:
        return {
            "queued": len(self.inbox) + self.intaking + self.ready.local,
            "in_flight": self.in_flight_local + self.spilling,
            "queued_bytes": self.ready.bytes,
            "lifecycle": self.lifecycle.value,
            "window": self.health.window,
            "last_error": self.last_error,
        }
