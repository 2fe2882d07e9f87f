"""Transports: the wire contract (DESIGN.md section 4), response classification, local outputs."""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from cmdrdata_autopatch import __version__
from cmdrdata_autopatch.events import UsageEvent
from cmdrdata_autopatch.transports import (
    ConsoleTransport,
    HttpTransport,
    JsonlTransport,
    MemoryTransport,
    Outcome,
    classify,
    format_console_line,
    parse_retry_after,
)

from .cmdrdata_server import FakeCmdrData, Reply

KEY = "tk-secret-test-key-123456"


def make_event(customer: str = "c1", tokens: int = 5) -> UsageEvent:
    event = UsageEvent("chat.completions", time.time(), 0.01, customer_id=customer, model="gpt-4o-mini")
    event.input_tokens = tokens
    event.output_tokens = 2
    event.total_tokens = tokens + 2
    return event


@pytest.fixture
def server() -> Iterator[FakeCmdrData]:
    with FakeCmdrData() as fake:
        yield fake


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (201, Outcome.DELIVERED),
        (202, Outcome.DELIVERED),
        (409, Outcome.DELIVERED),
        (408, Outcome.RETRY),
        (425, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (503, Outcome.RETRY),
        (504, Outcome.RETRY),
        (401, Outcome.AUTH),
        (403, Outcome.AUTH),
        (400, Outcome.REJECTED),
        (404, Outcome.REJECTED),
        (413, Outcome.REJECTED),
        (422, Outcome.REJECTED),
        (301, Outcome.RETRY),
    ],
)
def test_classify(status: int, outcome: Outcome) -> None:
    assert classify(status) is outcome


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = time.time()
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1.5)


def test_http_wire_contract(server: FakeCmdrData) -> None:
    """Headers and body exactly as DESIGN.md section 4 says; the body is `to_json()` byte for byte."""
    event = make_event()
    transport = HttpTransport(KEY, server.url)
    try:
        result = transport.send(event.event_id, event.to_json())
    finally:
        transport.close()
    assert result.outcome is Outcome.DELIVERED and result.status == 200
    (request,) = server.received
    assert request.body == event.to_json()
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["idempotency-key"] == event.event_id
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"cmdrdata-autopatch/{__version__}"


def test_http_keep_alive_reuses_one_connection(server: FakeCmdrData) -> None:
    transport = HttpTransport(KEY, server.url)
    try:
        for _ in range(5):
            event = make_event()
            assert transport.send(event.event_id, event.to_json()).outcome is Outcome.DELIVERED
    finally:
        transport.close()
    assert len(server.received) == 5
    assert len({r.peer_port for r in server.received}) == 1  # one TCP connection for all five


def test_http_results_carry_status_and_retry_after(server: FakeCmdrData) -> None:
    server.script(Reply(429, retry_after="7"), Reply(400), Reply(401), Reply(503))
    transport = HttpTransport(KEY, server.url)
    try:
        results = [transport.send(f"id-{i}", b"{}") for i in range(4)]
    finally:
        transport.close()
    assert [r.outcome for r in results] == [Outcome.RETRY, Outcome.REJECTED, Outcome.AUTH, Outcome.RETRY]
    assert results[0].retry_after == 7.0
    assert results[1].reason == "rejected_400"


def test_http_network_errors_are_retryable_and_never_show_the_key() -> None:
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = HttpTransport(KEY, f"http://127.0.0.1:{port}/api/events", connect_timeout=1.0)
    try:
        result = transport.send("id-1", b"{}")
    finally:
        transport.close()
    assert result.outcome is Outcome.RETRY and result.reason == "network"
    assert KEY not in repr(transport) and KEY not in result.detail and KEY not in repr(result)


def test_http_hanging_backend_times_out_within_the_given_budget(server: FakeCmdrData) -> None:
    server.set_default(Reply(hang=True))
    transport = HttpTransport(KEY, server.url)
    started = time.monotonic()
    try:
        result = transport.send("id-1", b"{}", timeout=0.3)
    finally:
        transport.close()
        server.release()
    assert result.outcome is Outcome.RETRY
    assert time.monotonic() - started < 5.0  # the 10 s read timeout was capped by the budget


