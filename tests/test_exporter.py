"""BackgroundExporter in-process behaviour, with scripted transports (no network).

Every test ends at a quiescent point and checks the conservation law with `assert_invariant`.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from cmdrdata_autopatch.config import load_settings
from cmdrdata_autopatch.events import UsageEvent
from cmdrdata_autopatch.exporter import (
    BackgroundExporter,
    Backoff,
    MemoryExporter,
    NullExporter,
    build_exporter,
)
from cmdrdata_autopatch.httptransport import HttpTransport
from cmdrdata_autopatch.sender import SenderPool
from cmdrdata_autopatch.spool import Spool
from cmdrdata_autopatch.transports import (
    ConsoleTransport,
    JsonlTransport,
    MemoryTransport,
    Outcome,
    SendResult,
)

from .support import assert_invariant, eventually, make_event


class GateTransport(MemoryTransport):
    """Delivers only while the gate is open; blocks (like a hanging backend) while it is closed."""

    def __init__(self, open_: bool = True) -> None:
        super().__init__()
        self.gate = threading.Event()
        if open_:
            self.gate.set()
        self.attempts = 0

    def send(self, event_id: str, body: bytes, timeout: Optional[float] = None) -> SendResult:
        self.attempts += 1
        if not self.gate.wait(timeout if timeout is not None else 30):
            return SendResult(Outcome.RETRY, reason="network", detail="timeout")
        return super().send(event_id, body, timeout)


class ScriptedTransport(MemoryTransport):
    """Returns scripted results first, then delivers; keeps every attempt's body."""

    def __init__(self, *results: SendResult, on_send: Optional[Callable[[], None]] = None) -> None:
        super().__init__()
        self.script = deque(results)
        self.attempts: list[tuple[str, bytes]] = []
        self.on_send = on_send

    def send(self, event_id: str, body: bytes, timeout: Optional[float] = None) -> SendResult:
        self.attempts.append((event_id, body))
        if self.on_send is not None:
            self.on_send()
        if self.script:
            return self.script.popleft()
        return super().send(event_id, body, timeout)


RETRY = SendResult(Outcome.RETRY, reason="http_503", detail="HTTP 503")


def new(exporters: list[BackgroundExporter], transport: Any, **kwargs: Any) -> BackgroundExporter:
    kwargs.setdefault("flush_interval", 0.05)
    kwargs.setdefault("backoff", Backoff(base=0.01, cap=0.05))
    kwargs.setdefault("register_exit", False)
    exporter = BackgroundExporter(transport, **kwargs)
    exporters.append(exporter)
    return exporter


def threads_named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


def test_delivers_everything_and_accounts_for_it(exporters: list[BackgroundExporter]) -> None:
    transport = MemoryTransport()
    exporter = new(exporters, transport)
    events = [make_event(i) for i in range(500)]
    ids = [e.event_id for e in events]
    assert all(exporter.record(e) for e in events)
    assert exporter.flush(10) == (500, 0)
    assert sorted(transport.event_ids) == sorted(ids)
    stats = exporter.stats()
    assert stats["delivered"] == 500 and stats["recorded"] == 500
    assert_invariant(stats)


def test_threads_start_lazily_and_stop_on_shutdown(exporters: list[BackgroundExporter]) -> None:
    exporter = new(exporters, MemoryTransport())
    assert exporter.threads() == []  # constructing starts nothing
    assert exporter.lifecycle.value == "idle"
    exporter.record(make_event())
    threads = exporter.threads()
    assert all(t.is_alive() and t.daemon for t in threads)
    assert {t.name for t in threads} == {"cmdrdata-intake", "cmdrdata-sender-1"}
    exporter.flush(5)
    exporter.shutdown(1)
    assert exporter.lifecycle.value == "idle"
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    assert exporter.record(make_event())  # usable again: restarts lazily
    assert exporter.flush(5) == (1, 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc context-switch counters")
def test_idle_threads_do_not_wake_up(exporters: list[BackgroundExporter]) -> None:
    """No polling: once idle, the worker threads block without timeouts (zero context switches)."""
    exporter = new(exporters, MemoryTransport(), flush_interval=0.05)
    exporter.record(make_event())
    exporter.flush(5)
    time.sleep(0.2)
    threads = exporter.threads()
    assert len(threads) >= 2

    def switches() -> int:
        total = 0
        for thread in threads:
            assert thread is not None
            with open(f"/proc/self/task/{thread.native_id}/status") as status:
                for line in status:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        return total

    before = switches()
    time.sleep(1.0)
    assert switches() - before <= 2  # a 100 ms poller would show ~20


def test_batches_on_size_or_interval(exporters: list[BackgroundExporter]) -> None:
    transport = MemoryTransport()
    exporter = new(exporters, transport, flush_interval=30.0, batch_size=10)
    for i in range(5):
        exporter.record(make_event(i))
    time.sleep(0.3)
    assert transport.bodies == []  # below the batch size, well before the interval
    for i in range(5):
        exporter.record(make_event(i))
    deadline = time.monotonic() + 10
    while len(transport.bodies) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(transport.bodies) == 10  # the batch size triggered it

    interval = new(exporters, MemoryTransport(), flush_interval=0.2, batch_size=1000)
    interval.record(make_event())
    deadline = time.monotonic() + 10
    while not interval.transport.bodies and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)
    assert interval.stats()["delivered"] == 1  # the interval triggered it, no flush() needed


