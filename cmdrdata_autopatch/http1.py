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
import time
from collections.abc import Sequence
from http.client import HTTPException, RemoteDisconnected
from typing import Optional

MAX_HEAD = 64 * 1024  # status line + headers
MAX_BODY = 1024 * 1024  # read and discard up to this much to keep the connection; beyond, close it
_RECV = 65536
_NO_BODY = frozenset({204, 304})
GATHER_MAX = 0.002  # seconds: the longest pause to let a pipeline's answers gather (see _gather)
GATHER_MIN = 0.0001  # below this a pause costs more than the reads it saves


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
    reader = _start(sock, request, timeout)
    answer = _read_answer(reader)
    if reader.buffered():  # bytes past the end of the answer: the stream cannot be trusted any more
        answer.will_close = True
    return answer


class Stalled(OSError):
    """A pipeline's next answer did not come within its stall bound: the connection is given up."""


class Exchanged:
    """What one pipelined exchange got: the answers in request order, the error that stopped the reading
    (None when every request was answered), and its timings (seconds; None when not measured)."""

    __slots__ = ("answers", "error", "first", "gap")

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.error: Optional[BaseException] = None
        self.first: Optional[float] = None  # from the write to the first answer
        self.gap: Optional[float] = None  # between answers, on average


def exchange_many(
    sock: socket.socket,
    requests: Sequence[bytes],
    timeout: float,
    stall_first: Optional[float] = None,
    stall_next: Optional[float] = None,
) -> Exchanged:
    """Pipeline `requests` (RFC 9112 section 9.3): write them all at once, read the answers in order.

    Why: each exchange costs the sender thread a few GIL acquisitions, and with a CPU-bound application
    every acquisition waits for the application to let go; one write and one read for a burst of events
    pays those waits once per burst instead of once per event.

    Fewer answers than requests without an error means the server ended the connection's use
    (`Connection: close`, a close-delimited body) after the last one: it processes no later request of this
    connection (RFC 9112 section 9.6), so those are safe to send again elsewhere. `stall_first` and
    `stall_next` bound the wait for the first answer and for each next one (a request that hangs would
    otherwise hold every request behind it for the whole read timeout): past them the error is `Stalled`.
    """
    out = Exchanged()
    answers = out.answers
    try:
        sent = time.monotonic()
        reader = _start(sock, b"".join(requests), timeout, stall_first)
        out.first = time.monotonic() - sent
        if stall_next is not None and stall_next < timeout:
            sock.settimeout(stall_next)  # once per burst: the reads below wait at most this long each
        while True:
            answer = _read_answer(reader)
            answers.append(answer)
            if answer.will_close or len(answers) == len(requests):
                break
            if not reader.buffered():
                _gather(sent, len(answers), len(requests) - len(answers))
                reader.more_or_none()
        if len(answers) > 1:
            out.gap = (time.monotonic() - sent - out.first) / (len(answers) - 1)
        if reader.buffered():  # bytes past the last expected answer: the stream cannot be trusted
            answer.will_close = True
    except (socket.timeout, TimeoutError) as exc:  # two classes before Python 3.10, one since
        bound = stall_first if out.first is None else stall_next
        stalled = bound is not None and bound < timeout
        out.error = Stalled(f"no answer within {bound:.3f} s") if stalled and bound is not None else exc
    except (OSError, HTTPException) as exc:
        out.error = exc
    return out


def _gather(sent: float, answered: int, left: int) -> None:
    """Let the rest of a pipeline's answers arrive before reading again.

    A server that answers a connection's requests one after another sends them apart (~80 µs each from a
    Python server on loopback); a `recv` per answer would wake this thread, and make it wait for the GIL,
    once per event, the cost pipelining exists to avoid. Sleeping for the time the answers so far took per
    answer, times those left (at most `GATHER_MAX`), lets one `recv` take most of them. It never waits for
    bytes that may not come: it is a bounded sleep, then an ordinary blocking read.
    """
    wait = min(GATHER_MAX, (time.monotonic() - sent) / answered * left)
    if wait >= GATHER_MIN:
        time.sleep(wait)


def _start(sock: socket.socket, request: bytes, timeout: float, first: Optional[float] = None) -> _Reader:
    if sock.gettimeout() != timeout:  # settimeout() is an ioctl that releases the GIL: only on a change
        sock.settimeout(timeout)
    sock.sendall(request)
    if first is not None and first < timeout:
        sock.settimeout(first)
    data = sock.recv(_RECV)
    if not data:
        raise RemoteDisconnected("the server closed the connection without answering")
    return _Reader(sock, data)


def _read_answer(reader: _Reader) -> Answer:
    while True:
        status, version, headers = _read_head(reader)
        if 100 <= status < 200 and status != 101:
            continue  # an interim answer: the real one follows
        break
    connection = headers.get(b"connection", b"").lower()
    will_close = b"close" in connection or (version == b"HTTP/1.0" and b"keep-alive" not in connection)
    will_close = will_close or status == 101  # another protocol follows: nothing more to read as HTTP/1.1
    if not _read_body(reader, status, headers):
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

    def more_or_none(self) -> None:
        """Wait for the next answer of a pipeline; the server closing first is `RemoteDisconnected`."""
        chunk = self.sock.recv(_RECV)
        if not chunk:
            raise RemoteDisconnected("the server closed the connection before the next answer")
        self.data, self.pos = chunk, 0

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
