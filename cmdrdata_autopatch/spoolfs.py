"""Spool files, below the `Spool` object: names, paths, line-level writes, and a read-only backlog scan.

Kept apart from `spool.py` so `doctor` and `replay` can look at a spool directory (`scan_backlog`) without
claiming or changing anything, and so the torn-write rules (`write_lines`) are in one small place.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

APP_DIR_NAME = "cmdrdata-autopatch"
SEGMENT_SUFFIX = ".jsonl"
ACK_SUFFIX = ".acks"
LAST_DELIVERY_FILE = ".last-delivery"
READ_CHUNK = 1024 * 1024


def default_spool_root(environ: Optional[dict[str, str]] = None) -> str:
    """The per-user cache directory for the spool (`CMDRDATA_SPOOL_DIR` replaces it).

    `$XDG_CACHE_HOME/cmdrdata-autopatch/spool`, else `~/Library/Caches/...` on macOS,
    `%LOCALAPPDATA%\\cmdrdata-autopatch\\spool` on Windows, `~/.cache/cmdrdata-autopatch/spool` elsewhere.
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


def line_event_id(line: bytes) -> Optional[str]:
    """The `event_id` of one spooled line, or None when the line is not a readable event."""
    if not line.strip():
        return None
    try:
        event_id = json.loads(line).get("event_id")
    except (ValueError, AttributeError):
        return None
    return event_id if isinstance(event_id, str) else None


def read_acks(path: str) -> set[str]:
    """The ids listed in an ack log (missing file: none)."""
    try:
        with open(path, "rb") as handle:
            return {line.decode("ascii", "replace") for line in handle.read().split(b"\n") if line}
    except OSError:
        return set()