def test_events_are_serialized_promptly_while_the_backend_hangs(exporters: list[BackgroundExporter]) -> None:
    """Raw OpenAI response references are released by the intake thread even when nothing can be sent."""
    transport = GateTransport(open_=False)
    exporter = new(exporters, transport, flush_interval=0.05)

    refs = []
    for i in range(50):
        event = make_event(i)  # events hold copied numbers, never a response: the event itself is watched
        refs.append(weakref.ref(event))
        event.total_tokens = 7
        exporter.record(event)
        del event
    deadline = time.monotonic() + 10
    while any(ref() is not None for ref in refs) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.02)
    assert all(ref() is None for ref in refs)
    stats = exporter.stats()
    assert stats["delivered"] == 0 and stats["queued_bytes"] > 0  # bytes are accounted on serialized bodies
    transport.gate.set()
    assert exporter.flush(10)[1] == 0  # (some may be delivered before flush() is even called)
    assert exporter.stats()["delivered"] == 50
    assert all(json.loads(body)["total_tokens"] == 7 for body in transport.bodies)


def test_overflow_without_spool_drops_newest_and_counts(exporters: list[BackgroundExporter]) -> None:
    transport = GateTransport(open_=False)
    exporter = new(exporters, transport, queue_size=100)
    accepted = sum(exporter.record(make_event(i)) for i in range(300))
    assert accepted == 100
    stats = exporter.stats()
    assert stats["dropped"] == {"queue_full": 200}
    assert stats["queued"] + stats["in_flight"] == 100
    assert_invariant(stats)
    transport.gate.set()
    exporter.flush(10)
    stats = exporter.stats()
    assert stats["delivered"] == 100
    assert_invariant(stats)


def test_byte_bound_applies_to_serialized_bodies(exporters: list[BackgroundExporter]) -> None:
    transport = GateTransport(open_=False)
    exporter = new(exporters, transport, max_queue_bytes=20_000, flush_interval=0.01)
    for i in range(100):
        exporter.record(make_event(i, metadata={"pad": "x" * 1000}))
        time.sleep(0.001)
    exporter.flush(0.5)
    stats = exporter.stats()
    assert stats["queued_bytes"] <= 20_000
    assert stats["dropped"].get("queue_bytes", 0) > 50
    assert_invariant(stats)
    transport.gate.set()
    exporter.flush(10)
    assert_invariant(exporter.stats())


def test_overflow_with_spool_goes_to_disk_then_is_delivered(
    exporters: list[BackgroundExporter], tmp_path: Path
) -> None:
    transport = GateTransport(open_=False)
    exporter = new(exporters, transport, queue_size=200, spool=Spool(tmp_path))
    ids = []
    for i in range(1000):
        event = make_event(i)
        ids.append(event.event_id)
        exporter.record(event)
        if i % 50 == 0:
            time.sleep(0.02)  # let the intake thread keep up, as real OpenAI calls would
    exporter.flush(1.0)
    stats = exporter.stats()
    assert stats["spooled"] > 0 and stats["spool_pending"] > 0
    assert_invariant(stats)
    transport.gate.set()
    assert exporter.flush(20)[1] == 0
    stats = exporter.stats()
    assert_invariant(stats)
    delivered = set(transport.event_ids)
    lost = sum(stats["dropped"].values())
    assert lost == 0, stats  # a queue of 200 with a spool drops nothing: the excess waits on disk
    assert len(delivered) == stats["delivered"] == 1000
    exporter.shutdown(1)
    assert list(tmp_path.glob("*.jsonl")) == []  # every segment acknowledged and deleted


