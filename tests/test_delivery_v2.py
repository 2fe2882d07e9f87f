"""Delivery v2 (issue 9): concurrency, write-ahead, short runs that drain the spool, bad input, counting.

Every test talks to the loopback CmdrData with 50 ms of latency (a hosted API's round trip). Bounds on time
are generous: they separate "concurrent" from "one at a time" and "bounded" from "blocked", not fast from
slow (benchmarks/delivery.py measures speed).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cmdrdata_autopatch.config import ConfigError, load_settings
from cmdrdata_autopatch.context import customer, snapshot_metadata, validate_customer_id
from cmdrdata_autopatch.exporter import BackgroundExporter, Backoff
from cmdrdata_autopatch.httptransport import HttpTransport
from cmdrdata_autopatch.retry import Health, auth_delay
from cmdrdata_autopatch.spool import Spool

from .cmdrdata_server import FakeCmdrData, Reply
from .support import assert_invariant, eventually, make_event, run_python, start_python

KEY = "tk-delivery-v2-key-0001"
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process semantics")
LATENCY = 0.05


@pytest.fixture
def server() -> Iterator[FakeCmdrData]:
    with FakeCmdrData(latency=LATENCY) as fake:
        yield fake


def http_exporter(made: list[BackgroundExporter], url: str, **kwargs: Any) -> BackgroundExporter:
    kwargs.setdefault("flush_interval", 0.05)
    kwargs.setdefault("backoff", Backoff(base=0.02, cap=0.2))
    kwargs.setdefault("register_exit", False)
    exporter = BackgroundExporter(HttpTransport(KEY, url, connect_timeout=1.0, read_timeout=5.0), **kwargs)
    made.append(exporter)
    return exporter


def max_overlap(server: FakeCmdrData) -> int:
    """The most requests the server held at once (each is held for LATENCY after it arrives)."""
    times = sorted(r.time for r in server.received)
    best = 0
    for i, start in enumerate(times):
        best = max(best, sum(1 for t in times[i:] if t < start + LATENCY * 0.9))
    return best


# ---- 1. concurrent delivery ------------------------------------------------------------------------


def test_up_to_max_in_flight_posts_go_out_together(server: FakeCmdrData, exporters: list[Any]) -> None:
    exporter = http_exporter(exporters, server.url, max_in_flight=16)
    for i in range(320):
        exporter.record(make_event(i))
    assert exporter.flush(30) == (320, 0)
    assert len(server.stored) == 320 and all(n == 1 for n in server.stored.values())
    assert max_overlap(server) >= 6  # one at a time would be 1; 16 allowed
    assert len({r.peer_port for r in server.received}) <= 16  # kept-alive connections, not one per POST
    assert_invariant(exporter.stats())


def test_one_in_flight_when_configured(server: FakeCmdrData, exporters: list[Any]) -> None:
    exporter = http_exporter(exporters, server.url, max_in_flight=1)
    for i in range(20):
        exporter.record(make_event(i))
    assert exporter.flush(30) == (20, 0)
    assert max_overlap(server) == 1


def test_errors_shrink_the_window_and_successes_grow_it_back() -> None:
    health = Health(max_in_flight=16, backoff=Backoff(base=0.001, cap=0.001))
    assert health.allowed(0.0) == 16
    health.on_retry(0.0, None)
    assert health.window == 8 and health.allowed(0.0) == 0  # paused
    assert health.allowed(1.0) == 1  # after the pause: one probe at a time
    health.on_success()
    assert health.allowed(1.0) == 8
    for _ in range(8):
        health.on_success()
    assert health.window == 9  # one more per window of successes
    health.on_retry(2.0, retry_after=30.0)
    assert health.allowed(2.0, exiting=True) == 0  # the server's Retry-After holds even at exit
    assert health.pause_end(exiting=True) == 32.0


def test_auth_pause_starts_at_5_s_and_doubles_to_5_min() -> None:
    assert [auth_delay(n) for n in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert auth_delay(20) == 300.0
    health = Health()
    assert health.on_auth(0.0, None) == 5.0
    assert health.allowed(4.9) == 0 and health.allowed(5.0) == 1  # one probe at a time


def test_a_401_window_of_3_s_resumes_within_10_s(server: FakeCmdrData, exporters: list[Any]) -> None:
    server.set_default(Reply(401))
    exporter = http_exporter(exporters, server.url)
    for i in range(30):
        exporter.record(make_event(i))
    assert server.wait_for_requests(1, 10)
    time.sleep(3.0)
    server.set_default(Reply(200))
    window_end = time.monotonic()
    assert exporter.flush(15) == (30, 0)
    assert time.monotonic() - window_end < 10  # the first release waited 5 minutes
    refused = [r for r in server.received if r.reply.status == 401]
    probes = [r for r in refused if r.time > refused[0].time + 1.0]  # after the first moment's requests
    assert len(probes) <= 2  # pauses of 5 s then 10 s, one probe at a time: not a storm
    assert exporter.stats()["dropped"] == {}


# ---- 2. write-ahead, small queues, kill -9 ---------------------------------------------------------


def test_queue_size_50_with_a_spool_drops_nothing(
    server: FakeCmdrData, exporters: list[Any], tmp_path: Path
) -> None:
    exporter = http_exporter(exporters, server.url, queue_size=50, spool=Spool(tmp_path))
    for i in range(1000):
        exporter.record(make_event(i))
        if i % 25 == 0:
            time.sleep(0.005)  # an application does work between calls
    assert exporter.flush(60)[1] == 0
    stats = exporter.stats()
    assert stats["dropped"] == {} and stats["delivered"] == 1000
    assert len(server.stored) == 1000
    assert_invariant(stats)


def test_queue_size_50_without_a_spool_counts_what_it_drops(
    server: FakeCmdrData, exporters: list[Any]
) -> None:
    exporter = http_exporter(exporters, server.url, queue_size=50)
    for i in range(400):
        exporter.record(make_event(i))
    exporter.flush(30)
    stats = exporter.stats()
    assert stats["dropped"].get("queue_full", 0) > 0  # no disk: the newest are dropped, and counted
    assert stats["delivered"] + stats["dropped"]["queue_full"] == 400
    assert_invariant(stats)


KILL_CHILD = """
import os, sys, time
sys.path.insert(0, os.environ["REPO"])
from tests.support import make_event
from cmdrdata_autopatch.exporter import BackgroundExporter
from cmdrdata_autopatch.httptransport import HttpTransport
from cmdrdata_autopatch.spool import Spool
exporter = BackgroundExporter(HttpTransport("tk-kill-9", os.environ["URL"]), spool=Spool(os.environ["SPOOL"]))
i = 0
while True:
    event = make_event(i)
    exporter.record(event)
    print("ID", event.event_id, time.time(), flush=True)
    i += 1
    time.sleep(0.002)
