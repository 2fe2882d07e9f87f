"""The OTLP exporter when the Collector fails: a 500, a hang, a refused connection, a full queue. Each is
counted in stats(), the application's calls are unaffected, and nothing waits past its deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otlp extra is not installed")
pytest.importorskip("opentelemetry.proto", reason="opentelemetry-proto is not installed")

import cmdrdata_autopatch as cmdrdata
from cmdrdata_autopatch.events import UsageEvent
from cmdrdata_autopatch.otlp import OtlpExporter

from .fake_openai import FakeOpenAI
from .otlp_receiver import OtlpReceiver, closed_port, env_for
from .support import assert_invariant, eventually


def _patched(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **settings: Any) -> Any:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cmdrdata.patch(exporter="otlp", **settings)
    return cmdrdata.get_exporter()


@pytest.fixture(autouse=True)
def _unpatch() -> Iterator[None]:
    yield
    cmdrdata.unpatch()


def _calls(fake: FakeOpenAI, n: int) -> None:
    client = fake.client()
    for _ in range(n):
        reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content  # the application sees the answer as always


def test_http_500_is_counted_and_the_app_is_unaffected(
    monkeypatch: pytest.MonkeyPatch, fake: FakeOpenAI
) -> None:
    with OtlpReceiver(status=500) as receiver:
        exporter = _patched(monkeypatch, env_for(receiver))
        assert isinstance(exporter, OtlpExporter)
        _calls(fake, 3)
        cmdrdata.flush(10)
        stats = cmdrdata.stats()
        assert stats["recorded"] == 3 and stats["exported"] == 0
        assert stats["failed"] == 3 and stats["dropped"] == {"export_failed": 3}
        assert stats["export_errors"] >= 1 and stats["last_error"]
        assert_invariant(stats)
        assert receiver.log_records() == []  # the 500 answered before decoding: nothing stored


def test_connection_refused_is_counted(monkeypatch: pytest.MonkeyPatch, fake: FakeOpenAI) -> None:
    _patched(monkeypatch, env_for(None, port=closed_port(), OTEL_EXPORTER_OTLP_TIMEOUT="1"))
    _calls(fake, 2)
    cmdrdata.flush(15)
    stats = cmdrdata.stats()
    assert stats["failed"] == 2 and stats["dropped"] == {"export_failed": 2} and stats["exported"] == 0
    assert_invariant(stats)


def test_a_hanging_collector_never_blocks_the_app(monkeypatch: pytest.MonkeyPatch, fake: FakeOpenAI) -> None:
    with OtlpReceiver(hang=True) as receiver:
        _patched(monkeypatch, env_for(receiver, OTEL_EXPORTER_OTLP_TIMEOUT="1"), flush_interval=0.01)
        _calls(fake, 1)
        assert eventually(lambda: cmdrdata.stats()["in_flight"] == 1)  # the export is stuck in the hang
        _calls(fake, 5)  # ...and the application's calls go on meanwhile
        started = time.monotonic()
        done, pending = cmdrdata.flush(0.2)
        assert pending > 0 and done == 0
        assert time.monotonic() - started < 5  # bounded by its timeout, not by the hang (60 s)
        # the SDK gives up on the hung request within OTEL_EXPORTER_OTLP_TIMEOUT: counted, never silent
        assert eventually(lambda: cmdrdata.stats()["failed"] >= 1, timeout=30)
        receiver.release()
        cmdrdata.flush(30)
        stats = cmdrdata.stats()
        assert stats["recorded"] == 6 and stats["queued"] == 0 and stats["in_flight"] == 0
        assert stats["exported"] + stats["failed"] == 6
        assert_invariant(stats)


def test_a_full_queue_drops_the_newest_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    with OtlpReceiver(hang=True) as receiver:
        for name, value in env_for(receiver, OTEL_EXPORTER_OTLP_TIMEOUT="5").items():
            monkeypatch.setenv(name, value)
        exporter = OtlpExporter(queue_size=4, batch_size=2, flush_interval=0.0, register_exit=False)
        results = [exporter.record(UsageEvent("embeddings", time.time(), 0.01)) for _ in range(10)]
        assert results[:4] == [True] * 4 and results.count(False) == 6
        stats = exporter.stats()
        assert stats["dropped"] == {"queue_full": 6} and stats["recorded"] == 10
        assert_invariant(stats)
        receiver.release()
        exporter.flush(20)
        stats = exporter.stats()
        assert stats["exported"] + stats["failed"] == 4
        assert_invariant(stats)


def test_record_never_raises_on_a_broken_event(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def to_wire(self) -> dict[str, Any]:
            raise RuntimeError("broken event")

    with OtlpReceiver() as receiver:
        for name, value in env_for(receiver).items():
            monkeypatch.setenv(name, value)
        exporter = OtlpExporter(register_exit=False)
        assert exporter.record(Broken()) is True
        assert exporter.record(UsageEvent("embeddings", time.time(), 0.01)) is True
        exporter.flush(10)
        stats = exporter.stats()
        assert stats["dropped"] == {"invalid": 1} and stats["exported"] == 1
        assert_invariant(stats)


def test_records_from_many_threads_are_all_accounted(monkeypatch: pytest.MonkeyPatch) -> None:
    with OtlpReceiver() as receiver:
        for name, value in env_for(receiver).items():
            monkeypatch.setenv(name, value)
        exporter = OtlpExporter(register_exit=False, batch_size=64)

        def work() -> None:
            for _ in range(100):
                exporter.record(UsageEvent("embeddings", time.time(), 0.01))

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        exporter.flush(20)
        assert exporter.stats()["exported"] == 400
        ids = [r["attributes"]["cmdrdata.event.id"] for r in receiver.log_records()]
        assert len(ids) == len(set(ids)) == 400
