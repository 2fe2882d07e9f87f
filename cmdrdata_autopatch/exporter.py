"""Where recorded events go: the recorder seam, the simple exporters, and the one `build_exporter`.

The wrappers know one thing about an exporter: it has `record(event)`, which must be O(1), never block and
never raise (`recorder.py`). Here:

- `MemoryExporter` keeps events in a list (tests, notebooks, `patch(exporter="memory")`);
- `NullExporter` discards them (`CMDRDATA_EXPORTER=none`);
- `BackgroundExporter` is the delivery pipeline (`pipeline.py`, `drain.py`, `sender.py`, `pending.py`,
  `retry.py`, `_process.py`) that delivers through a transport (`transports.py`, `httptransport.py`) with
  an optional disk spool (`spool.py`).

`build_exporter(settings)` wires the defaults (DESIGN.md sections 5 and 6):

- `http` (the default with an API key): `HttpTransport` with `CMDRDATA_MAX_IN_FLIGHT` (16) concurrent
  POSTs, plus a write-ahead spool in `$XDG_CACHE_HOME/cmdrdata-autopatch/spool/<partition>` (`~/.cache/...`
  when XDG_CACHE_HOME is unset, `~/Library/Caches/...` on macOS; off on Windows for lack of `flock`).
  `CMDRDATA_SPOOL_DIR` replaces the root and `CMDRDATA_SPOOL_DIR=off` disables it;
  `CMDRDATA_WRITE_AHEAD=off` keeps events in memory until they overflow or the process exits;
  `CMDRDATA_SPOOL_FSYNC` is `interval` (default), `always` or `off` (see `spool.py`). The partition is a
  one-way hash of (endpoint, key), so two applications with different keys never replay each other's
  events.
- `jsonl` (the default without a key): append to `CMDRDATA_JSONL_PATH` (default `./cmdrdata-usage.jsonl`),
  say so once on stderr at the first event, and print a one-line usage summary at exit.
- `console`: one readable line per event on stderr. `memory`: `MemoryExporter`. `none`: `NullExporter`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional

from .config import Settings
from .pipeline import DeliveryPipeline
from .recorder import Recorder, RecorderBase
from .retry import Backoff
from .transports import ConsoleTransport, JsonlTransport

if TYPE_CHECKING:  # spool.py is imported by make_spool() only: the local exporters never load it
    from .spool import Spool

BackgroundExporter = DeliveryPipeline  # the first release's name, kept for callers and tests


class MemoryExporter(RecorderBase):
    """Keeps every recorded event in memory, in order. Thread-safe; for tests and interactive use."""

    def __init__(self) -> None:
        # No lock: list.append, list(...) and list.clear are each atomic (under the GIL, and per object on
        # free-threaded builds), and a lock here would be the largest cost of a recorded call.
        self._events: list[Any] = []

    def record(self, event: Any) -> bool:
        self._events.append(event)
        return True

    @property
    def events(self) -> list[Any]:
        """A copy of the events recorded so far."""
        return list(self._events)

    def wire(self) -> list[dict[str, Any]]:
        """The recorded events in their wire form."""
        return [event.to_wire() for event in self.events]

    def clear(self) -> None:
        self._events.clear()

    def flush(self, timeout: Optional[float] = None) -> tuple[int, int]:
        return (len(self._events), 0)

    def stats(self) -> dict[str, Any]:
        n = len(self._events)
        return {"recorded": n, "delivered": n, "dropped": {}, "queued": 0, "in_flight": 0, "spool_pending": 0}


class NullExporter(RecorderBase):
    """Discards events (`CMDRDATA_EXPORTER=none`): instrumentation on, delivery off."""

    def record(self, event: Any) -> bool:
        return True


def make_spool(settings: Settings, partition_key: Optional[str] = None) -> Optional[Spool]:
    """The spool for these settings, or None when disabled (`CMDRDATA_SPOOL_DIR=off`)."""
    from .spool import Spool, default_spool_root, partition_name

    root = settings.spool_dir
    if root is not None and root.strip().lower() in ("off", "none", "0", "false", "no"):
        return None
    if root is None:
        root = default_spool_root()
    name = partition_name(settings.endpoint if partition_key is None else partition_key, settings.api_key)
    return Spool(os.path.join(os.path.expanduser(root), name), fsync=settings.spool_fsync)


def build_exporter(settings: Settings, *, http_timeout: Optional[float] = None) -> Any:
    """The recorder for `settings.exporter` (see the module docstring for the defaults).

    `http_timeout` (a drop-in client's tracker with its own timeout) bounds each POST's read time.
    """
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
        from .httptransport import HttpTransport

        transport = HttpTransport(
            settings.api_key,
            settings.endpoint,
            connect_timeout=3.0 if http_timeout is None else min(3.0, http_timeout),
            read_timeout=10.0 if http_timeout is None else http_timeout,
            max_connections=settings.max_in_flight,
        )
        return DeliveryPipeline(
            transport,
            spool=make_spool(settings),
            write_ahead=settings.write_ahead,
            max_in_flight=settings.max_in_flight,
            **common,
        )
    if name == "console":
        return DeliveryPipeline(ConsoleTransport(), max_in_flight=1, **common)
    transport_jsonl = JsonlTransport(settings.jsonl_path, summarize=True)
    notice = (
        f"cmdrdata-autopatch: writing OpenAI usage events locally to {transport_jsonl.path} "
        "(set CMDRDATA_API_KEY to send them to CmdrData)"
    )
    spool = make_spool(settings, partition_key=transport_jsonl.path) if settings.spool_dir else None
    return DeliveryPipeline(
        transport_jsonl, spool=spool, write_ahead=False, max_in_flight=1, notice=notice, **common
    )


__all__ = [
    "BackgroundExporter",
    "Backoff",
    "DeliveryPipeline",
    "MemoryExporter",
    "NullExporter",
    "Recorder",
    "RecorderBase",
    "build_exporter",
    "make_spool",
]