"""


@POSIX
def test_kill_9_loses_at_most_the_write_ahead_window(tmp_path: Path) -> None:
    with FakeCmdrData() as down:
        url = down.url  # nobody listens: everything must survive on disk
    proc = start_python(
        KILL_CHILD, {"URL": url, "SPOOL": str(tmp_path), "REPO": str(Path(__file__).parents[1])}
    )
    recorded: list[tuple[str, float]] = []
    assert proc.stdout is not None
    while len(recorded) < 400:
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        _, event_id, stamp = line.split()
        recorded.append((event_id, float(stamp)))
    killed_at = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    on_disk = set()
    for segment in tmp_path.glob("*.jsonl"):
        for raw in segment.read_bytes().split(b"\n"):
            try:
                on_disk.add(json.loads(raw)["event_id"])
            except ValueError:
                pass
    old_enough = {event_id for event_id, stamp in recorded if stamp < killed_at - 0.5}
    assert len(old_enough) > 100
    assert old_enough <= on_disk  # the first release lost the last second (50 of 250)


# ---- 4. short runs drain the spool, with no re-sends -----------------------------------------------

SHORT_RUN = """
import os, sys
sys.path.insert(0, os.environ["REPO"])
from tests.support import make_event
import cmdrdata_autopatch as cmdrdata
cmdrdata.patch()
exporter = cmdrdata.get_exporter()
for i in range(int(os.environ["N"])):
    exporter.record(make_event(i))
