"""HTTP/1.1 pipelining (`HttpTransport.send_many`, `http1.exchange_many`) and the senders' bursts.

Against the scripted raw server of test_http1 (it reads requests one after another from the same connection,
so pipelined bytes queue up exactly as at a real server), then through the whole exporter against the
loopback CmdrData: every event delivered exactly once, in bursts when a backlog builds up."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Optional

import pytest

from cmdrdata_autopatch.exporter import BackgroundExporter
from cmdrdata_autopatch.httptransport import PIPELINE_STRIKES, HttpTransport
from cmdrdata_autopatch.transports import Outcome, SendResult

from .cmdrdata_server import FakeCmdrData
from .support import assert_invariant, make_event
from .test_http1 import OK, RawServer

BATCH = [(f"id-{i}", b'{"n":%d}' % i) for i in range(5)]


class DroppingServer(RawServer):
    """A server that mishandles pipelines: it answers the first request it reads and throws away whatever
    else arrived with it (then waits for a request that never comes)."""

    def _read_request(self, conn: socket.socket, data: bytes) -> Optional[bytes]:
        rest = super()._read_request(conn, data)
        return None if rest is None else b""


class HangingServer(RawServer):
    """Answers at once, except the request with `hang_key`: that connection then stays silent."""

    def __init__(self, hang_key: str) -> None:
        super().__init__()
        self.hang_key = hang_key.encode()
        self.release = threading.Event()

    def _read_request(self, conn: socket.socket, data: bytes) -> Optional[bytes]:
        rest = super()._read_request(conn, data)
        if rest is not None and b"Idempotency-Key: " + self.hang_key in self.requests[-1]:
            self.release.wait(10)
            return None
        return rest


@pytest.fixture()
def server() -> Iterator[RawServer]:
    srv = RawServer()
    yield srv
    srv.close()


def keys(server: RawServer) -> list[str]:
    out = []
    for head in server.requests:
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"idempotency-key:"):
                out.append(line.split(b":", 1)[1].strip().decode())
    return out


def test_a_burst_goes_out_in_one_write_and_each_answer_is_its_own_result(server: RawServer) -> None:
    server.answer(OK)
    server.answer(b"HTTP/1.1 429 Slow down\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n")
    server.answer(b"HTTP/1.1 422 Bad\r\nContent-Length: 4\r\n\r\nnope")
    server.answer(b"HTTP/1.1 409 Duplicate\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    server.answer(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    t = HttpTransport("tk-test", server.url, read_timeout=5.0, http2=False)
    results = t.send_many(BATCH)
    assert [(r.outcome, r.status) for r in results] == [
        (Outcome.DELIVERED, 200),
        (Outcome.RETRY, 429),
        (Outcome.REJECTED, 422),
        (Outcome.DELIVERED, 409),
        (Outcome.DELIVERED, 200),
    ]
    assert results[1].retry_after == 3.0
    assert keys(server) == [eid for eid, _ in BATCH]  # in order, each once
    assert server.connections == 1
    assert t.send_many(BATCH[:2])[1].outcome is Outcome.DELIVERED  # the connection was kept
    assert server.connections == 1 and t.pipelining
    t.close()


def test_a_connection_closed_part_way_sends_the_rest_on_a_new_one_once(server: RawServer) -> None:
    server.answer(OK)
    server.answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", close=True)
    t = HttpTransport("tk-test", server.url, read_timeout=5.0, http2=False)
    results = t.send_many(BATCH)
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 5
    assert server.connections == 2
    # the closing server processed nothing after its `Connection: close` answer: no event reached it twice
    assert sorted(keys(server)) == sorted(eid for eid, _ in BATCH)
    assert t.pipelining  # a keep-alive limit is not a broken pipeline


def test_a_connection_lost_part_way_keeps_the_answered_and_retries_the_rest(server: RawServer) -> None:
    server.answer(OK)
    server.answer(OK, close=True)  # then the connection drops without a word
    t = HttpTransport("tk-test", server.url, read_timeout=5.0, http2=False)
    results = t.send_many(BATCH)
    assert [r.outcome for r in results[:2]] == [Outcome.DELIVERED] * 2
    assert all((r.outcome, r.reason) == (Outcome.RETRY, "network") for r in results[2:])
    assert all("tk-test" not in r.detail for r in results)


def test_a_server_that_drops_pipelined_requests_is_sent_one_at_a_time_after_a_few_tries() -> None:
    server = DroppingServer()
    try:
        t = HttpTransport("tk-test", server.url, read_timeout=0.3, http2=False)
        for _ in range(PIPELINE_STRIKES):
            results = t.send_many(BATCH[:3])
            assert results[0].outcome is Outcome.DELIVERED
            assert [r.outcome for r in results[1:]] == [Outcome.RETRY, Outcome.RETRY]
        assert not t.pipelining
        assert [r.outcome for r in t.send_many(BATCH)] == [Outcome.DELIVERED] * 5  # now one per exchange
    finally:
        server.close()


def test_an_unsafe_id_is_rejected_alone_and_the_rest_of_the_burst_goes_out(server: RawServer) -> None:
    t = HttpTransport("tk-test", server.url, read_timeout=5.0, http2=False)
    results = t.send_many([("id-1", b"{}"), ("bad\r\nX-Evil: 1", b"{}"), ("id-3", b"{}")])
    assert [r.outcome for r in results] == [Outcome.DELIVERED, Outcome.REJECTED, Outcome.DELIVERED]
    assert results[1].reason == "invalid_event_id"
    assert keys(server) == ["id-1", "id-3"]


class CountingTransport(HttpTransport):
    """The real transport, counting the size of each burst it was handed."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.bursts: list[int] = []

    def send_many(
        self, batch: Sequence[tuple[str, bytes]], timeout: Optional[float] = None
    ) -> list[SendResult]:
        self.bursts.append(len(batch))
        return super().send_many(batch, timeout)


