"""The disk spool: a write-ahead log of event bodies in JSON Lines segments, with acknowledgement logs.

Why: memory is bounded, a process can be killed at any moment, and a backend can be down for hours. With the
HTTP exporter every event is appended here within ~100 ms of `record()` and stays until it is acknowledged,
so `kill -9` loses at most that window and an outage of any length loses nothing (up to `max_bytes`).

Layout and guarantees:

- One directory per (endpoint, API key) pair: `<spool_dir>/<16 hex chars of sha256(endpoint, key)>/`, so an
  application using another key never replays (and bills) our events. The key itself is never written.
  Directories are created 0700, files 0600.
- A segment is `<host>-<pid>-<start ms>-<seq>.jsonl`, one event body (`to_json()`, never a raw newline) per
  line, replayed byte for byte. Beside it, `<segment>.acks` lists the ids of its settled events (delivered or
  rejected for good), one per line: a replay skips them, so no process re-sends what was delivered, even
  when the spool is drained over several short runs.
- A segment is created under a hidden name, locked (`fcntl.flock`), then renamed into place, and stays locked
  while its writer lives. A dead writer's lock is released by the kernel, which makes the segment an
  *orphan*: another process claims it with a non-blocking lock, so two processes never replay the same one.
- A segment and its ack log are deleted once every line is settled. Segments older than `max_age` are
  dropped (counted as expired).
- fsync policy (`fsync`): `interval` (default) writes every batch with `write()` at once (it survives the
  process dying) and `fsync`s it at most once a second while events arrive, at segment rotation, and at
  exit, so an operating-system crash loses at most about a second; `always` fsyncs every batch; `off`
  never fsyncs. Acks are written in batches (64 at a time, after each intake batch, at seal and at exit)
  and never fsynced: a lost ack costs a duplicate send, which the event id dedups.
- A nearly full disk takes what fits: a batch is cut at the last complete line that was written (or at
  `max_bytes`), and the rest is reported as not written. A torn last line (a crash mid-write) is skipped
  and counted when read. Nothing here raises into the caller: an unusable directory disables the spool
  with one warning, and the exporter keeps the events in memory.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, Optional

from .diagnostics import logger, redact
from .spool_acks import AckLog
from .spoolfs import (
    ACK_SUFFIX,
    SEGMENT_SUFFIX,
    Appended,
    LoadResult,
    Segment,
    SpoolEntry,
    default_spool_root,
    directory_bytes,
    expire_segment,
    fsync_dir,
    has_foreign_segments,
    partition_name,
    read_acks,
    read_into,
    unlink,
    write_last_delivery,
    write_lines,
)

try:
    import fcntl
except ImportError:  # Windows: no flock, so no safe orphan claiming; the spool stays off
    fcntl = None  # type: ignore[assignment]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_SEGMENT_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_AGE = 7 * 24 * 3600.0
FSYNC_POLICIES = ("interval", "always", "off")

__all__ = ["Appended", "LoadResult", "Spool", "SpoolEntry", "default_spool_root", "partition_name"]


class Spool(AckLog):
    """Write-ahead JSONL segments with ack logs in one directory. Thread-safe; never raises."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        max_age: float = DEFAULT_MAX_AGE,
        fsync: str = "interval",
        fsync_interval: float = 1.0,
    ) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.max_age = max_age
        self.fsync = fsync if fsync in FSYNC_POLICIES else "interval"
        self.fsync_interval = fsync_interval
        # re-entrant: the exit drain may run in a signal handler that interrupted this thread inside the spool
        self._lock = threading.RLock()
        self._segments: list[Segment] = []
        self._active: Optional[Segment] = None
        self._seq = 0
        self._start_ms = int(time.time() * 1000)
        self._host = (
            "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40] or "host"
        )
        self._dir_ready = False
        self._bytes: Optional[int] = None  # bytes in the directory (all writers), learned on first write
        self._dirty = False
        self._acks_waiting = False
        self._last_sync = 0.0
        self.disabled_reason: Optional[str] = None if fcntl is not None else "no fcntl.flock on this platform"
        self._warned = False
        self.counters: dict[str, int] = {
            "written": 0,
            "write_failures": 0,
            "corrupt_lines": 0,
            "expired_lines": 0,
            "claimed_segments": 0,
            "deleted_segments": 0,
            "skipped_acked": 0,
        }

    def __repr__(self) -> str:
        return f"<Spool {self.directory!r}>"

    @property
    def writable(self) -> bool:
        return self.disabled_reason is None

    def backlog_local(self) -> int:
        """Lines this process wrote that are on disk only (not held in memory): read back before new ones."""
        with self._lock:
            return sum(seg.unloaded for seg in self._segments if seg.local)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self.counters)
            out["directory"] = self.directory
            out["segments"] = len(self._segments)
            out["backlog_local"] = sum(seg.unloaded for seg in self._segments if seg.local)
            out["disabled"] = self.disabled_reason
        return out

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
        if self.fsync != "off":
            fsync_dir(self.directory)  # make the new name durable before any event relies on it
        segment = Segment(path=final, fd=fd, local=True, active=True)
        self._segments.append(segment)
        return segment

    def append(self, records: Sequence[tuple[str, bytes]], keep: bool = False) -> Appended:
        """Write (event_id, body) records; as many as fit, in order. Never raises.

        `keep=True`: the caller holds these events in memory and will `ack` the returned entries; otherwise
        they are on disk only and come back through `load`. Only allowed while `backlog_local()` is 0.
        """
        if not records:
            return Appended(0, None, [])
        try:
            with self._lock:
                return self._append_locked(records, keep)
        except Exception as exc:  # never into the application
            self._disable(redact(type(exc).__name__))
            return Appended(0, "spool_error", [])

    def _append_locked(self, records: Sequence[tuple[str, bytes]], keep: bool) -> Appended:
        if self.disabled_reason is not None:
            return Appended(0, "spool_error", [])
        try:
            self._ensure_dir()
            if self._bytes is None:
                self._bytes = directory_bytes(self.directory)
            room = self.max_bytes - self._bytes
            lines = [body + b"\n" for _, body in records]
            fit, size = 0, 0
            for line in lines:
                if size + len(line) > room:
                    break
                fit, size = fit + 1, size + len(line)
            if fit == 0:
                return Appended(0, "spool_full", [])
            segment = self._active
            if segment is None or segment.end >= self.segment_bytes:
                if segment is not None:
                    segment.active = False
                    self._sync_fd(segment.fd)
                    self._retire_if_done(segment)
                segment = self._active = self._new_segment()
            written = write_lines(segment.fd, lines[:fit], segment.end)
        except OSError as exc:
            self.counters["write_failures"] += 1
            self._disable(redact(f"{exc.strerror or type(exc).__name__}"))
            return Appended(0, "spool_error", [])
        n = len(written)
        reason: Optional[str] = None if n == len(records) else ("spool_full" if n == fit else "disk_full")
        if n < fit:
            self.counters["write_failures"] += 1
        start = segment.end
        segment.end += sum(written)
        self._bytes += sum(written)
        self.counters["written"] += n
        self._dirty = True
        if self.fsync == "always":
            self._sync_fd(segment.fd)
        entries: list[SpoolEntry] = []
        if keep and segment.read_offset == start and segment.unloaded == 0:
            segment.read_offset = segment.end
            segment.loaded += n
            entries = [SpoolEntry(segment, event_id, body) for event_id, body in records[:n]]
        else:
            segment.unloaded += n
        return Appended(n, reason, entries)

    def _sync_fd(self, fd: int) -> None:
        if self.fsync == "off":
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        self._dirty = False
        self._last_sync = time.monotonic()

    def sync(self, force: bool = False) -> None:
        """Write pending acks; fsync the active segment if the policy says it is due (`force`: now)."""
        self.write_acks()
        if self.fsync == "off" or not self._dirty:
            return
        if not force and time.monotonic() - self._last_sync < self.fsync_interval:
            return
        try:
            with self._lock:
                segment = self._active
                if segment is None:
                    return
                fd = os.dup(segment.fd)  # fsync outside the lock, on a descriptor nobody can close
                self._dirty = False
                self._last_sync = time.monotonic()
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass

    @property
    def sync_pending(self) -> bool:
        """Something for one late `sync()` once events stop arriving (an fsync, or acks to write)."""
        return (self._dirty and self.fsync == "interval") or self._acks_waiting

    # -- reading -------------------------------------------------------------------------------------

    def load(self, limit: int, *, orphans: bool = True) -> LoadResult:
        """Hand out up to `limit` lines: our own backlog first, then lines of orphan segments claimed now."""
        result = LoadResult(entries=[])
        try:
            with self._lock:
                for segment in list(self._segments):
                    if len(result.entries) >= limit:
                        break
                    read_into(segment, limit, result, self.counters)
                    self._retire_if_done(segment)
                while orphans and len(result.entries) < limit:
                    claimed = self._claim_one()
                    if claimed is None:
                        break
                    read_into(claimed, limit, result, self.counters)
                    self._retire_if_done(claimed)
        except Exception as exc:
            logger.debug("cmdrdata-autopatch: spool read failed: %s", redact(repr(exc)))
        return result

    def has_orphans(self) -> bool:
        """True when the directory holds segments that are not ours (cheap: one directory listing)."""
        return has_foreign_segments(self.directory, {seg.path for seg in self._segments})

    def _claim_one(self) -> Optional[Segment]:
        if fcntl is None:
            return None
        mine = {seg.path for seg in self._segments}
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return None
        for name in names:
            path = os.path.join(self.directory, name)
            if name.endswith(ACK_SUFFIX) and not os.path.exists(path[: -len(ACK_SUFFIX)]):
                unlink(path)  # the ack log of a segment deleted by a process that died just after
                continue
            if not name.endswith(SEGMENT_SUFFIX) or name.startswith(".") or path in mine:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                st = os.fstat(fd)
                if st.st_nlink == 0 or os.stat(path).st_ino != st.st_ino:  # replayed and deleted meanwhile
                    os.close(fd)
                    continue
            except OSError:  # locked by a live writer or another replayer, or vanished
                os.close(fd)
                continue
            if self.max_age and time.time() - st.st_mtime > self.max_age:
                self._expire(path, fd)
                continue
            segment = Segment(
                path=path, fd=fd, local=False, end=st.st_size, acked=read_acks(path + ACK_SUFFIX)
            )
            self._segments.append(segment)
            self.counters["claimed_segments"] += 1
            return segment
        return None

    def _expire(self, path: str, fd: int) -> None:
        self.counters["expired_lines"] += expire_segment(path, fd, self.max_age)

    def seal(self) -> None:
        """Stop appending to the active segment (exit, shutdown); delete it now if all of it is settled.

        The active segment is kept while the process runs even when fully acknowledged, so a steady trickle
        of events does not create (and fsync the name of) a new file for every batch.
        """
        self.write_acks()
        try:
            with self._lock:
                segment, self._active = self._active, None
                if segment is not None:
                    segment.active = False
                    self._retire_if_done(segment)
        except Exception as exc:
            logger.debug("cmdrdata-autopatch: spool seal failed: %s", redact(repr(exc)))

    # -- delivery bookkeeping, fork --------------------------------------------------------------------

    def note_delivery(self) -> None:
        """Remember when this partition last delivered an event (shown by `doctor`)."""
        try:
            self._ensure_dir()
            write_last_delivery(self.directory)
        except OSError:
            pass

    def after_fork_child(self) -> None:
        """In a forked child: forget the parent's segments without unlocking them (the parent owns them).

        `flock` locks belong to the open file description shared with the parent, so closing our copies
        leaves the parent's locks in place, while `LOCK_UN` here would release them under the parent's feet.
        """
        for segment in self._segments:
            segment.close_files()
        self._segments = []
        self._active = None
        self._lock = threading.RLock()
        self._start_ms = int(time.time() * 1000)
        self._seq = 0
        self._dirty = False
        self._acks_waiting = False
        for key in self.counters:
            self.counters[key] = 0
