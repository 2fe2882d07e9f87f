"""The GIL convoy that bounds issue 9's busy-caller target, reproduced without openai or this package.

    python benchmarks/gil_convoy.py            # a table
    python benchmarks/gil_convoy.py --json

A caller thread spends ~500 µs per "call" on pure Python work and releases the GIL briefly once per call, as
the `openai` client does (`os.urandom` for the idempotency key: one `getrandom` syscall). Beside it, a
second thread that is not ours wakes every 200 ms for ~10 µs of work (the "waker"), or every 50 ms for
2.6 ms (the "worker": the duty of the exporter's intake, 100 events x ~26 µs of serialization). Measured:
the caller's wall and own CPU per call alone and beside each, the same with a caller that never releases
the GIL, and how often the thread got to run. On CPython with the GIL and more than one core, a thread
waiting for the GIL is starved by the brief releases (each one wakes it, it finds the GIL taken again, and
its 5 ms switch interval starts over) and the caller pays for every wake-up. Linux: `--pin` runs everything
on one CPU, which removes the cross-core part.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from typing import Any, Optional

WORK_S = 0.0005
BLOCK_S = 1.0
THREADS = {"waker": (0.2, 0.00001), "worker": (0.05, 0.0026)}  # (period, work) in seconds


def caller(release: bool, seconds: float = BLOCK_S) -> tuple[float, float]:
    """(wall, own CPU) µs per call over `seconds`: ~500 µs of bytecode, then (optionally) one brief GIL
    release, as `os.urandom` in the `openai` client."""
    calls = 0
    started, cpu = time.perf_counter(), time.thread_time()
    while time.perf_counter() - started < seconds:
        until = time.perf_counter() + WORK_S
        while time.perf_counter() < until:
            pass
        if release:
            os.urandom(16)
        calls += 1
    return (time.perf_counter() - started) / calls * 1e6, (time.thread_time() - cpu) / calls * 1e6


class Waker:
    """A thread that wakes every `period` seconds for `work` seconds of Python, counting the times it ran."""

    def __init__(self, period: float, work: float) -> None:
        self.period, self.work = period, work
        self.stop = threading.Event()
        self.ran = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.period):
            self.ran += 1
            until = time.perf_counter() + self.work
            while time.perf_counter() < until:
                pass

    def close(self) -> int:
        ran = self.ran
        self.stop.set()
        self.thread.join(5)
        return ran


def run(rounds: int) -> dict[str, Any]:
    samples: dict[str, list[tuple[float, float, int]]] = {}
    for _ in range(rounds):
        for release in (True, False):
            for name in ("alone", *THREADS):
                thread: Optional[Waker] = Waker(*THREADS[name]) if name in THREADS else None
                wall, cpu = caller(release)
                ran = thread.close() if thread is not None else 0
                samples.setdefault(f"{name}{'' if release else '_no_release'}", []).append((wall, cpu, ran))
    out: dict[str, Any] = {
        key: {
            "wall_us": statistics.median(s[0] for s in rows),
            "cpu_us": statistics.median(s[1] for s in rows),
            "ran": statistics.median(s[2] for s in rows),
        }
        for key, rows in samples.items()
    }
    out["python"] = platform.python_version() + (" (free-threaded)" if _free_threaded() else "")
    out["cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return out


def _free_threaded() -> bool:
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return is_enabled is not None and not is_enabled()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pin", action="store_true", help="run on one CPU (Linux)")
    args = parser.parse_args()
    if args.pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    r = run(args.rounds)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(
        f"Python {r['python']}, {r['cpus']} CPU(s) usable; medians of {args.rounds} blocks of {BLOCK_S:.0f} s"
    )
    for suffix, caller_kind in (
        ("", "releasing the GIL once per call"),
        ("_no_release", "never releasing it"),
    ):
        alone = r["alone" + suffix]
        print(f"caller {caller_kind}: alone {alone['wall_us']:.1f} us/call")
        for name, (period, work) in THREADS.items():
            row = r[name + suffix]
            print(
                f"  beside a thread doing {work * 1e6:.0f} us every {period * 1000:.0f} ms: "
                f"wall {row['wall_us'] - alone['wall_us']:+.1f} us/call, "
                f"the caller's own CPU {row['cpu_us'] - alone['cpu_us']:+.1f}; "
                f"the thread ran {row['ran']:.0f} of {BLOCK_S / period:.0f} times"
            )


if __name__ == "__main__":
    main()
