"""`CMDRDATA_EXPORTER=otlp`: each usage event becomes one OpenTelemetry log record, sent over OTLP to the
Collector (or vendor agent) the team already runs. Needs the `otlp` extra (docs/otlp.md).

    record() ──> bounded deque ──(one worker thread)──> to_wire + attributes ──> our Logger ──> batch
                                                                                               │
                                      official OTLPLogExporter.export(batch) <─────────────────┘

Why not the SDK's `BatchLogRecordProcessor`: it drops silently when its queue is full and says nothing of
which exports failed, while our contract is "every event is delivered or counted by reason". So the queue
and its accounting are ours (the same rules as `pipeline.py`: `record()` is O(1), never blocks, never
raises; a full queue drops the newest, counted `queue_full`), and the worker hands each batch to the
official `OTLPLogExporter` (which keeps its own bounded retry within `OTEL_EXPORTER_OTLP_TIMEOUT`) and
counts the result. Formatting (`to_wire()`, attributes) happens on the worker, off the call path.

Nothing global is touched: our own `LoggerProvider` (and `MeterProvider` for the opt-in
`gen_ai.client.token.usage` histogram) with a `Resource.create()` of their own (service.name etc. from
`OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`), no atexit hook of the SDK's (`shutdown_on_exit=False`),
the SDK's self-metrics pointed at a no-op meter provider. The exit drain goes through `_process.py`'s
registry, like the delivery pipeline's, so SIGTERM delivers too.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Optional

from . import _process
from .diagnostics import report_internal_error
from .otlp_attributes import EVENT_NAME, attributes, body, token_points
from .otlp_settings import describe, endpoint, missing, protocol
from .recorder import RecorderBase

SCOPE = "cmdrdata_autopatch"
# the semconv advisory buckets of gen_ai.client.token.usage
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
_monotonic = time.monotonic


def _no_meters() -> dict[str, Any]:
    """`meter_provider=` for the SDK objects that count themselves: a no-op one, never the app's global."""
    from opentelemetry.metrics import NoOpMeterProvider

    return {"meter_provider": NoOpMeterProvider()}


