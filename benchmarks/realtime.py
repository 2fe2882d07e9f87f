"""What observing a WebSocket session costs per server event: `parse_event` bare vs patched, in one run.

    python benchmarks/realtime.py [--events 50000]

Realtime audio sessions are dominated by small delta events (`response.output_audio.delta`), which we
only look at (their type is not billable); a `response.done` is where we build and record an event. The
connection is the SDK's own `RealtimeConnection` (GA if present, else beta) around a socket that is never
used: `parse_event` does not touch it. Numbers are per event, the best of 7 alternating rounds; the
ratio is against the bare SDK's `parse_event` in the same process.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cmdrdata_autopatch as cmdrdata


def connection_class() -> Any:
    for module in ("openai.resources.realtime.realtime", "openai.resources.beta.realtime.realtime"):
        try:
            return importlib.import_module(module).RealtimeConnection
        except (ImportError, AttributeError):
            continue
    raise SystemExit("this openai has no Realtime")


def payloads() -> dict[str, bytes]:
    delta = {
        "type": "response.output_audio.delta",
        "event_id": "event_1",
        "response_id": "resp_1",
        "item_id": "item_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "AAAA" * 600,
    }
    done = {
        "type": "response.done",
        "event_id": "event_2",
        "response": {
            "id": "resp_1",
            "object": "realtime.response",
            "status": "completed",
            "output": [],
            "usage": {
                "total_tokens": 541,
                "input_tokens": 521,
                "output_tokens": 20,
                "input_token_details": {"text_tokens": 292, "audio_tokens": 229, "cached_tokens": 128},
                "output_token_details": {"text_tokens": 5, "audio_tokens": 15},
            },
        },
    }
    return {"audio delta": json.dumps(delta).encode(), "response.done": json.dumps(done).encode()}


def per_event(cls: Any, data: bytes, n: int, fresh_ids: bool) -> float:
    """Seconds per `parse_event` call over `n` calls (each response.done with its own response id)."""
    conn = cls.__new__(cls)  # parse_event reads nothing from the instance
    blobs = (
        [data.replace(b"resp_1", uuid.uuid4().hex.encode()) for _ in range(n)] if fresh_ids else [data] * n
    )
    start = time.perf_counter()
    for blob in blobs:
        conn.parse_event(blob)
    return (time.perf_counter() - start) / n


def ab(cls: Any, data: bytes, n: int, fresh_ids: bool, rounds: int = 7) -> tuple[float, float]:
    """Bare and patched, alternating round by round (the machine is shared): the best round of each."""
    bare, watched = [], []
    for _ in range(rounds):
        bare.append(per_event(cls, data, n, fresh_ids))
        cmdrdata.patch(exporter="memory")
        try:
            watched.append(per_event(cls, data, n, fresh_ids))
        finally:
            cmdrdata.unpatch()
    return min(bare), min(watched)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    import openai

    cls = connection_class()
    print(f"openai {openai.__version__}, python {sys.version.split()[0]}, {cls.__module__}.{cls.__name__}")
    for name, data in payloads().items():
        n = args.events if name == "audio delta" else max(1, args.events // 10)
        fresh = name == "response.done"  # each response is billed once: new ids, or the dedupe would skip
        bare, watched = ab(cls, data, n, fresh)
        print(
            f"{name:14s} bare {bare * 1e6:8.2f} us  patched {watched * 1e6:8.2f} us  "
            f"added {(watched - bare) * 1e6:7.2f} us  ratio {watched / bare:5.2f}x"
        )


if __name__ == "__main__":
    main()
