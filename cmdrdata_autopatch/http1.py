"""One HTTP/1.1 exchange on a kept-alive socket: write a prebuilt request, read the answer's status.

Why not `http.client.HTTPResponse`: it parses every header with the `email` package (a feed parser, a
`Message`, a content-type lookup), which was ~70% of the CPU of one POST to the events API, and that CPU is
taken from the application through the GIL. The exporter needs four facts from an answer: the status, whether
the connection stays open, where the body ends (to reuse the connection), and `Retry-After`. This reader
gets exactly those, correctly:

- the status line (`HTTP/1.x NNN reason`); interim 1xx answers (`100 Continue`, `103 Early Hints`) are
  skipped; anything else that is not HTTP/1.x is a protocol error (the connection is closed);
- the end of the body: `Transfer-Encoding: chunked` (chunk sizes, extensions and trailers), else
  `Content-Length`, else none for 1xx/204/304, else "read until the server closes";
- keep-alive: `Connection: close`, HTTP/1.0 without `Connection: keep-alive`, or a body delimited by the
  close end the connection's use; so does any byte received past the end of the answer;
- `Retry-After`, verbatim (`transports.parse_retry_after` reads it).

The body itself is read and discarded (the events API's answer carries nothing the exporter needs); a body
larger than `MAX_BODY` is not read at all: the connection is closed instead.
"""

from __future__ import annotations

import socket
from http.client import HTTPException, RemoteDisconnected
from typing import Optional

MAX_HEAD = 64 * 1024  # status line + headers
MAX_BODY = 1024 * 1024  # read and discard up to this much to keep the connection; beyond, close it
_RECV = 65536
_NO_BODY = frozenset({204, 304})


class ProtocolError(HTTPException):
    """The server's answer is not valid HTTP/1.1 (the connection is closed, the event retried)."""


class Answer:
    """What the exporter needs from one HTTP answer."""

    __slots__ = ("retry_after", "status", "will_close")

    def __init__(self, status: int, retry_after: Optional[str], will_close: bool) -> None:
        self.status = status
        self.retry_after = retry_after
        self.will_close = will_close


def exchange(sock: socket.socket, request: bytes, timeout: float) -> Answer:
    """Send `request` and read one answer. Raises `RemoteDisconnected` when the server closed the
    connection before answering (a stale keep-alive connection), `OSError` on network errors and
    timeouts, `ProtocolError` on a malformed answer."""
    if sock.gettimeout() != timeout:  # settimeout() is an ioctl that releases the GIL: only on a change
        sock.settimeout(timeout)
    sock.sendall(request)
    data = sock.recv(_RECV)
    if not data:
        raise RemoteDisconnected("the server closed the connection without answering")
    reader = _Reader(sock, data)
    while True:
        status, version, headers = _read_head(reader)
        if 100 <= status < 200 and status != 101:
            continue  # an interim answer: the real one follows
        break
    connection = headers.get(b"connection", b"").lower()
    will_close = b"close" in connection or (version == b"HTTP/1.0" and b"keep-alive" not in connection)
    if not _read_body(reader, status, headers):
        will_close = True
    if reader.buffered():  # bytes past the end of the answer: the stream cannot be trusted any more
        will_close = True
    retry_after = headers.get(b"retry-after")
    return Answer(status, None if retry_after is None else retry_after.decode("latin-1"), will_close)


def _read_head(reader: _Reader) -> tuple[int, bytes, dict[bytes, bytes]]:
    head = reader.until_blank_line()
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0][:40]!r}")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name[:1] in b" \t":
            continue  # a folded continuation or junk line: none of the headers we read is folded
        key = name.strip().lower()
        value = value.strip()
        if key in headers and key in (b"content-length", b"transfer-encoding"):
            if key == b"content-length" and headers[key] != value:
                raise ProtocolError("conflicting Content-Length headers")
            value = headers[key] + b"," + value if key == b"transfer-encoding" else value
        headers[key] = value
    return int(parts[1]), parts[0], headers


def _read_body(reader: _Reader, status: int, headers: dict[bytes, bytes]) -> bool:
    """Consume the body. False when the connection cannot carry another request afterwards."""
    if status in _NO_BODY or 100 <= status < 200:
        return True
    encoding = headers.get(b"transfer-encoding")
    if encoding is not None:
        if encoding.lower().rsplit(b",", 1)[-1].strip() != b"chunked":
            reader.until_eof()  # a final coding other than chunked: delimited by the close
            return False
        return _read_chunked(reader)
    length = headers.get(b"content-length")
    if length is None:
        reader.until_eof()
        return False
    try:
        n = int(length)
    except ValueError:
        raise ProtocolError("bad Content-Length") from None
    if n < 0:
        raise ProtocolError("bad Content-Length")
    if n > MAX_BODY:
        return False  # not worth reading: close the connection instead
    reader.exact(n)
    return True


def _read_chunked(reader: _Reader) -> bool:
    total = 0
    while True:
        line = reader.line()
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError("bad chunk size") from None
        if size < 0:
            raise ProtocolError("bad chunk size")
        if size == 0:
            while reader.line():  # trailers, up to the blank line
                pass
            return True
        total += size
        if total > MAX_BODY:
            return False
        reader.exact(size)
        if reader.exact(2) != b"\r\n":
            raise ProtocolError("bad chunk end")


class _Reader:
    """A byte buffer over a socket: lines, exact lengths, or everything up to the close."""

    __slots__ = ("data", "pos", "sock")

    def __init__(self, sock: socket.socket, data: bytes) -> None:
        self.sock = sock
        self.data = data
        self.pos = 0

    def buffered(self) -> bool:
        return self.pos < len(self.data)

    def _more(self) -> None:
        chunk = self.sock.recv(_RECV)
        if not chunk:
            raise ProtocolError("the server closed the connection mid-answer")
        self.data = self.data[self.pos :] + chunk
        self.pos = 0

    def until_blank_line(self) -> bytes:
        while True:
            end = self.data.find(b"\r\n\r\n", self.pos)
            if end >= 0:
                head = self.data[self.pos : end]
                self.pos = end + 4
                return head
            if len(self.data) - self.pos > MAX_HEAD:
                raise ProtocolError("answer head too long")
            self._more()

    def line(self) -> bytes:
        while True:
            end = self.data.find(b"\r\n", self.pos)
            if end >= 0:
                line = self.data[self.pos : end]
                self.pos = end + 2
                return line
            if len(self.data) - self.pos > MAX_HEAD:
                raise ProtocolError("line too long")
            self._more()

    def exact(self, n: int) -> bytes:
        while len(self.data) - self.pos < n:
            self._more()
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def until_eof(self) -> None:
        """Discard everything up to the server's close (at most `MAX_BODY` bytes: then stop reading)."""
        seen = len(self.data) - self.pos
        self.data, self.pos = b"", 0
        while seen <= MAX_BODY:
            chunk = self.sock.recv(_RECV)
            if not chunk:
                return
            seen += len(chunk)