def _with_no_meters(factory: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return factory(*args, **kwargs, **_no_meters())
    except TypeError:  # an SDK release without self-metrics (no meter_provider parameter)
        return factory(*args, **kwargs)


def _log_exporter(environ: Mapping[str, str]) -> Any:
    if protocol(environ) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs

        return _with_no_meters(GrpcLogs)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return _with_no_meters(OTLPLogExporter)


def _metric_exporter(environ: Mapping[str, str]) -> Any:
    if protocol(environ, "METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics

        return _with_no_meters(GrpcMetrics)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return _with_no_meters(OTLPMetricExporter)


class _Collect:
    """Our LogRecordProcessor (duck-typed: the SDK calls these four methods): the worker's Logger.emit
    lands here, and the worker takes the batch. Only the worker thread emits, so no lock is needed."""

    def __init__(self) -> None:
        self.batch: list[Any] = []

    def on_emit(self, log_record: Any) -> None:
        self.batch.append(_readable(log_record))

    def emit(self, log_data: Any) -> None:  # the name older SDK releases call
        self.batch.append(log_data)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _readable(record: Any) -> Any:
    """The read-only form the exporter expects (what the SDK's own processors hand over)."""
    try:
        from opentelemetry.sdk._logs import ReadableLogRecord

        return ReadableLogRecord(
            log_record=record.log_record,
            resource=record.resource,
            instrumentation_scope=record.instrumentation_scope,
            limits=record.limits,
        )
    except Exception:  # another SDK release: the exporter reads the same attributes from the record
        return record


class _Sdk:
    """The OpenTelemetry objects of one exporter: built eagerly (a broken setup fails at `patch()`), never
    registered globally."""

    def __init__(self, environ: Mapping[str, str], metrics: bool) -> None:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk.resources import Resource

        from ._version import __version__

        self.environ = environ
        self.resource = Resource.create({})
        self.collect = _Collect()
        self.provider = _with_no_meters(LoggerProvider, resource=self.resource, shutdown_on_exit=False)
        self.provider.add_log_record_processor(self.collect)
        self.logger = self.provider.get_logger(SCOPE, __version__)
        self.exporter = _log_exporter(environ)
        self.meters: Any = None
        self.histogram: Any = None
        if metrics:
            self._build_metrics(__version__)

    def _build_metrics(self, version: str) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(_metric_exporter(self.environ))
        self.meters = MeterProvider(metric_readers=[reader], resource=self.resource, shutdown_on_exit=False)
        meter = self.meters.get_meter(SCOPE, version)
        self.histogram = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
        )

    def renew_exporter(self) -> None:
        """A forked child gets its own connections (the parent's pooled sockets are not ours to share)."""
        self.exporter = _log_exporter(self.environ)

    def emit(self, wire: dict[str, Any], start: float) -> None:
        from opentelemetry._logs import SeverityNumber

        failed = bool(wire.get("error_occurred"))
        self.logger.emit(
            timestamp=int(start * 1e9),
            observed_timestamp=time.time_ns(),
            severity_number=SeverityNumber.ERROR if failed else SeverityNumber.INFO,
            severity_text="ERROR" if failed else "INFO",
            body=body(wire),
            attributes=attributes(wire),
            event_name=EVENT_NAME,
        )
        if self.histogram is not None:
            for tokens, attrs in token_points(wire):
                self.histogram.record(tokens, attrs)


class OtlpExporter(RecorderBase):
    """Usage events as OTLP log records (see the module docstring). Counters follow the pipeline's law:
    recorded == exported + sum(dropped) + queued + in_flight; `failed` counts the events of failed exports
    (also in `dropped["export_failed"]`)."""

    def __init__(
        self,
        *,
        queue_size: int = 10_000,
        flush_interval: float = 0.1,
        exit_timeout: float = 2.0,
        metrics: bool = False,
        batch_size: int = 512,
        register_exit: bool = True,
    ) -> None:
        # the OTEL_* settings the SDK read at construction, for `stats()` (which shows header names only)
        self._environ = {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
        why = missing(self._environ)
        if why is not None:
            raise ImportError(why)
        self.queue_size = max(1, int(queue_size))
        self._flush_interval = max(0.0, float(flush_interval))
        self.exit_timeout = max(0.0, float(exit_timeout))
        self._batch_size = max(1, int(batch_size))
        self._metrics = metrics
        self._sdk = _Sdk(self._environ, metrics)
        self._cv = threading.Condition(threading.Lock())
        self._reset()
        if register_exit:
            _process.register(self)

    def _reset(self) -> None:
        """Fresh state: at construction and in a forked child (the parent exports what it queued)."""
        self._pid = os.getpid()
        self._cv = threading.Condition(threading.Lock())
        self._queue: deque[Any] = deque()
        self._in_flight = 0
        self._flushing = 0
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        self._counts = {"recorded": 0, "exported": 0, "failed": 0, "export_errors": 0}
        self._dropped: dict[str, int] = {}
        self._last_error: Optional[str] = None

    def after_fork_child(self) -> None:
        self._reset()
        try:
            self._sdk.renew_exporter()
        except Exception as exc:
            report_internal_error("otlp after fork", exc)

    # -- the hot path --------------------------------------------------------------------------------

    def record(self, event: Any) -> bool:
        """Queue `event`. O(1), never blocks on I/O, never raises. False when it was dropped."""
        try:
            if self._pid != os.getpid():
                self.after_fork_child()
            with self._cv:
                self._counts["recorded"] += 1
                if self._closed:
                    return self._drop_locked("after_exit")
                if len(self._queue) + self._in_flight >= self.queue_size:
                    return self._drop_locked("queue_full")
                self._queue.append(event)
                if len(self._queue) == 1 or len(self._queue) == self._batch_size:
                    self._cv.notify_all()
                start = self._thread is None
                if start:
                    self._thread = threading.Thread(target=self._run, name="cmdrdata-otlp", daemon=True)
            if start:
                self._start()
            return True
        except Exception as exc:
            report_internal_error("otlp record", exc)
            return False

    def _drop_locked(self, reason: str, n: int = 1) -> bool:
        self._dropped[reason] = self._dropped.get(reason, 0) + n
        return False

    def _start(self) -> None:
        thread = self._thread
        try:
            if thread is not None:
                thread.start()
        except Exception as exc:  # interpreter shutdown refuses new threads: the exit drain works inline
            report_internal_error("otlp start", exc)
            with self._cv:
                self._thread = None

    # -- the worker ----------------------------------------------------------------------------------

    def _run(self) -> None:
        _process.block_signals_in_this_thread()
        while True:
            try:
                batch = self._next_batch()
                if batch is None:
                    return
                self._export(batch)
            except Exception as exc:
                report_internal_error("otlp worker", exc)
                time.sleep(0.1)

    def _next_batch(self) -> Optional[list[Any]]:
        """Wait for events; then up to `flush_interval` for more (unless the batch is full or a flush
        waits). Returns the batch, now counted in flight."""
        with self._cv:
            first_seen: Optional[float] = None
            while True:
                if self._pid != os.getpid():
                    return None  # a forked child's copy of this thread does not exist: never reached there
                n = len(self._queue)
                if n == 0:
                    first_seen = None
                    self._cv.wait()
                    continue
                now = _monotonic()
                first_seen = now if first_seen is None else first_seen
                due = first_seen + self._flush_interval
                if n >= self._batch_size or self._flushing or self._closed or now >= due:
                    take = min(n, self._batch_size)
                    batch = [self._queue.popleft() for _ in range(take)]
                    self._in_flight += take
                    return batch
                self._cv.wait(due - now)

    def _export(self, events: list[Any]) -> None:
        """Format on this thread, export through the official exporter, count the outcome."""
        sdk = self._sdk
        sdk.collect.batch = []
        invalid = 0
        for event in events:
            try:
                wire = event.to_wire()
                sdk.emit(wire, float(wire.get("request_start_time") or time.time()))
            except Exception as exc:
                invalid += 1
                report_internal_error("otlp format", exc)
        records, sdk.collect.batch = sdk.collect.batch, []
        ok = False
        error: Optional[str] = None
        if records:
            try:
                ok = _succeeded(sdk.exporter.export(records))
                error = None if ok else "export failed (see the opentelemetry exporter's log)"
            except Exception as exc:  # the exporter should not raise; if it does, the batch is lost
                error = f"{type(exc).__name__}"
                report_internal_error("otlp export", exc)
        self._settle(len(events), len(records), invalid, ok, error)

    def _settle(self, taken: int, emitted: int, invalid: int, ok: bool, error: Optional[str]) -> None:
        with self._cv:
            self._in_flight -= taken
            lost = taken - invalid if not ok else taken - invalid - emitted
            if invalid:
                self._drop_locked("invalid", invalid)
            if ok:
                self._counts["exported"] += emitted
            if lost > 0:
                self._counts["failed"] += lost
                self._counts["export_errors"] += 1
                self._drop_locked("export_failed", lost)
                self._last_error = error
            self._cv.notify_all()

    # -- flush, shutdown, exit -----------------------------------------------------------------------

    def flush(self, timeout: Optional[float] = 5.0) -> tuple[int, int]:
        """Wait until everything recorded so far is exported (or counted lost), at most `timeout` seconds;
        then push the histogram. Returns (exported during this call, still pending)."""
        try:
            deadline = None if timeout is None else _monotonic() + max(0.0, timeout)
            exported = self._wait(deadline)
            if self._sdk.meters is not None:
                left = 30.0 if deadline is None else max(0.0, deadline - _monotonic())
                self._sdk.meters.force_flush(timeout_millis=int(left * 1000))
            return exported
        except Exception as exc:
            report_internal_error("otlp flush", exc)
            return (0, -1)

    def _wait(self, deadline: Optional[float]) -> tuple[int, int]:
        if self._pid != os.getpid():
            self.after_fork_child()
        if self._thread is None and self._queue:
            self._export_inline(deadline)
        with self._cv:
            before = self._counts["exported"]
            self._flushing += 1
            self._cv.notify_all()
            try:
                while self._queue or self._in_flight:
                    if threading.current_thread() is self._thread:
                        break  # called from our own worker (a callback): never wait on ourselves
                    left = None if deadline is None else deadline - _monotonic()
                    if left is not None and left <= 0:
                        break
                    self._cv.wait(left)
            finally:
                self._flushing -= 1
            return (self._counts["exported"] - before, len(self._queue) + self._in_flight)

    def _export_inline(self, deadline: Optional[float]) -> None:
        """No worker (threads refused at interpreter exit): export on this thread, within the deadline."""
        while deadline is None or _monotonic() < deadline:
            with self._cv:
                take = min(len(self._queue), self._batch_size)
                if take == 0:
                    return
                batch = [self._queue.popleft() for _ in range(take)]
                self._in_flight += take
            self._export(batch)

    def begin_exit(self) -> None:
        """Ask the worker to send what waits now (a fan-out calls this before draining its other exporters,
        so both use the same exit budget)."""
        with self._cv:
            self._flushing += 1
            self._cv.notify_all()

    def exit_drain(self, budget: Optional[float] = None) -> None:
        """At exit (atexit, a multiprocessing finalizer, SIGTERM/SIGINT): export for at most `exit_timeout`
        seconds (or `budget`), count what is left as `exit_timeout`, stop accepting events."""
        with self._cv:
            if self._closed:
                return
        self.flush(self.exit_timeout if budget is None else budget)
        with self._cv:
            self._closed = True
            left = len(self._queue)
            self._queue.clear()
            if left:
                self._drop_locked("exit_timeout", left)
            lost = dict(self._dropped)
            if self._in_flight:
                lost["in_flight_at_exit"] = self._in_flight
            exported, last_error = self._counts["exported"], self._last_error
        if lost:  # (DESIGN.md section 6: the exit line counts every event lost in this run, with its reason)
            why = ", ".join(f"{reason}={n}" for reason, n in sorted(lost.items()))
            _process.stderr_line(
                f"cmdrdata-autopatch: at exit {exported} usage event(s) exported over OTLP to "
                f"{endpoint(self._environ)}, {sum(lost.values())} lost in this run ({why})"
                + (f"; last error: {last_error}" if last_error else "")
            )

    def shutdown(self, timeout: Optional[float] = None) -> tuple[int, int]:
        """Flush for at most `timeout` (default `exit_timeout`) seconds; the exporter stays usable."""
        return self.flush(self.exit_timeout if timeout is None else timeout)

    def stats(self) -> dict[str, Any]:
        with self._cv:
            out: dict[str, Any] = dict(self._counts)
            out["delivered"] = out["exported"]
            out["dropped"] = dict(self._dropped)
            out["queued"] = len(self._queue)
            out["in_flight"] = self._in_flight
            out["spool_pending"] = 0
            out["last_error"] = self._last_error
        out["otlp"] = describe(self._environ, self._metrics)
        return out

    # -- seams for tests -----------------------------------------------------------------------------

    @property
    def sdk(self) -> Any:
        """The OpenTelemetry objects (providers, exporter) this exporter owns."""
        return self._sdk


def _succeeded(result: Any) -> bool:
    """LogRecordExportResult.SUCCESS across SDK releases (LogExportResult before 1.39)."""
    return getattr(result, "name", None) == "SUCCESS"