def _widen_the_counting_window() -> Callable[..., Any]:
    """A thread trace that stretches the moment in a sender's `load()` between reading lines off the
    disk and counting them, whenever the read is already marked finished there (`loading` is clear)
    and the state lock is free: it wakes every other sender, as a settled attempt would, and sleeps."""
    seen: set[int] = set()

    def local(frame: Any, event: str, arg: Any) -> Any:
        result = frame.f_locals.get("result")
        pool = frame.f_locals.get("self")
        if event != "line" or id(frame) in seen or result is None or not result.entries:
            return local
        state = pool.state
        if state.loading or state.lock._is_owned():
            return local
        seen.add(id(frame))
        with state.lock:
            state.send_cv.notify_all()
        time.sleep(0.05)
        return local

    def trace(frame: Any, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code is SenderPool.load.__code__:
            return local
        return None

    return trace


def test_a_second_sender_never_takes_a_spool_read_in_progress_for_lost_events(
    exporters: list[BackgroundExporter], tmp_path: Path
) -> None:
    # Regression: a sender marked its spool read finished before it counted what it had read. Another
    # sender woken in that window read again, found the disk empty, and wrote the rest of the on-disk
    # backlog off as `spool_lost`; the pending count then went negative, so a flush returned early.
    transport = GateTransport(open_=False)
    threading.settrace(_widen_the_counting_window())
    try:
        exporter = new(exporters, transport, queue_size=20, spool=Spool(tmp_path), max_in_flight=8)
        for i in range(300):
            exporter.record(make_event(i))
            if i % 20 == 0:
                time.sleep(0.005)
        exporter.flush(1.0)
        assert exporter.stats()["spool_pending"] > 100  # most of the backlog is on disk only
        transport.gate.set()
        done = exporter.flush(30)
    finally:
        threading.settrace(None)  # type: ignore[arg-type]
    stats = exporter.stats()
    assert done[1] == 0, stats
    assert stats["dropped"] == {}, stats
    assert stats["delivered"] == 300 == len(set(transport.event_ids)), stats
    assert stats["spool_pending"] == 0, stats
    assert_invariant(stats)


def test_events_are_written_ahead_during_an_outage(
    exporters: list[BackgroundExporter], tmp_path: Path
) -> None:
    transport = ScriptedTransport(*[RETRY] * 10_000)
    exporter = new(exporters, transport, spool=Spool(tmp_path))
    for i in range(30):
        exporter.record(make_event(i))
    assert eventually(lambda: exporter.stats()["written_ahead"] == 30, 10)
    lines = sum(len(p.read_bytes().splitlines()) for p in tmp_path.glob("*.jsonl"))
    assert lines == 30  # on disk while the backend fails: kill -9 now would lose nothing
    transport.script.clear()  # the backend recovers
    assert exporter.flush(20) == (30, 0)
    assert len(set(transport.event_ids)) == 30
    assert_invariant(exporter.stats())


def test_retry_sends_byte_identical_body_after_caller_mutates_metadata(
    exporters: list[BackgroundExporter],
) -> None:
    transport = ScriptedTransport(RETRY, RETRY)
    exporter = new(exporters, transport)
    caller_metadata = {"plan": "pro", "tags": ["a"]}
    event = make_event(metadata=dict(caller_metadata))  # the wrapper snapshots context metadata
    exporter.record(event)
    caller_metadata["plan"] = "free"  # the caller mutates its own dict after the call
    deadline = time.monotonic() + 10
    while not transport.attempts and time.monotonic() < deadline:
        time.sleep(0.005)
    assert event.metadata is not None
    event.metadata["tags"].append("late")  # even the event's own dict, after serialization
    exporter.flush(10)
    bodies = {body for _, body in transport.attempts}
    assert len(transport.attempts) == 3 and len(bodies) == 1
    assert json.loads(bodies.pop())["metadata"] == {"plan": "pro", "tags": ["a"]}


def test_oversized_metadata_is_truncated_but_the_event_is_billed(exporters: list[BackgroundExporter]) -> None:
    transport = MemoryTransport()
    exporter = new(exporters, transport, max_event_bytes=4096)
    exporter.record(make_event(3, metadata={"blob": "x" * 100_000}))
    exporter.flush(10)
    (wire,) = transport.wire()
    assert wire["metadata"] is None and wire["metadata_truncated"] is True
    assert wire["input_tokens"] == 5 and wire["output_tokens"] == 3 and wire["customer_id"] == "c1"
    assert exporter.stats()["metadata_truncated"] == 1


def test_record_never_raises_and_counts_invalid_events(exporters: list[BackgroundExporter]) -> None:
    exporter = new(exporters, MemoryTransport())

    class Broken(UsageEvent):
        def to_json(self) -> bytes:
            raise RuntimeError("boom")

    broken = Broken("chat.completions", time.time(), 0.01)
    assert exporter.record(broken) is True  # accepted: serialization happens later
    assert exporter.record(object()) is True  # type: ignore[arg-type]  # accepted now, counted invalid later
    exporter.flush(5)
    stats = exporter.stats()
    assert stats["dropped"]["invalid"] == 2
    assert_invariant(stats)


def test_rejected_events_are_dropped_with_a_reason(exporters: list[BackgroundExporter]) -> None:
    transport = ScriptedTransport(SendResult(Outcome.REJECTED, status=400, reason="rejected_400"))
    exporter = new(exporters, transport)
    exporter.record(make_event(1))
    exporter.record(make_event(2))
    exporter.flush(5)
    stats = exporter.stats()
    assert stats["dropped"] == {"rejected_400": 1} and stats["delivered"] == 1
    assert len(transport.attempts) == 2  # not retried
    assert_invariant(stats)


def test_drop_warning_is_rate_limited(
    exporters: list[BackgroundExporter], caplog: pytest.LogCaptureFixture
) -> None:
    transport = GateTransport(open_=False)
    exporter = new(exporters, transport, queue_size=10)
    with caplog.at_level(logging.WARNING, logger="cmdrdata_autopatch"):
        for _ in range(5):
            for i in range(50):
                exporter.record(make_event(i))
            time.sleep(0.1)
        time.sleep(0.2)
    warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1
    assert "queue_full" in warnings[0].getMessage()
    transport.gate.set()


def test_reentrant_record_does_not_deadlock(exporters: list[BackgroundExporter]) -> None:
    """A finalizer or handler that records while record() holds the lock is queued, not deadlocked."""
    transport = MemoryTransport()
    exporter = new(exporters, transport)

    class Reentrant(deque):  # type: ignore[type-arg]
        def append(self, item: Any) -> None:
            super().append(item)
            if len(self) == 1:
                exporter.record(make_event(99))  # called while the exporter lock is held

    exporter._state.inbox = Reentrant()  # the seam: record() appends to it under the lock
    done = threading.Event()

    def go() -> None:
        exporter.record(make_event(1))
        done.set()

    threading.Thread(target=go, daemon=True).start()
    assert done.wait(5), "record() deadlocked on re-entry"
    exporter.flush(5)
    assert exporter.stats()["delivered"] == 2
    assert_invariant(exporter.stats())


def test_callbacks_and_log_handlers_that_record_or_flush_do_not_deadlock(
    exporters: list[BackgroundExporter],
) -> None:
    holder: list[BackgroundExporter] = []

    def from_sender_thread() -> None:
        exporter = holder[0]
        exporter.flush(5)  # from our own thread: returns at once instead of waiting on itself
        if len(exporter.transport.attempts) < 3:  # type: ignore[attr-defined]
            exporter.record(make_event(7))

    transport = ScriptedTransport(RETRY, on_send=from_sender_thread)
    exporter = new(exporters, transport)
    holder.append(exporter)

    class Recording(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            exporter.record(make_event(8))

    handler = Recording()
    logging.getLogger("cmdrdata_autopatch").addHandler(handler)
    try:
        exporter.record(make_event(1))
        exporter.record(object())  # type: ignore[arg-type]  # logs an internal error -> handler records
        finished = threading.Event()
        result: list[tuple[int, int]] = []
        thread = threading.Thread(target=lambda: (result.append(exporter.flush(10)), finished.set()))
        thread.start()
        assert finished.wait(15), "flush deadlocked"
    finally:
        logging.getLogger("cmdrdata_autopatch").removeHandler(handler)
    exporter.flush(5)
    assert_invariant(exporter.stats())


def test_auth_failure_pauses_and_keeps_events(
    exporters: list[BackgroundExporter], caplog: pytest.LogCaptureFixture
) -> None:
    auth = SendResult(Outcome.AUTH, status=401, reason="http_401", detail="HTTP 401")
    transport = ScriptedTransport(auth, auth, auth)
    exporter = new(exporters, transport, auth_pause=0.1)
    with caplog.at_level(logging.WARNING, logger="cmdrdata_autopatch"):
        for i in range(10):
            exporter.record(make_event(i))
        assert exporter.flush(10) == (10, 0)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "API key" in errors[0].getMessage()
    assert "tk-" not in caplog.text
    assert exporter.stats()["dropped"] == {}


def test_build_exporter_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made: list[Any] = []
    try:
        http = build_exporter(load_settings({"CMDRDATA_API_KEY": "tk-abcdef123456"}))
        made.append(http)
        assert isinstance(http, BackgroundExporter) and isinstance(http.transport, HttpTransport)
        assert http.spool is not None
        assert http.spool.directory.startswith(str(tmp_path / "cache" / "cmdrdata-autopatch" / "spool"))
        assert "abcdef" not in http.spool.directory

        custom = build_exporter(
            load_settings({"CMDRDATA_API_KEY": "tk-abcdef123456", "CMDRDATA_SPOOL_DIR": str(tmp_path / "s")})
        )
        made.append(custom)
        assert custom.spool is not None and custom.spool.directory.startswith(str(tmp_path / "s"))
        off = build_exporter(
            load_settings({"CMDRDATA_API_KEY": "tk-abcdef123456", "CMDRDATA_SPOOL_DIR": "off"})
        )
        made.append(off)
        assert off.spool is None

        local = build_exporter(load_settings({"CMDRDATA_JSONL_PATH": str(tmp_path / "u.jsonl")}))
        made.append(local)
        assert isinstance(local.transport, JsonlTransport) and local.spool is None
        assert local.notice is not None and "CMDRDATA_API_KEY" in local.notice

        console = build_exporter(load_settings({"CMDRDATA_EXPORTER": "console"}))
        made.append(console)
        assert isinstance(console.transport, ConsoleTransport)
        assert isinstance(build_exporter(load_settings({"CMDRDATA_EXPORTER": "memory"})), MemoryExporter)
        assert isinstance(build_exporter(load_settings({"CMDRDATA_EXPORTER": "none"})), NullExporter)

        tuned = build_exporter(
            load_settings(
                {"CMDRDATA_EXPORTER": "console", "CMDRDATA_QUEUE_SIZE": "7", "CMDRDATA_EXIT_TIMEOUT": "0.5"}
            )
        )
        made.append(tuned)
        assert tuned.queue_size == 7 and tuned.exit_timeout == 0.5
    finally:
        for exporter in made:
            exporter.shutdown(0.1)
    assert not (tmp_path / "cache").exists()  # nothing touches the disk before there is something to spool


def test_local_mode_says_so_once_and_summarizes_at_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exporter = build_exporter(
        load_settings({"CMDRDATA_JSONL_PATH": str(tmp_path / "u.jsonl"), "CMDRDATA_FLUSH_INTERVAL": "0.05"})
    )
    for i in range(3):
        exporter.record(make_event(i, customer=f"c{i % 2}"))
    exporter.flush(5)
    exporter.exit_drain()
    err = capsys.readouterr().err
    assert err.count("writing OpenAI usage events locally") == 1
    assert "3 OpenAI call(s)" in err and "2 customer(s)" in err and str(tmp_path / "u.jsonl") in err
    assert len((tmp_path / "u.jsonl").read_bytes().splitlines()) == 3
    assert exporter.record(make_event()) is False  # closed after exit
    assert_invariant(exporter.stats())


def test_flush_on_an_unused_exporter_is_instant(exporters: list[BackgroundExporter]) -> None:
    exporter = new(exporters, MemoryTransport())
    started = time.monotonic()
    assert exporter.flush(5) == (0, 0)
    assert exporter.shutdown(5) == (0, 0)
    assert time.monotonic() - started < 1.0
    assert os.getpid() == exporter.pid