cmdrdata.flush(10)
"""


@POSIX
def test_four_short_runs_empty_a_400_event_spool_with_no_resends(
    server: FakeCmdrData, tmp_path: Path
) -> None:
    with FakeCmdrData() as down:
        dead_url = down.url
    repo = str(Path(__file__).parents[1])
    common = {"CMDRDATA_API_KEY": KEY, "CMDRDATA_SPOOL_DIR": str(tmp_path), "REPO": repo}
    outage = run_python(
        SHORT_RUN, {**common, "CMDRDATA_ENDPOINT": dead_url, "N": "400", "CMDRDATA_EXIT_TIMEOUT": "0.3"}
    )
    assert "400 saved" in outage.stderr, outage.stderr
    partition = next(p for p in tmp_path.iterdir() if p.is_dir())
    # the same key and endpoint partition the spool: the next runs point at the live server
    os.rename(partition, tmp_path / partition_for(server.url))
    sent_by_run = []
    for _ in range(4):
        before = len(server.received)
        run = run_python(
            SHORT_RUN, {**common, "CMDRDATA_ENDPOINT": server.url, "N": "5", "CMDRDATA_EXIT_TIMEOUT": "0.6"}
        )
        assert run.returncode == 0, run.stderr
        sent_by_run.append(len(server.received) - before)
    assert len(server.stored) == 400 + 4 * 5, sent_by_run
    assert all(count == 1 for count in server.stored.values())  # nothing was sent twice
    assert not list(tmp_path.rglob("*.jsonl")), sent_by_run  # the spool is empty


def partition_for(url: str) -> str:
    from cmdrdata_autopatch.spool import partition_name

    return partition_name(url, KEY)


# ---- 2. a nearly full disk: partial spills, the right reason ---------------------------------------

FULL_DISK_CHILD = """
import os, resource, signal, sys
sys.path.insert(0, os.environ["REPO"])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails with EFBIG instead
limit = int(os.environ["LIMIT"])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from tests.support import make_event
import cmdrdata_autopatch as cmdrdata
cmdrdata.patch()
exporter = cmdrdata.get_exporter()
for i in range(200):
    exporter.record(make_event(i))
