"""The disk spool: undelivered event bodies kept in append-only JSON Lines segments, replayed later.

Why: memory is bounded and a process can exit (or be killed) while the backend is down. Events that overflow
the in-memory queue, that waited through a long outage, or that are still pending at exit are written here,
and delivered when the backend recovers or by the next process that starts with the same spool directory.

Layout and guarantees:

- One directory per (endpoint, API key) pair: `<spool_dir>/<16 hex chars of sha256(endpoint, key)>/`, so an
  application using another key never replays (and bills) our events. The hash is not reversible; the key
  itself is never written. Directories are created 0700, segments 0600.
- A segment is `<host>-<pid>-<start ms>-<seq>.jsonl`, one event body (`UsageEvent.to_json()`, which never
  contains a raw newline) per line. Replay sends the stored bytes unchanged, so a replayed event is
  byte-identical to the original attempt and carries the same `event_id`.
- A segment is created under a hidden temporary name, locked (`fcntl.flock`, exclusive), then renamed into
  place: no other process can ever see it unlocked while its writer lives. The writer keeps the lock on every
  segment it owns until that segment is fully acknowledged and deleted. When the process dies the kernel
  releases the locks, which is what makes a segment an *orphan*: another process claims it with a
  non-blocking lock, checks it was not deleted meanwhile, and replays it. So two processes never replay the
  same orphan.
- A segment is deleted only when every line in it was acknowledged (delivered, or rejected for good). After a
  crash the whole segment is replayed; the server's `event_id` dedup absorbs what was already delivered.
- Each append is one `write` followed by `fsync`; if the write fails (full disk, quota, I/O error) the file is
  truncated back, so a batch is either fully on disk or reported as not written. A torn last line (a crash
  mid-write) is skipped and counted when the segment is read.
- Nothing here raises into the caller: an unwritable directory, a full disk or a missing `fcntl` (Windows)
  disables the spool, logs one warning, and reports "not written" so the exporter keeps the events in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from .diagnostics import logger, redact

try:
    import fcntl
except ImportError:  # Windows: no flock, so no safe orphan claiming; the spool stays off
    fcntl = None  # type: ignore[assignment]

APP_DIR_NAME = "cmdrdata-autopatch"
SEGMENT_SUFFIX = ".jsonl"
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_SEGMENT_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_AGE = 7 * 24 * 3600.0
_READ_CHUNK = 1024 * 1024


def default_spool_root(environ: Optional[dict[str, str]] = None) -> str:
    """The per-user cache directory for the spool.

    `$XDG_CACHE_HOME/cmdrdata-autopatch/spool`, else `~/Library/Caches/cmdrdata-autopatch/spool` on macOS,
    `%LOCALAPPDATA%\\cmdrdata-autopatch\\spool` on Windows, `~/.cache/cmdrdata-autopatch/spool` elsewhere.
    `CMDRDATA_SPOOL_DIR` (read by `config.load_settings`) replaces this root.
    """
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CACHE_HOME")
    if xdg:
        base = xdg
    elif os.name == "nt" and env.get("LOCALAPPDATA"):
        base = env["LOCALAPPDATA"]
    elif sys.platform == "darwin":
        base = os.path.join(os.path.expanduser("~"), "Library", "Caches")
    else:
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, APP_DIR_NAME, "spool")


def partition_name(endpoint: str, api_key: Optional[str]) -> str:
    """The subdirectory for one (endpoint, key) pair: a one-way hash, so no secret is written to disk."""
    digest = hashlib.sha256(f"{endpoint}\0{api_key or ''}".encode()).hexdigest()
    return digest[:16]


@dataclass(eq=False)
class Segment:
    """One segment file this process owns (it wrote it, or claimed it as an orphan) and holds locked."""

    path: str
    fd: int
    local: bool  # written by this process (its events count in this process's accounting)
    active: bool = False  # still being appended to
    end: int = 0  # bytes known to be in the file (written by us, or its size when claimed)
    read_offset: int = 0  # bytes already handed out (or skipped as corrupt)
    loaded: int = 0  # lines handed out
    settled: int = 0  # lines acknowledged
    unloaded: int = 0  # lines written by us and not yet handed back (local segments only)
    size_on_disk: int = field(default=0)

    @property
    def done(self) -> bool:
        return not self.active and self.read_offset >= self.end and self.settled >= self.loaded


class SpoolEntry:
    """One line handed back for delivery. `ack()` it once it is delivered or rejected for good."""

    __slots__ = ("body", "event_id", "local", "segment")

    def __init__(self, segment: Segment, event_id: str, body: bytes) -> None:
        self.segment = segment
        self.event_id = event_id
        self.body = body
        self.local = segment.local


@dataclass
class LoadResult:
    """What `Spool.load` found: entries to deliver, and local lines that could not be read back."""

    entries: list[SpoolEntry]
    lost_local: int = 0


class Spool:
    """Append-only JSONL segments of undelivered events in one directory. Thread-safe; never raises."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.max_age = max_age
        self._lock = threading.Lock()
        self._segments: list[Segment] = []
        self._active: Optional[Segment] = None
        self._seq = 0
        self._start_ms = int(time.time() * 1000)
        self._host = (
            "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40] or "host"
        )
        self._dir_ready = False
        self._bytes: Optional[int] = None  # bytes in the directory (all writers), learned on first write
        self.disabled_reason: Optional[str] = None if fcntl is not None else "no fcntl.flock on this platform"
        self._warned = False
        self.counters: dict[str, int] = {
            "written": 0,
            "write_failures": 0,
            "corrupt_lines": 0,
            "expired_lines": 0,
            "claimed_segments": 0,
            "deleted_segments": 0,
        }

    def __repr__(self) -> str:
        return f"<Spool {self.directory!r}>"

    # -- state ---------------------------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        return self.disabled_reason is None

    def pending_local(self) -> int:
        """Lines this process wrote and has not read back yet (benign unlocked read of an int)."""
        return sum(seg.unloaded for seg in self._segments if seg.local)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self.counters)
            out["directory"] = self.directory
            out["segments"] = len(self._segments)
            out["pending_local"] = sum(seg.unloaded for seg in self._segments if seg.local)
            out["disabled"] = self.disabled_reason
        return out

    # -- failure handling ----------------------------------------------------------------------------

    def _disable(self, reason: str) -> None:
        self.disabled_reason = reason
        if not self._warned:
            self._warned = True
            logger.warning(
                "cmdrdata-autopatch: the event spool in %s is not usable (%s); undelivered events are kept "
                "in memory only. Set CMDRDATA_SPOOL_DIR to a writable directory.",
                self.directory,
                reason,
            )

    def _ensure_dir(self) -> None:
        if self._dir_ready:
            return
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        try:
            os.chmod(self.directory, 0o700)
        except OSError:
            pass
        self._dir_ready = True

    def _directory_bytes(self) -> int:
        total = 0
        try:
            with os.scandir(self.directory) as it:
                for entry in it:
                    if entry.name.endswith(SEGMENT_SUFFIX):
                        try:
                            total += entry.stat().st_size
                        except OSError:
                            pass
        except OSError:
            pass
        return total

    # -- writing -------------------------------------------------------------------------------------

    def _new_segment(self) -> Segment:
        assert fcntl is not None
        self._seq += 1
        name = f"{self._host}-{os.getpid()}-{self._start_ms}-{self._seq:05d}{SEGMENT_SUFFIX}"
        final = os.path.join(self.directory, name)
        temp = os.path.join(self.directory, f".{name}.tmp")
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(temp, final)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
        try:  # make the new name durable before any event relies on it
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass
        segment = Segment(path=final, fd=fd, local=True, active=True)
        self._segments.append(segment)
        return segment

    def append(self, records: Sequence[tuple[str, bytes]]) -> tuple[int, Optional[str]]:
        """Write (event_id, body) records durably. Returns (how many were written, why the rest were not).

        All or nothing per call: on any failure the segment is truncated back and (0, reason) returned.
        """
        if not records:
            return 0, None
        try:
            with self._lock:
                if self.disabled_reason is not None:
                    return 0, "spool_error"
                data = b"".join(body + b"\n" for _, body in records)
                try:
                    self._ensure_dir()
                    if self._bytes is None:
                        self._bytes = self._directory_bytes()
                    if self._bytes + len(data) > self.max_bytes:
                        return 0, "spool_full"
                    segment = self._active
                    if segment is None or segment.end >= self.segment_bytes:
                        if segment is not None:
                            segment.active = False
                            self._retire_if_done(segment)
                        segment = self._active = self._new_segment()
                    self._write_all(segment, data)
                except OSError as exc:
                    self.counters["write_failures"] += 1
                    self._disable(redact(f"{exc.strerror or type(exc).__name__}"))
                    return 0, "spool_error"
                segment.end += len(data)
                segment.size_on_disk = segment.end
                segment.unloaded += len(records)
                self._bytes += len(data)
                self.counters["written"] += len(records)
                return len(records), None
        except Exception as exc:  # never into the application
            self._disable(redact(type(exc).__name__))
            return 0, "spool_error"

    def _write_all(self, segment: Segment, data: bytes) -> None:
        start = segment.end
        view = memoryview(data)
        try:
            while view:
                written = os.write(segment.fd, view)
                view = view[written:]
            os.fsync(segment.fd)
        except OSError:
            try:
                os.ftruncate(segment.fd, start)
            except OSError:
                pass
            raise

    # -- reading -------------------------------------------------------------------------------------

    def load(self, limit: int, *, orphans: bool = True) -> LoadResult:
        """Hand out up to `limit` lines: our own first, then lines of orphan segments claimed now."""
        result = LoadResult(entries=[])
        try:
            with self._lock:
                for segment in list(self._segments):
                    if len(result.entries) >= limit:
                        break
                    self._read_into(segment, limit, result)
                while orphans and len(result.entries) < limit:
                    claimed = self._claim_one()
                    if claimed is None:
                        break
                    self._read_into(claimed, limit, result)
        except Exception as exc:
            logger.debug("cmdrdata-autopatch: spool read failed: %s", redact(repr(exc)))
        return result

    def _read_into(self, segment: Segment, limit: int, result: LoadResult) -> None:
        while segment.read_offset < segment.end and len(result.entries) < limit:
            size = min(segment.end - segment.read_offset, _READ_CHUNK)
            chunk = os.pread(segment.fd, size, segment.read_offset)
            if not chunk:
                segment.end = segment.read_offset
                break
            cut = chunk.rfind(b"\n")
            at_end = segment.read_offset + len(chunk) >= segment.end
            if cut < 0 and not at_end:
                # a line longer than one chunk: read the whole rest
                chunk = os.pread(segment.fd, segment.end - segment.read_offset, segment.read_offset)
                cut = chunk.rfind(b"\n")
                at_end = True
            if cut < 0:  # only a torn line is left
                self._skip_corrupt(segment, 1, len(chunk))
                break
            consumed = 0
            for line in chunk[:cut].split(b"\n"):
                consumed += len(line) + 1
                self._take_line(segment, line, result)
                if len(result.entries) >= limit:
                    break
            segment.read_offset += consumed
            rest = len(chunk) - consumed
            if at_end and consumed == cut + 1 and rest > 0:  # unterminated tail: a torn last line
                self._skip_corrupt(segment, 1, rest)
        self._retire_if_done(segment)

    def _take_line(self, segment: Segment, line: bytes, result: LoadResult) -> None:
        if segment.local and segment.unloaded > 0:
            segment.unloaded -= 1
        event_id: Any = None
        if line.strip():
            try:
                event_id = json.loads(line).get("event_id")
            except (ValueError, AttributeError):
                event_id = None
        if not isinstance(event_id, str):
            self.counters["corrupt_lines"] += 1
            if segment.local:
                result.lost_local += 1
            return
        segment.loaded += 1
        result.entries.append(SpoolEntry(segment, event_id, bytes(line)))

    def _skip_corrupt(self, segment: Segment, lines: int, size: int) -> None:
        segment.read_offset += size
        self.counters["corrupt_lines"] += lines
        if segment.local and segment.unloaded > 0:
            segment.unloaded -= lines

    def has_orphans(self) -> bool:
        """True when the directory holds segments that are not ours (cheap: one directory listing)."""
        mine = {seg.path for seg in self._segments}
        try:
            with os.scandir(self.directory) as it:
                return any(
                    e.name.endswith(SEGMENT_SUFFIX) and not e.name.startswith(".") and e.path not in mine
                    for e in it
                )
        except OSError:
            return False

    def _claim_one(self) -> Optional[Segment]:
        if fcntl is None:
            return None
        mine = {seg.path for seg in self._segments}
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return None
        for name in names:
            if not name.endswith(SEGMENT_SUFFIX) or name.startswith("."):
                continue
            path = os.path.join(self.directory, name)
            if path in mine:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                st = os.fstat(fd)
                # deleted by the process that replayed it just before we locked: not an orphan any more
                if st.st_nlink == 0 or os.stat(path).st_ino != st.st_ino:
                    os.close(fd)
                    continue
            except OSError:  # locked by a live writer or another replayer, or vanished
                os.close(fd)
                continue
            if self.max_age and time.time() - st.st_mtime > self.max_age:
                self._expire(path, fd)
                continue
            segment = Segment(path=path, fd=fd, local=False, end=st.st_size, size_on_disk=st.st_size)
            self._segments.append(segment)
            self.counters["claimed_segments"] += 1
            return segment
        return None

    def _expire(self, path: str, fd: int) -> None:
        try:
            lines = 0
            offset = 0
            while True:
                chunk = os.pread(fd, _READ_CHUNK, offset)
                if not chunk:
                    break
                lines += chunk.count(b"\n")
                offset += len(chunk)
            self.counters["expired_lines"] += lines
            logger.warning(
                "cmdrdata-autopatch: dropped %d spooled event(s) older than %.0f days from %s",
                lines,
                self.max_age / 86400,
                path,
            )
            os.unlink(path)
        except OSError:
            pass
        finally:
            os.close(fd)

    # -- acknowledgement -----------------------------------------------------------------------------

    def ack(self, entry: SpoolEntry) -> None:
        """The entry is settled (delivered or rejected for good); delete its segment once all lines are."""
        try:
            with self._lock:
                entry.segment.settled += 1
                self._retire_if_done(entry.segment)
        except Exception as exc:
            logger.debug("cmdrdata-autopatch: spool ack failed: %s", redact(repr(exc)))

    def _retire_if_done(self, segment: Segment) -> None:
        if (
            segment is self._active
            and segment.read_offset >= segment.end
            and segment.settled >= segment.loaded
        ):
            segment.active = False
            self._active = None
        if not segment.done or segment not in self._segments:
            return
        try:
            os.unlink(segment.path)  # unlink while still locked, so no claimer can open a live name
        except OSError:
            pass
        try:
            os.close(segment.fd)
        except OSError:
            pass
        self._segments.remove(segment)
        self.counters["deleted_segments"] += 1
        if self._bytes is not None:
            self._bytes = max(0, self._bytes - segment.size_on_disk)

    # -- fork ----------------------------------------------------------------------------------------

    def after_fork_child(self) -> None:
        """In a forked child: forget the parent's segments without unlocking them (the parent owns them).

        `flock` locks belong to the open file description shared with the parent, so closing our copies
        leaves the parent's locks in place, while `LOCK_UN` here would release them under the parent's feet.
        """
        for segment in self._segments:
            try:
                os.close(segment.fd)
            except OSError:
                pass
        self._segments = []
        self._active = None
        self._lock = threading.Lock()
        self._start_ms = int(time.time() * 1000)
        self._seq = 0
        for key in self.counters:
            self.counters[key] = 0
