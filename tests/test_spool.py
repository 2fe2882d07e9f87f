"""The disk spool: durable append, replay, deletion on full acknowledgement, orphan claiming, failures."""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from cmdrdata_autopatch import spool as spool_module
from cmdrdata_autopatch.spool import Spool, default_spool_root, partition_name

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the spool needs fcntl.flock")


def records(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        event_id = str(uuid.uuid4())
        out.append((event_id, json.dumps({"event_id": event_id, "n": i}, separators=(",", ":")).encode()))
    return out


def segments(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.jsonl"))


def test_append_load_ack_deletes_segment_when_all_acked(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    recs = records(5)
    assert spool.append(recs)[:2] == (5, None)
    (segment,) = segments(tmp_path / "spool")
    assert stat.S_IMODE(segment.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    assert spool.backlog_local() == 5
    entries = spool.load(10).entries
    assert [(e.event_id, e.body) for e in entries] == recs  # byte-identical, in order
    assert all(e.local for e in entries)
    for entry in entries[:4]:
        spool.ack(entry)
    spool.sync()  # acks are written in batches; sync() writes what is pending
    acks = Path(str(segment) + ".acks")
    assert acks.read_text().split() == [r[0] for r in recs[:4]]  # acknowledgements are on disk
    spool.ack(entries[4])
    assert segment.exists()  # still the active segment: kept for the next batch while we run
    spool.seal()
    assert not segment.exists() and not acks.exists()  # all settled: segment and ack log deleted


def test_load_respects_the_limit_and_resumes(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    recs = records(7)
    spool.append(recs[:4])
    spool.append(recs[4:])
    first = spool.load(3).entries
    second = spool.load(10).entries
    assert [e.event_id for e in first + second] == [r[0] for r in recs]


def test_segments_rotate_by_size(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=200)
    for _ in range(5):
        spool.append(records(3))
    assert len(segments(tmp_path)) >= 3


def test_orphan_is_replayed_by_exactly_one_claimer(tmp_path: Path) -> None:
    """Segments left by a dead writer are claimed by one process only (flock), even when claimers race."""
    writer = Spool(tmp_path, segment_bytes=300)
    recs = records(40)
    for i in range(0, 40, 4):
        writer.append(recs[i : i + 4])
    # simulate the writer's death: close its descriptors, which releases its locks
    for segment in writer._segments:
        os.close(segment.fd)
    writer._segments = []

    claimers = [Spool(tmp_path) for _ in range(4)]
    seen: list[list[str]] = [[] for _ in claimers]
    barrier = threading.Barrier(len(claimers))

    def claim(index: int) -> None:
        barrier.wait()
        while True:
            entries = claimers[index].load(3).entries
            if not entries:
                return
            seen[index].extend(e.event_id for e in entries)
            for entry in entries:
                assert not entry.local
                claimers[index].ack(entry)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(claimers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    everything = [event_id for ids in seen for event_id in ids]
    assert sorted(everything) == sorted(r[0] for r in recs)  # every line once, nobody twice
    assert segments(tmp_path) == []


def test_live_writers_segments_are_not_orphans(tmp_path: Path) -> None:
    writer = Spool(tmp_path)
    writer.append(records(3))
    other = Spool(tmp_path)
    assert other.load(10).entries == []


def test_torn_last_line_and_garbage_are_skipped_and_counted(tmp_path: Path) -> None:
    recs = records(3)
    good = b"".join(body + b"\n" for _, body in recs)
    (tmp_path / "dead-1-0-00001.jsonl").write_bytes(good + b"not json\n" + b'{"event_id": "torn')
    spool = Spool(tmp_path)
    entries = spool.load(10).entries
    assert [e.event_id for e in entries] == [r[0] for r in recs]
    assert spool.stats()["corrupt_lines"] == 2
    for entry in entries:
        spool.ack(entry)
    assert segments(tmp_path) == []


def test_unwritable_directory_never_raises_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    spool = Spool(blocker / "spool")  # a directory below a regular file cannot be created
    with caplog.at_level(logging.WARNING, logger="cmdrdata_autopatch"):
        assert spool.append(records(2))[:2] == (0, "spool_error")
        assert spool.append(records(2))[:2] == (0, "spool_error")
    assert not spool.writable
    assert sum("spool" in r.getMessage() for r in caplog.records) == 1
    assert spool.load(10).entries == []


def test_a_nearly_full_disk_takes_the_complete_lines_that_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path)
    first = records(2)
    assert spool.append(first)[:2] == (2, None)
    batch = records(4)
    real_write = os.write
    calls = {"n": 0}

    def flaky_write(fd: int, data: bytes) -> int:  # 2.5 lines land, then the disk is full
        calls["n"] += 1
        if calls["n"] == 1:
            size = len(batch[0][1]) + len(batch[1][1]) + 2 + len(batch[2][1]) // 2
            return real_write(fd, bytes(data)[:size])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.os, "write", flaky_write)
    written, reason, _ = spool.append(batch)
    monkeypatch.undo()
    assert (written, reason) == (2, "disk_full")  # a partial spill, not all-or-nothing
    (segment,) = segments(tmp_path)
    # the file holds the first batch and two whole lines of the second: no torn half-line
    assert segment.read_bytes() == b"".join(body + b"\n" for _, body in first + batch[:2])
    assert spool.writable  # full is not broken


def test_spool_full_takes_what_fits_under_max_bytes(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=500)
    assert spool.append(records(2))[0] == 2
    written, reason, _ = spool.append(records(20))
    assert 0 < written < 20 and reason == "spool_full"
    assert spool.append(records(20))[:2] == (0, "spool_full")
    assert spool.writable  # full is not broken: later, smaller batches may fit


def test_expired_orphans_are_dropped_and_counted(tmp_path: Path) -> None:
    recs = records(2)
    path = tmp_path / "dead-1-0-00001.jsonl"
    path.write_bytes(b"".join(body + b"\n" for _, body in recs))
    old = time.time() - 10 * 86400
    os.utime(path, (old, old))
    spool = Spool(tmp_path)
    assert spool.load(10).entries == []
    assert spool.stats()["expired_lines"] == 2
    assert not path.exists()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_does_not_release_the_parents_locks(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(records(2))
    pid = os.fork()
    if pid == 0:  # child
        try:
            spool.after_fork_child()
            spool.append(records(1))  # the child's own segment, new name
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    # the parent still holds its segment: another claimer gets only the (dead) child's segment
    claimer = Spool(tmp_path)
    entries = claimer.load(10).entries
    assert len(entries) == 1
    assert spool.load(10).entries and len(spool._segments) == 1


def test_default_root_and_partition() -> None:
    assert default_spool_root({"XDG_CACHE_HOME": "/x/cache"}) == "/x/cache/cmdrdata-autopatch/spool"
    assert default_spool_root({}).endswith(os.path.join("cmdrdata-autopatch", "spool"))
    a = partition_name("https://api.cmdrdata.ai/api/events", "tk-one")
    b = partition_name("https://api.cmdrdata.ai/api/events", "tk-two")
    assert a != b and len(a) == 16 and "tk-" not in a


@pytest.mark.parametrize("spool_dir", ["", "  "])
def test_an_empty_spool_dir_means_the_default_never_the_working_directory(
    spool_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cmdrdata_autopatch.config import Settings
    from cmdrdata_autopatch.exporter import make_spool

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    spool = make_spool(Settings(api_key="tk-test", spool_dir=spool_dir))
    assert spool is not None
    assert spool.directory.startswith(str(tmp_path / "cache"))
    assert os.listdir(tmp_path / "work") == []
