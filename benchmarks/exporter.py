"""Exporter benchmark: what `record()` costs the application, and what delivery can sustain.

    python benchmarks/exporter.py           # a readable table
    python benchmarks/exporter.py --json    # one JSON object

Measures, against a loopback fake CmdrData server (tests/cmdrdata_server.py):
- `record()` cost (median and p99, µs) with the backend healthy, and with the backend hanging;
- delivered events per second to the loopback server (one POST per event, one keep-alive connection);
- peak traced memory (tracemalloc) after 100,000 recorded events with the backend down (nothing listening).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import tracemalloc
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cmdrdata_autopatch.events import UsageEvent  # noqa: E402
from cmdrdata_autopatch.exporter import BackgroundExporter  # noqa: E402
from cmdrdata_autopatch.httptransport import HttpTransport  # noqa: E402
from tests.cmdrdata_server import FakeCmdrData, Reply  # noqa: E402

KEY = "tk-benchmark-key"


def make_event(i: int) -> UsageEvent:
    event = UsageEvent("chat.completions", time.time(), 0.25, customer_id="acme", metadata={"plan": "pro"})
    event.model = "gpt-4o-mini"
    event.input_tokens = 120
    event.output_tokens = i % 500
    event.total_tokens = 120 + i % 500
    return event


def exporter_for(url: str, **kwargs: Any) -> BackgroundExporter:
    transport = HttpTransport(KEY, url, connect_timeout=1.0, read_timeout=30.0)
    return BackgroundExporter(transport, register_exit=False, **kwargs)


def record_cost(exporter: BackgroundExporter, n: int, pace_every: int = 0) -> dict[str, float]:
    events = [make_event(i) for i in range(n)]
    samples = []
    clock = time.perf_counter_ns
    for i, event in enumerate(events):
        t0 = clock()
        exporter.record(event)
        samples.append(clock() - t0)
        if pace_every and i % pace_every == 0:
            time.sleep(0.001)  # an application does work between OpenAI calls
    samples.sort()
    return {
        "median_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
        "max_us": samples[-1] / 1000,
    }


def bench_healthy(n: int) -> dict[str, Any]:
    with FakeCmdrData() as server:
        exporter = exporter_for(server.url)
        cost = record_cost(exporter, n, pace_every=50)
        exporter.flush(120)
        exporter.shutdown(1)
    return cost


def bench_hanging(n: int) -> dict[str, Any]:
    with FakeCmdrData(default=Reply(hang=True)) as server:
        exporter = exporter_for(server.url)
        cost = record_cost(exporter, n, pace_every=50)
        stats = exporter.stats()
        exporter.shutdown(0.1)
        server.release()
    cost["accepted"] = stats["recorded"] - sum(stats["dropped"].values())
    cost["dropped"] = sum(stats["dropped"].values())
    return cost


def bench_throughput(n: int) -> dict[str, Any]:
    with FakeCmdrData() as server:
        exporter = exporter_for(server.url, queue_size=n + 1)
        exporter.record(make_event(0))
        exporter.flush(10)  # connection and threads warm
        events = [make_event(i) for i in range(n)]
        started = time.perf_counter()
        for event in events:
            exporter.record(event)
        delivered, pending = exporter.flush(300)
        elapsed = time.perf_counter() - started
        exporter.shutdown(1)
    return {
        "events": n,
        "delivered": delivered,
        "pending": pending,
        "seconds": elapsed,
        "events_per_s": n / elapsed,
    }


def bench_memory(n: int) -> dict[str, Any]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exporter = exporter_for(f"http://127.0.0.1:{port}/api/events")
    tracemalloc.start()
    try:
        for i in range(n):
            exporter.record(make_event(i))
            if i % 1000 == 0:
                time.sleep(0.001)
        exporter.flush(1.0)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stats = exporter.stats()
    exporter.shutdown(0.1)
    return {
        "recorded": stats["recorded"],
        "queued": stats["queued"] + stats["in_flight"],
        "dropped": sum(stats["dropped"].values()),
        "queued_bytes": stats["queued_bytes"],
        "peak_mib": peak / 2**20,
        "current_mib": current / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--events", type=int, default=20_000, help="events for the record() cost runs")
    args = parser.parse_args()
    results = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "record_healthy": bench_healthy(args.events),
        "record_hanging": bench_hanging(args.events),
        "throughput": bench_throughput(5_000),
        "memory_backend_down_100k": bench_memory(100_000),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    h, g, t, m = (
        results["record_healthy"],
        results["record_hanging"],
        results["throughput"],
        results["memory_backend_down_100k"],
    )
    print(f"python {results['python']}, {results['cpus']} cpus")
    print(f"record() backend healthy : median {h['median_us']:.2f} us, p99 {h['p99_us']:.2f} us")
    print(
        f"record() backend hanging : median {g['median_us']:.2f} us, p99 {g['p99_us']:.2f} us "
        f"({g['accepted']} accepted, {g['dropped']} dropped: queue full)"
    )
    print(
        f"delivery to loopback     : {t['events_per_s']:.0f} events/s "
        f"({t['delivered']} in {t['seconds']:.2f} s)"
    )
    print(
        f"memory, backend down     : peak {m['peak_mib']:.1f} MiB after {m['recorded']:,} events "
        f"({m['queued']:,} queued, {m['dropped']:,} dropped)"
    )


if __name__ == "__main__":
    main()
