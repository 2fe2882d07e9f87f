"""Where recorded events go: the exporter seam.

The wrappers know one thing about an exporter: it has `record(event)`, which must be O(1), never block and
never raise. `MemoryExporter` keeps events in a list (tests, notebooks, `patch(exporter="memory")`).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol, runtime_checkable

from .events import UsageEvent


@runtime_checkable
class Recorder(Protocol):
    """Anything that accepts events. `patch(exporter=obj)` takes any object with this method."""

    def record(self, event: UsageEvent) -> Any: ...


class MemoryExporter:
    """Keeps every recorded event in memory, in order. Thread-safe; for tests and interactive use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[UsageEvent] = []

    def record(self, event: UsageEvent) -> bool:
        with self._lock:
            self._events.append(event)
        return True

    @property
    def events(self) -> list[UsageEvent]:
        """A copy of the events recorded so far."""
        with self._lock:
            return list(self._events)

    def wire(self) -> list[dict[str, Any]]:
        """The recorded events in their wire form."""
        return [event.to_wire() for event in self.events]

    def clear(self) -> None:
        with self._lock:
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