def test_jsonl_appends_one_line_per_event_and_summarizes(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "usage.jsonl"  # type: ignore[operator]
    transport = JsonlTransport(path, summarize=True)
    events = [make_event("a", 5), make_event("b", 10), make_event("a", 1)]
    for event in events:
        assert transport.send(event.event_id, event.to_json()).outcome is Outcome.DELIVERED
    lines = path.read_bytes().splitlines()
    assert lines == [event.to_json() for event in events]
    summary = transport.exit_summary()
    assert summary is not None
    assert "3 OpenAI call(s)" in summary and "22 tokens" in summary and "2 customer(s)" in summary
    assert str(path) in summary
    transport.close()
    assert (path.stat().st_mode & 0o777) == 0o600


def test_jsonl_unwritable_path_is_a_retry_not_an_exception(tmp_path: pytest.TempPathFactory) -> None:
    blocker = tmp_path / "file"  # type: ignore[operator]
    blocker.write_text("x")
    transport = JsonlTransport(blocker / "usage.jsonl")
    assert transport.send("id", b"{}").outcome is Outcome.RETRY


def test_console_line_is_readable() -> None:
    stream = io.StringIO()
    event = make_event("acme", 5)
    ConsoleTransport(stream).send(event.event_id, event.to_json())
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert "customer=acme" in line and "tokens=5+2=7" in line and "model=gpt-4o-mini" in line
    assert format_console_line(b"not json").startswith("cmdrdata:")


def test_memory_transport_keeps_bodies() -> None:
    transport = MemoryTransport()
    event = make_event()
    transport.send(event.event_id, event.to_json())
    assert transport.bodies == [event.to_json()]
    assert transport.event_ids == [event.event_id]
    assert transport.wire()[0] == json.loads(event.to_json())


def test_http2_is_chosen_for_https_when_h2_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from cmdrdata_autopatch import httptransport

    monkeypatch.setattr(httptransport, "_h2_installed", lambda: True)
    assert HttpTransport(KEY, "https://api.cmdrdata.ai/api/events").protocol == "h2-capable"
    assert HttpTransport(KEY, "http://127.0.0.1:9/api/events").protocol == "http/1.1"  # no h2c
    monkeypatch.setattr(httptransport, "_h2_installed", lambda: False)
    assert HttpTransport(KEY, "https://api.cmdrdata.ai/api/events").protocol == "http/1.1"


def test_the_http2_capable_path_delivers_and_classifies(server: FakeCmdrData) -> None:
    """Through httpx with `http2=True` (the fake server speaks HTTP/1.1, so ALPN-less fallback is used)."""
    pytest.importorskip("h2")
    server.script(Reply(429, retry_after="3"))
    transport = HttpTransport(KEY, server.url, http2=True)
    try:
        event = make_event()
        first = transport.send(event.event_id, event.to_json())
        second = transport.send(event.event_id, event.to_json())
    finally:
        transport.close()
    assert (first.outcome, first.retry_after) == (Outcome.RETRY, 3.0)
    assert second.outcome is Outcome.DELIVERED
    assert server.received[-1].headers.get("Idempotency-Key") == event.event_id
    assert server.received[-1].headers.get("Authorization") == f"Bearer {KEY}"


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError, match="control characters"):
        HttpTransport("tk-abc\r\nX-Evil: 1", "http://127.0.0.1:9/api/events")
    transport = HttpTransport(KEY, "http://127.0.0.1:9/api/events")
    result = transport.send("id\r\nX-Evil: 1", b"{}")
    assert result.outcome is Outcome.REJECTED and KEY not in result.detail


def test_http2_multiplexes_the_senders_over_few_connections(tmp_path: Path) -> None:
    """Against a TLS server that offers h2 (ALPN): the senders share connections and their streams overlap."""
    pytest.importorskip("h2")
    import shutil
    import subprocess

    from cmdrdata_autopatch.exporter import BackgroundExporter

    from .cmdrdata_server import FakeCmdrDataH2

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs openssl to make a self-signed certificate")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = FakeCmdrDataH2(cert, key, latency=0.05)
    transport = HttpTransport(KEY, server.url, http2=True, verify=False)
    exporter = BackgroundExporter(transport, register_exit=False, flush_interval=0.05)
    try:
        events = [make_event(i) for i in range(64)]
        for event in events:
            exporter.record(event)
        assert exporter.flush(30)[1] == 0
    finally:
        exporter.shutdown(1)
        server.close()
    assert {r.event_id for r in server.received} == {e.event_id for e in events}
    assert server.protocols and set(server.protocols) == {"h2"}  # HTTP/2 negotiated on every connection
    # httpx may open a few connections while the first handshakes (more on a loaded machine, where a retried
    # attempt also takes a new one); what HTTP/2 must show is that connections are shared, not one per POST,
    # and that one connection carried several requests at the same time
    per_connection: dict[int, int] = {}
    for r in server.received:
        per_connection[r.peer_port] = per_connection.get(r.peer_port, 0) + 1
    assert len(per_connection) <= len(events) // 4, per_connection
    assert max(per_connection.values()) >= 8, per_connection
    assert server.max_streams_per_connection > 1  # multiplexed on one connection, not one after another
    assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in server.received)