def test_the_senders_pipeline_a_backlog_and_deliver_every_event_once() -> None:
    with FakeCmdrData() as server:
        transport = CountingTransport("tk-test", server.url, http2=False)
        exporter = BackgroundExporter(transport, register_exit=False, flush_interval=0.05)
        try:
            for i in range(8):  # measured attempt times first: bursts are sized from them
                exporter.record(make_event(i))
            assert exporter.flush(10)[1] == 0
            events = [make_event(100 + i) for i in range(600)]
            for event in events:
                exporter.record(event)
            assert exporter.flush(30)[1] == 0
            stats = exporter.stats()
        finally:
            exporter.shutdown(1)
        wanted = {event.event_id for event in events}
        assert wanted <= set(server.stored)
        assert all(count == 1 for count in server.stored.values())
        assert max(transport.bursts) > 1  # a backlog went out pipelined
        assert stats["delivered"] == 608
        assert_invariant(stats)


def test_no_pipelining_against_a_far_backend() -> None:
    """At 50 ms per answer a burst would hold its events for depth x 50 ms on a server that answers a
    connection's requests in turn: the senders spread them over connections instead."""
    with FakeCmdrData(latency=0.05) as server:
        transport = CountingTransport("tk-test", server.url, http2=False)
        exporter = BackgroundExporter(transport, register_exit=False, flush_interval=0.05)
        try:
            for i in range(64):
                exporter.record(make_event(i))
            started = time.monotonic()
            assert exporter.flush(30)[1] == 0
            took = time.monotonic() - started
        finally:
            exporter.shutdown(1)
        assert transport.bursts == []  # never more than one event per exchange at 50 ms
        assert len(Counter(server.stored)) == 64
        assert took < 2.0  # 64 events over up to 16 connections, not one after another


def test_a_hanging_request_gives_its_pipeline_up_and_the_rest_go_out_at_once() -> None:
    """Head-of-line blocking: without a stall bound the four events behind the hanging one would wait for
    the whole read timeout (30 s here)."""
    server = HangingServer("id-1")
    try:
        t = HttpTransport("tk-test", server.url, read_timeout=30.0, http2=False)
        assert t.send("id-0", b"{}").outcome is Outcome.DELIVERED  # a measured answer time first
        started = time.monotonic()
        results = t.send_many(BATCH[1:])
        took = time.monotonic() - started
        assert (results[0].outcome, results[0].reason) == (Outcome.RETRY, "network")
        assert "no answer within" in results[0].detail
        assert [r.outcome for r in results[1:]] == [Outcome.DELIVERED] * 3
        assert took < 5.0
        assert t.pipelining  # a slow request is not a broken pipeline
    finally:
        server.release.set()
        server.close()