"""


@POSIX
def test_a_nearly_full_disk_keeps_what_fits_and_names_the_reason(tmp_path: Path) -> None:
    """A real limit from the kernel (RLIMIT_FSIZE: writes past it fail with EFBIG, as on a full disk)."""
    with FakeCmdrData() as down:
        dead_url = down.url
    env = {
        "CMDRDATA_API_KEY": KEY,
        "CMDRDATA_ENDPOINT": dead_url,
        "CMDRDATA_SPOOL_DIR": str(tmp_path),
        "CMDRDATA_EXIT_TIMEOUT": "0.3",
        "LIMIT": str(40 * 1024),
        "REPO": str(Path(__file__).parents[1]),
    }
    child = run_python(FULL_DISK_CHILD, env)
    lines = [line for p in tmp_path.rglob("*.jsonl") for line in p.read_bytes().split(b"\n") if line]
    assert 0 < len(lines) < 200  # a partial spill, not all-or-nothing
    assert all(json.loads(line)["event_id"] for line in lines)  # no torn line
    assert f"{len(lines)} saved" in child.stderr, child.stderr
    assert f"{200 - len(lines)} lost in this run (disk_full=" in child.stderr  # not blamed on exit_timeout


# ---- 5. counting and bad input -----------------------------------------------------------------------


def test_exit_line_counts_every_loss_of_the_process_lifetime(
    server: FakeCmdrData, capsys: pytest.CaptureFixture[str]
) -> None:
    exporter = BackgroundExporter(
        HttpTransport(KEY, server.url), queue_size=10, flush_interval=0.05, register_exit=False
    )
    for i in range(60):
        exporter.record(make_event(i))  # a burst: drops while it runs, long before exit
    dropped = exporter.stats()["dropped"]["queue_full"]
    assert dropped > 0
    exporter.exit_drain()
    err = capsys.readouterr().err
    assert f"{dropped} lost in this run (queue_full={dropped})" in err


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999", "Infinity"])
def test_non_finite_settings_are_rejected(value: str) -> None:
    # a keyword raises; an environment value (a tuning setting) is a note and the default is used
    with pytest.raises(ConfigError, match="exit_timeout"):
        load_settings({}, exit_timeout=value)
    with pytest.raises(ConfigError, match="flush_interval"):
        load_settings({}, flush_interval=value)
    settings = load_settings({"CMDRDATA_EXIT_TIMEOUT": value, "CMDRDATA_FLUSH_INTERVAL": value})
    assert (settings.exit_timeout, settings.flush_interval) == (2.0, 0.1)
    assert sorted(note.split("=")[0] for note in settings.notes) == [
        "CMDRDATA_EXIT_TIMEOUT",
        "CMDRDATA_FLUSH_INTERVAL",
    ]


def test_new_settings_are_validated() -> None:
    settings = load_settings(
        {"CMDRDATA_MAX_IN_FLIGHT": "4", "CMDRDATA_WRITE_AHEAD": "off", "CMDRDATA_SPOOL_FSYNC": "always"}
    )
    assert (settings.max_in_flight, settings.write_ahead, settings.spool_fsync) == (4, False, "always")
    for env in (
        {"CMDRDATA_MAX_IN_FLIGHT": "0"},
        {"CMDRDATA_MAX_IN_FLIGHT": "1000"},
        {"CMDRDATA_SPOOL_FSYNC": "x"},
    ):
        notes = load_settings(env).notes
        assert len(notes) == 1 and notes[0].startswith(next(iter(env))) and "using the default" in notes[0]
    with pytest.raises(ConfigError, match="max_in_flight"):
        load_settings({}, max_in_flight=0)


def test_nan_metadata_is_a_value_error_at_the_call_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"plan.*score.*non-finite"):
        snapshot_metadata({"plan": {"score": math.nan}})
    with pytest.raises(ValueError, match=r"ratio.*non-finite"), customer("acme", ratio=math.inf):
        pass
    assert snapshot_metadata({"ok": 1.5}) == {"ok": 1.5}


def test_long_values_are_cut_in_error_messages() -> None:
    with pytest.raises(ValueError) as info:
        validate_customer_id("x" * 10_000)
    message = str(info.value)
    assert len(message) < 300 and "10,000 characters" in message
    with pytest.raises(ConfigError) as config_info:
        load_settings({"CMDRDATA_EXPORTER": "y" * 5000})
    assert len(str(config_info.value)) < 300


def test_an_event_that_cannot_be_serialized_is_dropped_as_invalid(
    server: FakeCmdrData, exporters: list[Any]
) -> None:
    class NotJson:
        event_id = "00000000-0000-4000-8000-000000000000"

        def to_json(self) -> bytes:
            raise ValueError("Out of range float values are not JSON compliant")

    exporter = http_exporter(exporters, server.url)
    assert exporter.record(NotJson())
    exporter.record(make_event(1))
    assert exporter.flush(10) == (1, 0)
    stats = exporter.stats()
    assert stats["dropped"] == {"invalid": 1}
    assert_invariant(stats)
    assert eventually(lambda: exporter.threads() != [], 1)  # the threads survived it


# ---- 6. the pieces, alone ---------------------------------------------------------------------------


def test_ready_queue_owns_its_counts() -> None:
    from cmdrdata_autopatch.pending import Item, ReadyQueue

    queue = ReadyQueue()
    a, b, c = Item("a", b"xx"), Item("b", b"yyy", local=False), Item("c", b"z")
    queue.push(a)
    queue.push(b)
    queue.push_front(c)
    assert (len(queue), queue.local, queue.bytes) == (3, 2, 6)
    assert queue.pop() is c and queue.pop_newest() is b
    assert (len(queue), queue.local, queue.bytes) == (1, 1, 2)
    queue.push(c)
    assert queue.take(lambda item: item.event_id == "a") == [a]
    assert (list(queue), queue.local, queue.bytes) == ([c], 1, 1)


@pytest.mark.parametrize("policy", ["always", "interval", "off"])
def test_every_fsync_policy_writes_ahead_and_delivers(
    server: FakeCmdrData, exporters: list[Any], tmp_path: Path, policy: str
) -> None:
    exporter = http_exporter(exporters, server.url, spool=Spool(tmp_path, fsync=policy))
    for i in range(50):
        exporter.record(make_event(i))
    assert exporter.flush(30)[1] == 0
    stats = exporter.stats()
    assert stats["written_ahead"] == 50 and stats["delivered"] == 50
    exporter.shutdown(1)
    assert not list(tmp_path.glob("*.jsonl"))  # all acknowledged: segment and ack log gone


def test_write_ahead_off_keeps_events_in_memory_until_they_overflow(
    server: FakeCmdrData, exporters: list[Any], tmp_path: Path
) -> None:
    exporter = http_exporter(exporters, server.url, spool=Spool(tmp_path), write_ahead=False)
    for i in range(20):
        exporter.record(make_event(i))
    assert exporter.flush(30)[1] == 0
    assert exporter.stats()["written_ahead"] == 0
    assert not list(tmp_path.glob("*.jsonl"))


@POSIX
def test_cmdrdata_signals_off_leaves_sigterm_alone(server: FakeCmdrData, tmp_path: Path) -> None:
    code = """
import os, signal, sys
sys.path.insert(0, os.environ["REPO"])
import cmdrdata_autopatch as cmdrdata
cmdrdata.patch()
print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, flush=True)
"""
    env = {
        "CMDRDATA_API_KEY": KEY,
        "CMDRDATA_ENDPOINT": server.url,
        "CMDRDATA_SPOOL_DIR": str(tmp_path),
        "REPO": str(Path(__file__).parents[1]),
    }
    assert run_python(code, {**env, "CMDRDATA_SIGNALS": "off"}).stdout.strip() == "True"
    assert run_python(code, env).stdout.strip() == "False"  # ours, chained to the default
