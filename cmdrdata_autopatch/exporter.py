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
- `otlp`: `otlp.OtlpExporter` (the `otlp` extra): one OpenTelemetry log record per event, over OTLP to the
  Collector named by the standard `OTEL_EXPORTER_OTLP_*` variables (docs/otlp.md).
- a comma list (`http,otlp`): `FanOutRecorder` records each event into every one of them.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Optional, Protocol, runtime_checkable

from . import _process
from .config import Settings
from .diagnostics import report_internal_error
from .pipeline import DeliveryPipeline
from .recorder import Recorder, RecorderBase, call_optional
from .retry import Backoff
from .transports import ConsoleTransport, JsonlTransport

if TYPE_CHECKING:  # spool.py is imported by make_spool() only: the local exporters never load it
    from .spool import Spool

BackgroundExporter = DeliveryPipeline  # the first release's name, kept for callers and tests


@runtime_checkable
class OtlpLike(Protocol):
    """An exporter whose exit drain takes the fan-out's remaining budget (`OtlpExporter`)."""

    def begin_exit(self) -> None: ...

    def exit_drain(self, budget: Optional[float] = None) -> None: ...


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
    if root is None or not root.strip():  # empty, like an empty variable: the default, never the cwd
        root = default_spool_root()
    name = partition_name(settings.endpoint if partition_key is None else partition_key, settings.api_key)
    return Spool(os.path.join(os.path.expanduser(root), name), fsync=settings.spool_fsync)


class FanOutRecorder(RecorderBase):
    """Records each event into several exporters (`CMDRDATA_EXPORTER=http,otlp`).

    Each exporter's failure is its own: a `record` that raises is counted under `fanout_errors` and the
    others still get the event. The exporters are built without their own exit hook; this one registers
    once with `_process.py` and drains them all within one exit budget: exporters that can start early
    (`begin_exit`) are woken first, so they export while the others drain, and get what is left of it.

    `stats()` keeps the first exporter's counters at the top level (so code reading `stats()["delivered"]`
    still works, the accounting law included) and every exporter's under `exporters[name]`.
    """

    def __init__(self, members: list[tuple[str, Any]], exit_timeout: float = 2.0) -> None:
        self.members = members
        self.exit_timeout = exit_timeout
        self._errors: dict[str, int] = {name: 0 for name, _ in members}
        _process.register(self)

    def record(self, event: Any) -> bool:
        accepted = False
        for name, member in self.members:
            try:
                accepted = bool(member.record(event)) or accepted
            except Exception as exc:
                self._errors[name] += 1
                report_internal_error(f"exporter.record ({name})", exc)
        return accepted

    def _each(self, method: str, *args: Any) -> list[Any]:
        return [call_optional(member, method, *args) for _, member in self.members]

    def flush(self, timeout: Optional[float] = None) -> tuple[int, int]:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        done, pending = 0, 0
        for _, member in self.members:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            result = call_optional(member, "flush", left)
            if isinstance(result, tuple) and len(result) == 2:
                done, pending = done + result[0], pending + max(0, result[1])
        return (done, pending)

    def shutdown(self, timeout: Optional[float] = None) -> tuple[int, int]:
        return self.flush(self.exit_timeout if timeout is None else timeout)

    def exit_drain(self) -> None:
        """The others drain first (each within its own `exit_timeout`, which is ours too) while the
        OTLP exporters, woken first, already export; these then get what is left of the budget."""
        deadline = time.monotonic() + self.exit_timeout
        self._each("begin_exit")
        late = [member for _, member in self.members if isinstance(member, OtlpLike)]
        for _, member in self.members:
            if not isinstance(member, OtlpLike):
                call_optional(member, "exit_drain")
        for member in late:
            call_optional(member, "exit_drain", max(0.0, deadline - time.monotonic()))

    def after_fork_child(self) -> None:
        self._each("after_fork_child")

    def stats(self) -> dict[str, Any]:
        parts = {name: call_optional(member, "stats") or {} for name, member in self.members}
        out: dict[str, Any] = dict(parts[self.members[0][0]])
        out["exporters"] = parts
        out["fanout_errors"] = dict(self._errors)
        return out


def build_exporter(settings: Settings, *, http_timeout: Optional[float] = None) -> Any:
    """The recorder for `settings.exporter` (see the module docstring for the defaults).

    `http_timeout` (a drop-in client's tracker with its own timeout) bounds each POST's read time.
    """
    names = settings.exporters
    if len(names) == 1:
        return _build_one(names[0], settings, http_timeout, register_exit=True)
    members = [(name, _build_one(name, settings, http_timeout, register_exit=False)) for name in names]
    return FanOutRecorder(members, exit_timeout=settings.exit_timeout)


def _build_one(name: str, settings: Settings, http_timeout: Optional[float], register_exit: bool) -> Any:
    """One exporter; `register_exit=False` when a fan-out drains it at exit."""
    if name == "memory":
        return MemoryExporter()
    if name == "none":
        return NullExporter()
    common: dict[str, Any] = {
        "queue_size": settings.queue_size,
        "flush_interval": settings.flush_interval,
        "exit_timeout": settings.exit_timeout,
        "register_exit": register_exit,
    }
    if name == "otlp":
        from .otlp import OtlpExporter

        return OtlpExporter(metrics=settings.otlp_metrics, **common)
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
    "FanOutRecorder",
    "MemoryExporter",
    "NullExporter",
    "Recorder",
    "RecorderBase",
    "build_exporter",
    "make_spool",
]
