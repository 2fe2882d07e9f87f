"""Shared helpers for the benchmarks: canned OpenAI responses, an in-memory transport, machine facts and
the writer of `docs/performance.md`.

The canned responses are built once, as bytes, so serving them costs the same few microseconds on every
call whether or not our instrumentation is installed; nothing but the code under test differs between the
A and B blocks of a benchmark.

`docs/performance.md` is assembled from marked sections (``<!-- BEGIN name -->`` ... ``<!-- END name -->``):
each benchmark run with ``--write-docs`` replaces only its own section (one per benchmark and openai
version), so the 1.x / 2.x / 3.x runs, made from different virtualenvs, all land in the same document.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import re
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "performance.md"

# The one copy of the canned OpenAI bodies (standard library only), shared with the tests and test apps.
sys.path.insert(0, str(ROOT / "tests" / "apps"))
import canned  # noqa: E402

CHAT_USAGE = canned.CHAT_USAGE

CHAT_MODEL = "gpt-4o-mini-2024-07-18"
MESSAGES = [{"role": "user", "content": "Say hello"}]
STREAM_CHUNKS = 50  # content chunks; the stream also carries one usage-only chunk at the end


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = re.match(r"\d+", piece)
        parts.append(int(digits.group()) if digits else 0)
    return tuple(parts)


def httpx_module() -> Any:
    """`httpx2` for openai >= 3 (its HTTP stack), `httpx` for 1.x / 2.x."""
    import openai

    if version_tuple(openai.__version__) >= (3, 0, 0):
        import httpx2

        return httpx2
    import httpx

    return httpx


# --- canned responses --------------------------------------------------------------------------------


def chat_completion_body() -> bytes:
    body = canned.chat_completion(model=CHAT_MODEL, content="Hello! How can I help?")
    return json.dumps({**body, "system_fingerprint": "fp_bench"}).encode()


def chat_stream_body(n: int = STREAM_CHUNKS) -> bytes:
    """An SSE body: `n` content chunks (the first carries the role), a usage-only chunk, `[DONE]`."""
    base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000000, "model": CHAT_MODEL}
    events = []
    for i in range(n):
        delta: dict[str, Any] = {"content": f"word{i} "}
        if i == 0:
            delta["role"] = "assistant"
        finish = "stop" if i == n - 1 else None
        events.append(
            {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": None}
        )
    events.append({**base, "choices": [], "usage": CHAT_USAGE})
    out = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return out + b"data: [DONE]\n\n"


def embeddings_body(base64_encoded: bool) -> bytes:
    vector = [0.01 * i for i in range(256)]
    embedding: Any = (
        base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if base64_encoded else vector
    )
    return json.dumps(canned.embeddings_response(embedding)).encode()


def response_body() -> bytes:
    return json.dumps(canned.response_object()).encode()


class CannedOpenAI:
    """The request handler of an in-memory `MockTransport`: canned bytes by path, no JSON parsing."""

    def __init__(self) -> None:
        self.httpx = httpx_module()
        self.chat = chat_completion_body()
        self.stream = chat_stream_body()
        self.embeddings_b64 = embeddings_body(True)
        self.embeddings_float = embeddings_body(False)
        self.responses = response_body()
        self.json_headers = {"content-type": "application/json", "x-request-id": "req_bench"}
        self.sse_headers = {"content-type": "text/event-stream", "x-request-id": "req_bench"}

    def handler(self, request: Any) -> Any:
        path = request.url.path
        content = request.content
        response = self.httpx.Response
        if path.endswith("/chat/completions"):
            if b'"stream":true' in content.replace(b" ", b""):
                return response(200, headers=self.sse_headers, content=self.stream)
            return response(200, headers=self.json_headers, content=self.chat)
        if path.endswith("/embeddings"):
            body = self.embeddings_b64 if b"base64" in content else self.embeddings_float
            return response(200, headers=self.json_headers, content=body)
        if path.endswith("/responses"):
            return response(200, headers=self.json_headers, content=self.responses)
        return response(404, json={"error": {"message": f"no canned response for {path}"}})

    def client(self, *, asynchronous: bool = False) -> Any:
        """A real `openai` client whose HTTP goes to this handler, in memory."""
        import openai

        hx = self.httpx
        transport = hx.MockTransport(self.handler)
        if asynchronous:
            return openai.AsyncOpenAI(
                api_key="sk-bench", max_retries=0, http_client=hx.AsyncClient(transport=transport)
            )
        return openai.OpenAI(api_key="sk-bench", max_retries=0, http_client=hx.Client(transport=transport))


# --- statistics ----------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return float("nan")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --- environment facts -------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def environment() -> dict[str, Any]:
    """Machine, date and versions, for the JSON output and the document header."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "openai": package_version("openai"),
        "wrapt": package_version("wrapt"),
        "httpx": package_version("httpx"),
        "httpx2": package_version("httpx2"),
        "cmdrdata_autopatch": package_version("cmdrdata-autopatch"),
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None
    except Exception:
        return None


# --- markdown ------------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


DOC_HEADER = """# Performance

Written by the benchmarks (`--write-docs`); do not edit by hand. Each section below is replaced by the run
that produced it, so sections may come from different runs (their own date and versions are given).
How to reproduce: see `benchmarks/README.md`.

Targets (issue 6): added cost per non-streaming call <= 10 us end to end and <= 2x the floor wrapper in
isolation; per 50-chunk stream <= 20 us; `import cmdrdata_autopatch` + `patch()` <= 10 ms on top of
`import openai`, importing no OpenAI resource module the application does not use; the `.pth` line with
`CMDRDATA_AUTOPATCH` unset <= 1 ms of interpreter start; exporter `record()` p99 <= 50 us (healthy or
hanging backend), memory flat once the queue bound is reached.
"""

# The order sections appear in, by name prefix; unknown names go last, alphabetically.
SECTION_ORDER = ["summary", "overhead-3", "overhead-2", "overhead-1", "startup", "exporter", "profile"]


def write_docs_section(name: str, markdown: str, path: Path = DOCS) -> None:
    """Replace (or add) the section `name` of docs/performance.md, keeping every other section."""
    text = path.read_text() if path.exists() else ""
    sections = dict(re.findall(r"<!-- BEGIN (\S+) -->\n(.*?)<!-- END \1 -->\n", text, flags=re.S))
    sections[name] = markdown.rstrip() + "\n"

    def rank(key: str) -> tuple[int, str]:
        for i, prefix in enumerate(SECTION_ORDER):
            if key.startswith(prefix):
                return (i, key)
        return (len(SECTION_ORDER), key)

    parts = [DOC_HEADER]
    for key in sorted(sections, key=rank):
        parts.append(f"<!-- BEGIN {key} -->\n{sections[key]}<!-- END {key} -->\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))


def env_line(env: dict[str, Any]) -> str:
    transport = (
        f"httpx2 {env['httpx2']}"
        if env.get("httpx2") and version_tuple(env["openai"] or "0") >= (3,)
        else f"httpx {env.get('httpx')}"
    )
    return (
        f"{env['date']}; {env['cpu']}, {env['cores']} cores; {env['platform']}; Python {env['python']}; "
        f"openai {env['openai']} ({transport}); wrapt {env['wrapt']}; commit {env['git_commit']}"
    )


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)
