"""The recorder seam: what the wrappers need from wherever events go.

A recorder has `record(event)`, which must be O(1), never block and never raise. `flush`, `shutdown` and
`stats` have defaults in `RecorderBase`, so a custom recorder (`patch(exporter=obj)`) may define only
`record` and still be flushed and shut down like the built-in ones without anyone probing it with
`getattr`.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable

from .diagnostics import report_internal_error


@runtime_checkable
class Recorder(Protocol):
    """Anything that accepts events. `patch(exporter=obj)` takes any object with this method."""

    def record(self, event: Any) -> Any: ...


class RecorderBase:
    """Default `flush` / `shutdown` / `stats` for recorders that deliver synchronously (or not at all)."""

    def record(self, event: Any) -> Any:  # pragma: no cover - subclasses define it
        raise NotImplementedError

    def flush(self, timeout: Optional[float] = None) -> tuple[int, int]:
        """Deliver what was recorded; returns (delivered during this call, still pending)."""
        return (0, 0)

    def shutdown(self, timeout: Optional[float] = None) -> tuple[int, int]:
        return self.flush(timeout)

    def stats(self) -> dict[str, Any]:
        return {"recorded": 0, "delivered": 0, "dropped": {}, "queued": 0, "in_flight": 0, "spool_pending": 0}


def call_optional(recorder: Any, name: str, *args: Any) -> Any:
    """`recorder.<name>(*args)` for a method (`flush`, `shutdown`, `stats`) that a minimal `record`-only
    recorder may lack: the one place that probes for it. A failure inside is counted, never raised."""
    method = getattr(recorder, name, None)
    if not callable(method):
        return None
    try:
        return method(*args)
    except Exception as exc:
        report_internal_error(f"recorder.{name}", exc)
        return None


def emit(recorder: Any, event: Any) -> None:
    """Hand an event to its recorder; a recorder that fails costs the event, never the call."""
    try:
        recorder.record(event)
    except Exception as exc:
        report_internal_error("exporter.record", exc)
