"""The spool's acknowledgements: which lines of a segment are settled, and deleting a segment once all are.

A mixin of `Spool` (spool.py keeps the write-ahead segments: appending, claiming, reading back). An ack is
the id of a settled event (delivered, or rejected for good) appended to `<segment>.acks`; a replay skips the
ids it lists, so no process re-sends what was delivered, even when the spool drains over several short runs.
Acks are written `ACK_BATCH` at a time (after each intake batch, at seal and at exit) and never fsynced: a
lost ack costs one duplicate send, which the event id dedups. Callers hold no lock; these methods take the
spool's own.
"""

from __future__ import annotations

import os
import threading
from typing import Optional

from .diagnostics import logger, redact
from .spoolfs import ACK_SUFFIX, Segment, SpoolEntry, unlink

ACK_BATCH = 64  # acks written together (a crash loses at most these: duplicates the event id absorbs)


class AckLog:
    """Acknowledgement and retirement of spool segments (state owned by `Spool`)."""

    _lock: threading.RLock
    _segments: list[Segment]
    _acks_waiting: bool
    _bytes: Optional[int]
    counters: dict[str, int]

    def ack(self, entry: SpoolEntry) -> None:
        """The entry is settled (delivered or rejected for good): log it, delete the segment when all are."""
        try:
            with self._lock:
                segment = entry.segment
                segment.settled += 1
                if segment in self._segments:
                    if segment.done:
                        self._retire_if_done(segment)
                    else:
                        segment.pending_acks.append(entry.event_id)
                        self._acks_waiting = True
                        if len(segment.pending_acks) >= ACK_BATCH:
                            self._write_acks(segment)
        except Exception as exc:
            logger.debug("cmdrdata-autopatch: spool ack failed: %s", redact(repr(exc)))

    def _write_acks(self, segment: Segment) -> None:
        """Append the segment's pending acks to its ack log in one write (one syscall per batch, not per
        event: each one would hand the GIL back and forth with a busy application)."""
        ids, segment.pending_acks = segment.pending_acks, []
        if not ids:
            return
        if segment.ack_fd is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
            segment.ack_fd = os.open(segment.path + ACK_SUFFIX, flags, 0o600)
        os.write(segment.ack_fd, "".join(event_id + "\n" for event_id in ids).encode("latin-1"))

    def write_acks(self) -> None:
        """Put every pending ack on disk now (the intake does it after each batch; exit and seal too)."""
        if not self._acks_waiting:
            return
        try:
            with self._lock:
                self._acks_waiting = False
                for segment in self._segments:
                    self._write_acks(segment)
        except Exception as exc:
            logger.debug("cmdrdata-autopatch: spool ack write failed: %s", redact(repr(exc)))

    def _retire_if_done(self, segment: Segment) -> None:
        if not segment.done or segment not in self._segments:
            return
        unlink(segment.path)  # unlink while still locked, so no claimer can open a live name
        unlink(segment.path + ACK_SUFFIX)
        segment.close_files()
        self._segments.remove(segment)
        self.counters["deleted_segments"] += 1
        if self._bytes is not None:
            self._bytes = max(0, self._bytes - segment.end)
