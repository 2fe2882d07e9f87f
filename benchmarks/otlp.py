"""OTLP exporter benchmark: what `record()` costs the application, and what export can sustain.

    python benchmarks/otlp.py           # a readable table
    python benchmarks/otlp.py --json    # one JSON object

Measures, against the loopback OTLP/HTTP receiver of the tests (tests/otlp_receiver.py, which decodes every
request with opentelemetry-proto, so the throughput is a floor):
- `record()` cost (median and p99, µs) of `OtlpExporter` beside `MemoryExporter` (a list append: the floor)
  and the delivery pipeline's `record()` (to a transport that discards), in the same run, with the ratio;
- `record()` cost while the Collector hangs (the queue fills; nothing waits);
- exported events per second (batches of 512, one worker thread).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cmdrdata_autopatch.events import UsageEvent  # noqa: E402
from cmdrdata_autopatch.exporter import MemoryExporter  # noqa: E402
from cmdrdata_autopatch.otlp import OtlpExporter  # noqa: E402
from cmdrdata_autopatch.pipeline import DeliveryPipeline  # noqa: E402
from cmdrdata_autopatch.transports import DELIVERED, SendResult  # noqa: E402
from tests.otlp_receiver import OtlpReceiver  # noqa: E402


class Discard:
    """A transport that accepts everything at once (the pipeline's own cost, no I/O)."""

    def send(self, event_id: str, body: bytes, timeout: Any = None) -> SendResult:
        return DELIVERED

    def close(self) -> None:
        return None


def make_event(i: int) -> UsageEvent:
    event = UsageEvent("chat.completions", time.time(), 0.25, customer_id="acme", metadata={"plan": "pro"})
    event.model = "gpt-4o-mini"
    event.input_tokens = 120
    event.output_tokens = i % 500
    event.total_tokens = 120 + i % 500
    return event


def record_cost(exporter: Any, n: int) -> dict[str, float]:
    events = [make_event(i) for i in range(n)]
    samples = []
    clock = time.perf_counter_ns
    for event in events:
        t0 = clock()
        exporter.record(event)
        samples.append(clock() - t0)
    samples.sort()
    median, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99)]
    return {"median_us": median / 1000, "p99_us": p99 / 1000}


def use(receiver: OtlpReceiver) -> None:
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
    os.environ["OTEL_EXPORTER_OTLP_TIMEOUT"] = "30"


def run(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"events": n}
    out["memory"] = record_cost(MemoryExporter(), n)
    pipeline = DeliveryPipeline(Discard(), register_exit=False, queue_size=n * 2)
    out["pipeline"] = record_cost(pipeline, n)
    with OtlpReceiver() as receiver:
        use(receiver)
        exporter = OtlpExporter(register_exit=False, queue_size=n * 2)
        started = time.perf_counter()
        out["otlp"] = record_cost(exporter, n)
        exporter.flush(120)
        elapsed = time.perf_counter() - started
        out["otlp_exported"] = exporter.stats()["exported"]
        out["otlp_events_per_s"] = round(out["otlp_exported"] / elapsed)
    with OtlpReceiver(hang=True) as receiver:
        use(receiver)
        exporter = OtlpExporter(register_exit=False, queue_size=n // 2)
        out["otlp_collector_hanging"] = record_cost(exporter, n)
        out["otlp_hanging_dropped"] = exporter.stats()["dropped"]
    out["ratio_otlp_to_memory"] = round(out["otlp"]["median_us"] / max(out["memory"]["median_us"], 1e-3), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.events)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"record() cost over {args.events} events (µs)      median     p99")
    for name in ("memory", "pipeline", "otlp", "otlp_collector_hanging"):
        print(f"  {name:<28} {result[name]['median_us']:>12.2f} {result[name]['p99_us']:>8.2f}")
    print(f"otlp / memory (median): {result['ratio_otlp_to_memory']}x")
    rate = result["otlp_events_per_s"]
    print(f"exported: {result['otlp_exported']} at {rate} events/s (loopback receiver)")
    print(f"dropped while the collector hangs (queue {args.events // 2}): {result['otlp_hanging_dropped']}")


if __name__ == "__main__":
    main()
