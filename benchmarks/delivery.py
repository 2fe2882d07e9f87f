"""Delivery benchmark (issue 9): what delivering an event costs, how fast it goes, how long the exit takes.

    python benchmarks/delivery.py            # a readable table
    python benchmarks/delivery.py --json     # one JSON object
    python benchmarks/delivery.py --docs     # also write the section of docs/performance.md

The fake CmdrData (tests/cmdrdata_server.py) runs in a *separate process* with a fixed added latency per
answer (the RTT), so the CPU measured here is ours alone. Measures:

- process CPU per delivered event, the caller idle (record + serialize + write-ahead + POST + ack), and
  where it goes (each stage timed alone; httpx against http.client for the same POST);
- an application busy making OpenAI calls (a real `openai` client over an in-memory transport), in blocks
  of >= 1 s that end with `flush()` so delivery falls inside the measurement: wall time per call bare,
  with the memory exporter and with the HTTP exporter (and the process CPU per call);
- an application that waits on OpenAI as real ones do (the in-memory transport sleeps 2 ms and 20 ms per
  call): the same comparison, where the delivery work can overlap the caller's waits;
- events/s delivered at RTT 0, 50, 100 and 250 ms (16 in flight);
- exit-drain time of 100, 500 and 2,000 events at 50 ms;
- `record()` p50/p99 while the senders are busy; peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks._common import CannedOpenAI, env_line, environment, median, write_docs_section  # noqa: E402
from cmdrdata_autopatch.exporter import BackgroundExporter  # noqa: E402
from cmdrdata_autopatch.httptransport import HttpTransport  # noqa: E402
from cmdrdata_autopatch.spool import Spool  # noqa: E402
from tests.support import make_event  # noqa: E402

KEY = "tk-benchmark-key-0001"
SERVER = """
import sys, time
sys.path.insert(0, {root!r})
from tests.cmdrdata_server import FakeCmdrData
server = FakeCmdrData(latency=float(sys.argv[1])).start()
print(server.url, flush=True)
sys.stdin.read()
"""


class RemoteServer:
    """The fake CmdrData in a child process (its CPU is not ours)."""

    def __init__(self, latency: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER.format(root=ROOT), str(latency)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def __enter__(self) -> RemoteServer:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.kill()
        self.proc.wait(10)


def thread_cpu() -> dict[int, float]:
    """CPU seconds of each thread of this process (Linux: /proc/self/task/*/schedstat, ns resolution;
    /proc's tick-based stat cannot see a sender thread that runs 20 µs at a time). Empty elsewhere."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            pass
    return out


def split_by_thread(before: dict[int, float], after: dict[int, float], calls: int) -> dict[str, float]:
    """µs of CPU per call for the application's thread, the intake thread and the senders together."""
    import threading

    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    out = {"app": 0.0, "intake": 0.0, "senders": 0.0}
    for tid, seconds in after.items():
        name = names.get(tid, "")
        group = "app" if name == "MainThread" else "intake" if name == "cmdrdata-intake" else "senders"
        if group == "senders" and not name.startswith("cmdrdata-sender"):
            continue  # a thread of something else (none expected)
        out[group] += (seconds - before.get(tid, 0.0)) / calls * 1e6
    return out


def pipeline(url: str, **kwargs: Any) -> BackgroundExporter:
    kwargs.setdefault("register_exit", False)
    kwargs.setdefault("spool", Spool(tempfile.mkdtemp(prefix="cmdrdata-bench-")))
    return BackgroundExporter(HttpTransport(KEY, url, read_timeout=30.0), **kwargs)


def warm(exporter: BackgroundExporter) -> None:
    for i in range(32):
        exporter.record(make_event(i))
    exporter.flush(30)


def cpu_per_event(url: str, n: int) -> dict[str, float]:
    exporter = pipeline(url)
    warm(exporter)
    events = [make_event(i) for i in range(n)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for event in events:
        exporter.record(event)
    _, pending = exporter.flush(300)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    exporter.shutdown(1)
    assert pending == 0, pending
    return {"events": n, "cpu_us_per_event": cpu / n * 1e6, "seconds": wall, "events_per_s": n / wall}


def stage_costs(url: str, n: int = 2000) -> dict[str, float]:
    """Each stage of one delivered event, timed alone (process CPU, µs per event)."""
    import httpx

    events = [make_event(i) for i in range(n)]
    t0 = time.process_time()
    bodies = [(e.event_id, e.to_json()) for e in events]
    serialize = (time.process_time() - t0) / n * 1e6
    spool = Spool(tempfile.mkdtemp(prefix="cmdrdata-bench-"))
    t0 = time.process_time()
    entries = []
    for i in range(0, n, 100):
        entries += spool.append(bodies[i : i + 100], keep=True).entries
    write_ahead = (time.process_time() - t0) / n * 1e6
    t0 = time.process_time()
    for entry in entries:
        spool.ack(entry)
    ack = (time.process_time() - t0) / n * 1e6
    spool.seal()
    transport = HttpTransport(KEY, url)
    for event_id, body in bodies[:50]:
        transport.send(event_id, body)
    t0 = time.process_time()
    for event_id, body in bodies:
        transport.send(event_id, body)
    post_stdlib = (time.process_time() - t0) / n * 1e6
    t0 = time.process_time()
    for i in range(0, n, 32):
        transport.send_many(bodies[i : i + 32])
    post_pipelined = (time.process_time() - t0) / n * 1e6
    transport.close()
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    post_parse = _post_http_client_parser(parts.hostname or "127.0.0.1", parts.port or 80, parts.path, bodies)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    def post(event_id: str, body: bytes) -> None:
        conn.request("POST", parts.path, body, {**headers, "Idempotency-Key": event_id})
        conn.getresponse().read()

    for event_id, body in bodies[:50]:
        post(event_id, body)
    t0 = time.process_time()
    for event_id, body in bodies:
        post(event_id, body)
    post_request = (time.process_time() - t0) / n * 1e6
    conn.close()
    with httpx.Client(
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    ) as client:
        for event_id, body in bodies[:50]:
            client.post(url, content=body, headers={"Idempotency-Key": event_id}).close()
        t0 = time.process_time()
        for event_id, body in bodies:
            client.post(url, content=body, headers={"Idempotency-Key": event_id}).close()
        post_httpx = (time.process_time() - t0) / n * 1e6
    return {
        "serialize_us": serialize,
        "write_ahead_us": write_ahead,
        "ack_us": ack,
        "post_http_client_us": post_stdlib,
        "post_pipelined_us": post_pipelined,
        "post_http_client_parser_us": post_parse,
        "post_request_us": post_request,
        "post_httpx_us": post_httpx,
    }


def _post_http_client_parser(host: str, port: int, path: str, bodies: list[tuple[str, bytes]]) -> float:
    """The second release's first exchange, for comparison: the head built once, the answer parsed by
    `http.client.HTTPResponse` (its headers through the `email` package). µs of CPU per POST."""
    import http.client

    conn = http.client.HTTPConnection(host, port)
    conn.connect()
    sock = conn.sock
    prefix = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Type: application/json\r\nUser-Agent: bench\r\nAccept-Encoding: identity\r\n"
        "Idempotency-Key: "
    ).encode("latin-1")

    def post(event_id: str, body: bytes) -> None:
        sock.sendall(
            b"".join((prefix, event_id.encode(), b"\r\nContent-Length: %d\r\n\r\n" % len(body), body))
        )
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        response.read()
        response.close()

    for event_id, body in bodies[:50]:
        post(event_id, body)
    t0 = time.process_time()
    for event_id, body in bodies:
        post(event_id, body)
    spent = (time.process_time() - t0) / len(bodies) * 1e6
    conn.close()
    return spent


class NullTransport:
    """Delivers every event at once, without a network: the pipeline's own cost, with nothing to send."""

    pipelining = True

    def send(self, event_id: str, body: bytes, timeout: Any = None) -> Any:
        from cmdrdata_autopatch.transports import DELIVERED

        return DELIVERED

    def send_many(self, batch: Any, timeout: Any = None) -> list[Any]:
        from cmdrdata_autopatch.transports import DELIVERED

        return [DELIVERED] * len(batch)

    def close(self) -> None:
        pass


class WakingThread:
    """The control: a thread that is not ours at all, waking 5 times a second for ~10 µs of Python.

    A caller busy on the CPU that releases the GIL briefly once per call (the `openai` client does: one
    `os.urandom` per request) starves a thread that wants the GIL back: every release signals it, it wakes
    on the other core, finds the GIL taken again and sleeps, and its 5 ms switch interval restarts. The
    caller pays for each of those wake-ups; this row shows what that costs alone."""

    def __init__(self) -> None:
        import threading

        self.stop = threading.Event()
        self.wakes = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            self.wakes += 1
            until = time.thread_time() + 0.00001
            while time.thread_time() < until:
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


BUSY_MODES = ("bare", "memory", "control", "null", "http")


def busy_app(url: str, blocks: int = 5, block_seconds: float = 1.0) -> dict[str, Any]:
    """Wall time per OpenAI call in blocks of >= 1 s ending with flush(): bare, memory, the waking-thread
    control, the pipeline with a transport that sends nothing (null), and the HTTP exporter."""
    import cmdrdata_autopatch as cmdrdata

    canned = CannedOpenAI()
    client = canned.client()
    messages = [{"role": "user", "content": "hi"}]

    def call() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)

    for _ in range(200):
        call()
    results: dict[str, list[float]] = {mode: [] for mode in BUSY_MODES}
    cpu: dict[str, list[float]] = {mode: [] for mode in BUSY_MODES}
    splits: dict[str, list[dict[str, float]]] = {mode: [] for mode in BUSY_MODES}
    spool_dir = tempfile.mkdtemp(prefix="cmdrdata-bench-")
    control_wakes: list[int] = []
    for _ in range(blocks):
        for mode in BUSY_MODES:
            control = WakingThread() if mode == "control" else None
            if mode == "memory":
                cmdrdata.patch(exporter="memory")
            elif mode == "null":
                cmdrdata.patch(exporter=BackgroundExporter(NullTransport(), register_exit=False))
            elif mode == "http":
                cmdrdata.patch(exporter="http", api_key=KEY, endpoint=url, spool_dir=spool_dir)
            calls = 0
            threads0 = thread_cpu()
            cpu0, t0 = time.process_time(), time.perf_counter()
            while time.perf_counter() - t0 < block_seconds:
                for _ in range(50):
                    call()
                calls += 50
            if control is not None:
                control_wakes.append(control.wakes)  # how many times it got the GIL within the block
            if mode in ("memory", "null", "http"):
                cmdrdata.flush(60)  # delivery falls inside the block
            wall = time.perf_counter() - t0
            if control is not None:
                control.close()
            results[mode].append(wall / calls * 1e6)
            cpu[mode].append((time.process_time() - cpu0) / calls * 1e6)
            splits[mode].append(split_by_thread(threads0, thread_cpu(), calls))
            if mode in ("memory", "null", "http"):
                cmdrdata.shutdown(5)
                cmdrdata.unpatch()
    out: dict[str, Any] = {mode: median(values) for mode, values in results.items()}
    out.update({f"{mode}_cpu": median(values) for mode, values in cpu.items()})
    for mode, rows in splits.items():
        if rows and any(row["app"] for row in rows):
            out[f"{mode}_split"] = {key: median([row[key] for row in rows]) for key in rows[0]}
    out["load_average"] = os.getloadavg()[0]
    out["http_added_us"] = out["http"] - out["bare"]
    out["http_added_cpu_us"] = out["http_cpu"] - out["bare_cpu"]
    out["memory_added_cpu_us"] = out["memory_cpu"] - out["bare_cpu"]
    out["memory_added_us"] = out["memory"] - out["bare"]
    out["control_added_us"] = out["control"] - out["bare"]
    out["null_added_us"] = out["null"] - out["bare"]
    out["control_wakes"] = median([float(w) for w in control_wakes])
    out["control_wakes_due"] = block_seconds / 0.2
    out["calls_per_block"] = int(block_seconds / (out["bare"] / 1e6))
    return out


class WaitingOpenAI(CannedOpenAI):
    """The canned OpenAI, answering after `wait` seconds: the caller blocks as on a real round trip."""

    def __init__(self, wait: float) -> None:
        super().__init__()
        self.wait = wait

    def handler(self, request: Any) -> Any:
        time.sleep(self.wait)
        return super().handler(request)


WAITING_MODES = ("bare", "memory", "http")


def waiting_app(url: str, wait: float, blocks: int, block_seconds: float) -> dict[str, Any]:
    """Wall time and the caller thread's CPU per OpenAI call when each call waits `wait` s on the network:
    bare, memory and HTTP exporter, interleaved blocks ending with flush() (delivery inside the block)."""
    import cmdrdata_autopatch as cmdrdata

    client = WaitingOpenAI(wait).client()
    messages = [{"role": "user", "content": "hi"}]
    for _ in range(20):
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    walls: dict[str, list[float]] = {mode: [] for mode in WAITING_MODES}
    app_cpu: dict[str, list[float]] = {mode: [] for mode in WAITING_MODES}
    spool_dir = tempfile.mkdtemp(prefix="cmdrdata-bench-")
    for _ in range(blocks):
        for mode in WAITING_MODES:
            if mode == "memory":
                cmdrdata.patch(exporter="memory")
            elif mode == "http":
                cmdrdata.patch(exporter="http", api_key=KEY, endpoint=url, spool_dir=spool_dir)
            calls = 0
            threads0 = thread_cpu()
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < block_seconds:
                client.chat.completions.create(model="gpt-4o-mini", messages=messages)
                calls += 1
            if mode != "bare":
                cmdrdata.flush(60)
            walls[mode].append((time.perf_counter() - t0) / calls * 1e6)
            app_cpu[mode].append(split_by_thread(threads0, thread_cpu(), calls)["app"])
            if mode != "bare":
                cmdrdata.shutdown(5)
                cmdrdata.unpatch()
    wall = {mode: median(values) for mode, values in walls.items()}
    cpu = {mode: median(values) for mode, values in app_cpu.items()}
    return {
        "wait_ms": wait * 1000,
        "bare": wall["bare"],
        "memory_added_us": wall["memory"] - wall["bare"],
        "http_added_us": wall["http"] - wall["bare"],
        "http_over_memory_us": wall["http"] - wall["memory"],
        "app_cpu_bare": cpu["bare"],
        "app_cpu_http_over_memory_us": cpu["http"] - cpu["memory"],
    }


def throughput(rtt: float, n: int) -> dict[str, float]:
    with RemoteServer(rtt) as server:
        result = cpu_per_event(server.url, n)
    return {"rtt_ms": rtt * 1000, **result}


def exit_drain(n: int, rtt: float = 0.05) -> dict[str, float]:
    with RemoteServer(rtt) as server:
        exporter = pipeline(server.url, exit_timeout=30.0)
        warm(exporter)
        for i in range(n):
            exporter.record(make_event(i))
        t0 = time.perf_counter()
        delivered, saved, lost = exporter.drain(30.0, final=True)
        seconds = time.perf_counter() - t0
    return {"events": n, "seconds": seconds, "delivered": delivered + 0, "saved": saved, "lost": lost}


def record_busy(n: int = 3000) -> dict[str, float]:
    with RemoteServer(0.05) as server:
        exporter = pipeline(server.url)
        warm(exporter)
        samples = []
        clock = time.perf_counter_ns
        for i in range(n):
            event = make_event(i)
            t0 = clock()
            exporter.record(event)
            samples.append(clock() - t0)
            if i % 20 == 0:
                time.sleep(0.001)
        exporter.flush(120)
        exporter.shutdown(1)
    samples.sort()
    return {"p50_us": samples[len(samples) // 2] / 1000, "p99_us": samples[int(len(samples) * 0.99)] / 1000}


def run(quick: bool, busy_only: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {"env": environment()}
    with RemoteServer(0.0) as server:
        results["stages"] = stage_costs(server.url)
        results["cpu_idle"] = cpu_per_event(server.url, 2000 if quick else 5000)
        results["busy"] = busy_app(server.url, blocks=3 if quick else 7)
        results["waiting"] = [
            waiting_app(server.url, 0.002, blocks=3 if quick else 5, block_seconds=1.0),
            waiting_app(server.url, 0.02, blocks=3 if quick else 5, block_seconds=2.0),
        ]
    if busy_only:
        return results
    results["throughput"] = [
        throughput(0.0, 3000),
        throughput(0.05, 1000),
        throughput(0.1, 600),
        throughput(0.25, 400),
    ]
    results["exit_drain"] = [exit_drain(n) for n in (100, 500, 2000)]
    results["record_busy"] = record_busy()
    results["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


def split_rows(busy: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The busy caller's CPU per call, per thread (Linux only)."""
    http, bare = busy.get("http_split"), busy.get("bare_split")
    if not http or not bare:
        return []
    memory = busy.get("memory_split") or {"app": float("nan")}
    background = http["intake"] + http["senders"]
    return [
        (
            "busy caller, CPU per call by thread, HTTP exporter: app / intake / senders",
            f"{http['app']:.0f} / {http['intake']:.1f} / {http['senders']:.1f} us "
            f"(app thread bare {bare['app']:.0f}, memory exporter {memory['app']:.0f})",
            "",
        ),
        ("busy caller, background CPU per delivered event (intake + senders)", f"{background:.1f} us", ""),
    ]


def waiting_rows(waiting: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The caller that waits on OpenAI (as applications do): what the HTTP exporter adds there."""
    return [
        (
            f"added wall per OpenAI call, caller waiting {w['wait_ms']:.0f} ms per call: "
            "memory / HTTP exporter",
            f"{w['memory_added_us']:+.1f} / {w['http_added_us']:+.1f} us (bare {w['bare']:.0f} us/call; "
            f"the caller thread's own CPU, HTTP over memory: {w['app_cpu_http_over_memory_us']:+.1f} us)",
            "",
        )
        for w in waiting
    ]


def markdown(r: dict[str, Any]) -> str:
    s, idle, busy = r["stages"], r["cpu_idle"], r["busy"]
    rows = [
        (
            "process CPU per delivered event, caller idle (RTT 0)",
            f"{idle['cpu_us_per_event']:.0f} us",
            "<= 150 us",
        ),
        (
            "added wall per OpenAI call, HTTP exporter (1 s blocks incl. flush)",
            f"{busy['http_added_us']:+.1f} us ({busy['bare']:.0f} -> {busy['http']:.0f} us/call; "
            f"load average {busy['load_average']:.1f} on {os.cpu_count()} cores)",
            "<= 50 us",
        ),
        ("added wall per OpenAI call, memory exporter (same run)", f"{busy['memory_added_us']:+.1f} us", ""),
        (
            "added wall per OpenAI call, the pipeline with a transport that sends nothing (same run)",
            f"{busy['null_added_us']:+.1f} us",
            "",
        ),
        (
            "added wall per OpenAI call, control: a thread of nobody's, waking 5/s for ~10 us (same run)",
            f"{busy['control_added_us']:+.1f} us (it ran {busy['control_wakes']:.0f} of "
            f"{busy['control_wakes_due']:.0f} times within the block)",
            "",
        ),
        *split_rows(busy),
        (
            "added process CPU per OpenAI call (includes delivery): memory / HTTP exporter",
            f"{busy['memory_added_cpu_us']:+.0f} / {busy['http_added_cpu_us']:+.0f} us "
            f"(bare {busy['bare_cpu']:.0f} us/call)",
            "",
        ),
    ]
    rows += waiting_rows(r.get("waiting", []))
    for t in r["throughput"]:
        target = {50: ">= 300/s", 100: ">= 150/s"}.get(round(t["rtt_ms"]), "")
        rows.append(
            (
                f"events/s delivered at RTT {t['rtt_ms']:.0f} ms (16 in flight)",
                f"{t['events_per_s']:.0f}",
                target,
            )
        )
    for d in r["exit_drain"]:
        target = "<= 2 s" if d["events"] == 500 else ""
        rows.append((f"exit drain of {d['events']} events at 50 ms", f"{d['seconds']:.2f} s", target))
    rb = r["record_busy"]
    rows.append(
        ("`record()` while the senders are busy", f"p50 {rb['p50_us']:.2f} us, p99 {rb['p99_us']:.2f} us", "")
    )
    rows.append(("peak RSS of the benchmark process", f"{r['max_rss_mib']:.0f} MiB", ""))
    lines = [
        "## Delivery v2 (benchmarks/delivery.py)",
        "",
        f"{env_line(r['env'])}. The fake CmdrData runs in its own process with a fixed latency per answer.",
        "",
        "| measurement | result | target |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        "Where the CPU of one delivered event goes (each stage alone, process CPU per event):",
        "",
        "| stage | us |",
        "|---|---|",
        f"| `event.to_json()` | {s['serialize_us']:.1f} |",
        f"| write-ahead append (batches of 100) | {s['write_ahead_us']:.1f} |",
        f"| ack log line | {s['ack_us']:.1f} |",
        f"| POST, `HttpTransport` (head built once, `http1.py` reads the answer) "
        f"| {s['post_http_client_us']:.1f} |",
        f"| the same POSTs pipelined, bursts of 32 (`HttpTransport.send_many`) "
        f"| {s['post_pipelined_us']:.1f} |",
        f"| the same POST, head built once, `http.client` parses the answer "
        f"| {s['post_http_client_parser_us']:.1f} |",
        f"| the same POST with `http.client` `request()` | {s['post_request_us']:.1f} |",
        f"| the same POST through `httpx.Client` (the first release) | {s['post_httpx_us']:.1f} |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--docs", action="store_true", help="write the docs/performance.md section")
    parser.add_argument("--quick", action="store_true", help="fewer events and blocks")
    parser.add_argument(
        "--busy", action="store_true", help="only the stages, the idle CPU and the busy caller (as JSON)"
    )
    args = parser.parse_args()
    results = run(args.quick, busy_only=args.busy)
    if args.json or args.busy:
        print(json.dumps(results, indent=2, default=str))
    else:
        print(markdown(results))
    if args.docs:
        write_docs_section("exporter-delivery", markdown(results))


if __name__ == "__main__":
    main()