@dataclass(eq=False)
class Segment:
    """One segment file this process owns (it wrote it, or claimed it as an orphan) and holds locked."""

    path: str
    fd: int
    local: bool  # written by this process (its events count in this process's accounting)
    active: bool = False  # still being appended to
    end: int = 0  # bytes known to be in the file
    read_offset: int = 0  # bytes handed out (or kept in memory, or skipped)
    loaded: int = 0  # lines handed out (or kept in memory)
    settled: int = 0  # lines acknowledged
    unloaded: int = 0  # lines written by us, on disk only (local segments)
    ack_fd: Optional[int] = None
    pending_acks: list[str] = field(default_factory=list)  # settled ids not yet in the ack log
    acked: set[str] = field(default_factory=set)  # ids settled by an earlier owner (claimed orphans)

    @property
    def done(self) -> bool:
        return not self.active and self.read_offset >= self.end and self.settled >= self.loaded

    def close_files(self) -> None:
        """Close our descriptors of the segment and its ack log (closing never unlocks a parent's flock)."""
        for fd in (self.fd, self.ack_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


class SpoolEntry:
    """One line kept for delivery. `Spool.ack()` it once it is delivered or rejected for good."""

    __slots__ = ("body", "event_id", "local", "segment")

    def __init__(self, segment: Segment, event_id: str, body: bytes) -> None:
        self.segment = segment
        self.event_id = event_id
        self.body = body
        self.local = segment.local


class Appended(NamedTuple):
    """What `Spool.append` did: how many records are on disk, why the rest are not, the kept entries."""

    written: int
    reason: Optional[str]
    entries: list[SpoolEntry]


@dataclass
class LoadResult:
    """What `Spool.load` found: entries to deliver, and local lines that could not be read back."""

    entries: list[SpoolEntry]
    lost_local: int = 0
    already_acked: int = 0


def read_into(segment: Segment, limit: int, result: LoadResult, counters: dict[str, int]) -> None:
    """Hand out lines of `segment` from its read offset into `result` (skipping corrupt and acked ones)."""
    while segment.read_offset < segment.end and len(result.entries) < limit:
        size = min(segment.end - segment.read_offset, READ_CHUNK)
        chunk = os.pread(segment.fd, size, segment.read_offset)
        if not chunk:
            segment.end = segment.read_offset
            break
        cut = chunk.rfind(b"\n")
        at_end = segment.read_offset + len(chunk) >= segment.end
        if cut < 0 and not at_end:  # a line longer than one chunk: read the whole rest
            chunk = os.pread(segment.fd, segment.end - segment.read_offset, segment.read_offset)
            cut = chunk.rfind(b"\n")
            at_end = True
        if cut < 0:  # only a torn line is left
            _skip_corrupt(segment, len(chunk), counters)
            break
        consumed = 0
        for line in chunk[:cut].split(b"\n"):
            consumed += len(line) + 1
            _take_line(segment, line, result, counters)
            if len(result.entries) >= limit:
                break
        segment.read_offset += consumed
        rest = len(chunk) - consumed
        if at_end and consumed == cut + 1 and rest > 0:  # unterminated tail: a torn last line
            _skip_corrupt(segment, rest, counters)


def _take_line(segment: Segment, line: bytes, result: LoadResult, counters: dict[str, int]) -> None:
    if segment.local and segment.unloaded > 0:
        segment.unloaded -= 1
    event_id = line_event_id(line)
    if event_id is None:
        counters["corrupt_lines"] += 1
        if segment.local:
            result.lost_local += 1
        return
    if event_id in segment.acked:
        counters["skipped_acked"] += 1
        result.already_acked += 1
        return
    segment.loaded += 1
    result.entries.append(SpoolEntry(segment, event_id, bytes(line)))


def _skip_corrupt(segment: Segment, size: int, counters: dict[str, int]) -> None:
    segment.read_offset += size
    counters["corrupt_lines"] += 1
    if segment.local and segment.unloaded > 0:
        segment.unloaded -= 1


def write_lines(fd: int, lines: list[bytes], start: int) -> list[int]:
    """Write `lines` at the end of `fd`; return the sizes of the lines fully written.

    A full disk mid-batch (ENOSPC, EDQUOT, EFBIG, or a short write) keeps the complete lines that landed and
    truncates the torn rest, so the file never ends in half a line. Other errors raise (after truncating).
    """
    data = b"".join(lines)
    view = memoryview(data)
    done = 0
    try:
        while done < len(data):
            done += os.write(fd, view[done:])
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            truncate(fd, start)
            raise
    sizes: list[int] = []
    total = 0
    for line in lines:
        if total + len(line) > done:
            break
        sizes.append(len(line))
        total += len(line)
    if total < done:
        truncate(fd, start + total)
    return sizes


def truncate(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def fsync_dir(directory: str) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def count_lines(fd: int) -> int:
    lines, offset = 0, 0
    while True:
        chunk = os.pread(fd, READ_CHUNK, offset)
        if not chunk:
            return lines
        lines += chunk.count(b"\n")
        offset += len(chunk)


def directory_bytes(directory: str) -> int:
    total = 0
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.endswith(SEGMENT_SUFFIX):
                    try:
                        total += entry.stat().st_size
                    except OSError:
                        pass
    except OSError:
        pass
    return total


def has_foreign_segments(directory: str, mine: set[str]) -> bool:
    """True when `directory` holds segments whose paths are not in `mine` (one directory listing)."""
    try:
        with os.scandir(directory) as it:
            return any(
                e.name.endswith(SEGMENT_SUFFIX) and not e.name.startswith(".") and e.path not in mine
                for e in it
            )
    except OSError:
        return False


def expire_segment(path: str, fd: int, max_age: float) -> int:
    """Delete a claimed segment older than `max_age` (and its ack log); returns the events it dropped."""
    from .diagnostics import logger

    try:
        lines = max(0, count_lines(fd) - len(read_acks(path + ACK_SUFFIX)))
        logger.warning(
            "cmdrdata-autopatch: dropped %d spooled event(s) older than %.0f days from %s",
            lines,
            max_age / 86400,
            path,
        )
        unlink(path)
        unlink(path + ACK_SUFFIX)
        return lines
    finally:
        os.close(fd)


def write_last_delivery(directory: str) -> None:
    """Stamp the partition with the time of a successful delivery (read by `doctor` and `replay`)."""
    fd = os.open(os.path.join(directory, LAST_DELIVERY_FILE), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{time.time():.3f}\n".encode())
    finally:
        os.close(fd)


def read_last_delivery(directory: str) -> Optional[float]:
    """The unix time of the last successful delivery noted in this spool partition, if any."""
    try:
        with open(os.path.join(directory, LAST_DELIVERY_FILE), "rb") as handle:
            return float(handle.read().strip() or b"nan")
    except (OSError, ValueError):
        return None


def scan_backlog(directory: str) -> dict[str, Any]:
    """What waits in one spool partition, read-only (claims nothing, changes nothing).

    `events` counts lines not listed in their segment's ack log; `held` counts the segments a running
    process holds (they are delivered by that process, not by a replay); `oldest` is the timestamp of the
    oldest waiting event as written in it.
    """
    out: dict[str, Any] = {"directory": directory, "segments": 0, "events": 0, "bytes": 0, "held": 0}
    out["oldest"] = None
    out["last_delivery"] = read_last_delivery(directory)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return out
    oldest: Optional[str] = None
    for name in names:
        if not name.endswith(SEGMENT_SUFFIX) or name.startswith("."):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        acked = read_acks(path + ACK_SUFFIX)
        waiting = [line for line in data.split(b"\n") if line and line_event_id(line) not in acked]
        out["segments"] += 1
        out["events"] += len(waiting)
        out["bytes"] += len(data)
        out["held"] += 1 if _is_locked(path) else 0
        if waiting:
            stamp = _timestamp(waiting[0])
            if stamp is not None and (oldest is None or stamp < oldest):
                oldest = stamp
    out["oldest"] = oldest
    return out


def _timestamp(line: bytes) -> Optional[str]:
    try:
        value = json.loads(line).get("timestamp")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _is_locked(path: str) -> bool:
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing our own descriptor drops our shared lock, never the writer's
    return False
