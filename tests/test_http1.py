"""The lean HTTP/1.1 answer reader (`http1.py`) behind `HttpTransport`, against a raw loopback server that
answers with scripted bytes: framings, keep-alive rules, interim answers, Retry-After, broken answers."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Optional, Union

import pytest

from cmdrdata_autopatch.httptransport import HttpTransport
from cmdrdata_autopatch.transports import Outcome

Pieces = Union[bytes, list[bytes]]


class RawServer:
    """Reads each request (head + Content-Length body) and answers with the next scripted bytes."""

    def __init__(self, tls: Optional[ssl.SSLContext] = None) -> None:
        self.tls = tls
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.script: deque[tuple[Pieces, bool]] = deque()
        self.connections = 0
        self.requests: list[bytes] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/api/events"

    def answer(self, reply: Pieces, close: bool = False) -> None:
        self.script.append((reply, close))

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket, data: bytes) -> Optional[bytes]:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += conn.recv(65536)
        with self.lock:
            self.requests.append(head)
        return rest[length:]

    def _serve(self, conn: socket.socket) -> None:
        leftover = b""
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                return
        with conn:
            while True:
                got = self._read_request(conn, leftover)
                if got is None:
                    return
                leftover = got
                reply, close = self.script.popleft() if self.script else (OK, False)
                for piece in [reply] if isinstance(reply, bytes) else reply:
                    conn.sendall(piece)
                    time.sleep(0.01)
                if close:
                    return

    def close(self) -> None:
        self.sock.close()


OK = b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: application/json\r\n\r\n{"ok":true}'


@pytest.fixture()
def server() -> Iterator[RawServer]:
    srv = RawServer()
    yield srv
    srv.close()


def transport(server: RawServer) -> HttpTransport:
    return HttpTransport("tk-test", server.url, read_timeout=5.0, http2=False)


def test_content_length_answers_reuse_one_connection(server: RawServer) -> None:
    t = transport(server)
    for i in range(3):
        assert t.send(f"id-{i}", b"{}").outcome is Outcome.DELIVERED
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST /api/events HTTP/1.1\r\n")
    assert b"Idempotency-Key: id-0" in server.requests[0]
    t.close()


def test_chunked_body_with_extensions_and_trailers_keeps_the_connection(server: RawServer) -> None:
    chunked = (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
    )
    server.answer([chunked[:40], chunked[40:75], chunked[75:]])  # split across reads
    t = transport(server)
    result = t.send("id-1", b"{}")
    assert (result.outcome, result.status) == (Outcome.DELIVERED, 201)
    assert t.send("id-2", b"{}").outcome is Outcome.DELIVERED
    assert server.connections == 1


def test_interim_100_continue_is_skipped(server: RawServer) -> None:
    server.answer(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    t = transport(server)
    assert t.send("id-1", b"{}").status == 200
    assert t.send("id-2", b"{}").status == 200
    assert server.connections == 1


def test_connection_close_and_http10_open_a_new_connection(server: RawServer) -> None:
    server.answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", close=True)
    server.answer(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", close=True)
    server.answer(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
    t = transport(server)
    for i in range(4):
        assert t.send(f"id-{i}", b"{}").outcome is Outcome.DELIVERED
    assert server.connections == 3  # closed twice, then the HTTP/1.0 keep-alive one is reused


def test_body_delimited_by_the_close(server: RawServer) -> None:
    server.answer(b"HTTP/1.1 202 Accepted\r\n\r\nqueued", close=True)
    t = transport(server)
    assert t.send("id-1", b"{}").status == 202
    assert t.send("id-2", b"{}").status == 200
    assert server.connections == 2


def test_retry_after_and_statuses_are_classified(server: RawServer) -> None:
    server.answer(b"HTTP/1.1 429 Too Many\r\nRETRY-after:  7 \r\nContent-Length: 2\r\n\r\nno")
    server.answer(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
    server.answer(b"HTTP/1.1 401 No\r\nContent-Length: 0\r\n\r\n")
    server.answer(b"HTTP/1.1 422 Bad\r\nContent-Length: 0\r\n\r\n")
    server.answer(b"HTTP/1.1 204 No Content\r\n\r\n")
    t = transport(server)
    first = t.send("id-1", b"{}")
    assert (first.outcome, first.status, first.retry_after) == (Outcome.RETRY, 429, 7.0)
    assert t.send("id-2", b"{}").outcome is Outcome.RETRY
    assert t.send("id-3", b"{}").outcome is Outcome.AUTH
    rejected = t.send("id-4", b"{}")
    assert (rejected.outcome, rejected.reason) == (Outcome.REJECTED, "rejected_422")
    assert t.send("id-5", b"{}").status == 204
    assert server.connections == 1


def test_a_stale_kept_alive_connection_is_retried_once_on_a_new_one(server: RawServer) -> None:
    server.answer(OK, close=True)  # the server closes the idle connection right after answering
    t = transport(server)
    assert t.send("id-1", b"{}").outcome is Outcome.DELIVERED
    time.sleep(0.05)
    assert t.send("id-2", b"{}").outcome is Outcome.DELIVERED
    assert server.connections == 2


@pytest.mark.parametrize(
    "reply",
    [
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort",
    ],
)
def test_a_broken_answer_is_a_retry_and_the_connection_is_dropped(server: RawServer, reply: bytes) -> None:
    server.answer(reply, close=True)
    t = HttpTransport("tk-test", server.url, read_timeout=2.0, http2=False)
    result = t.send("id-1", b"{}")
    assert (result.outcome, result.reason) == (Outcome.RETRY, "network")
    assert "tk-test" not in result.detail
    assert t.send("id-2", b"{}").outcome is Outcome.DELIVERED
    assert server.connections == 2


def test_bytes_past_the_answer_end_the_connection(server: RawServer) -> None:
    server.answer(OK + b"HTTP/1.1 200 OK\r\n")
    t = transport(server)
    assert t.send("id-1", b"{}").outcome is Outcome.DELIVERED
    assert t.send("id-2", b"{}").outcome is Outcome.DELIVERED
    assert server.connections == 2


def test_a_silent_server_times_out_as_a_network_retry(server: RawServer) -> None:
    server.answer([b"HTTP/1.1 200 OK\r\n"], close=False)  # never finishes the head
    t = HttpTransport("tk-test", server.url, read_timeout=0.3, http2=False)
    started = time.monotonic()
    result = t.send("id-1", b"{}")
    assert (result.outcome, result.reason) == (Outcome.RETRY, "network")
    assert time.monotonic() - started < 3.0


def test_https_over_http11_reads_answers_through_tls(tmp_path: Path) -> None:
    """The reader on a TLS socket (the production endpoint is https): framings and keep-alive alike."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs openssl to make a self-signed certificate")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    command = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert]
    command += ["-days", "1", "-subj", "/CN=127.0.0.1"]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = RawServer(tls=context)
    try:
        server.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
        server.answer(b"HTTP/1.1 429 Slow\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n")
        t = HttpTransport("tk-test", server.url, read_timeout=5.0, verify=False, http2=False)
        assert t.send("id-1", b"{}").outcome is Outcome.DELIVERED
        slow = t.send("id-2", b"{}")
        assert (slow.outcome, slow.retry_after) == (Outcome.RETRY, 3.0)
        assert t.send("id-3", b"{}").outcome is Outcome.DELIVERED
        assert server.connections == 1
        t.close()
    finally:
        server.close()
